#!/usr/bin/env bash
# Run here (Debian 12) before a GPU session: downloads Debian's fmt, yaml-cpp, CLI11, doctest,
# nlohmann-json, libjpeg-turbo and libpng packages and unpacks them into .devdeps/root, which
# travels to the GPU machine (whose image has none of them). benchmarks/gpu/session.sh uses it.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.devdeps/" .git/info/exclude 2>/dev/null || echo "/.devdeps/" >>.git/info/exclude
rm -rf .devdeps && mkdir -p .devdeps/debs
(cd .devdeps/debs && apt-get download libfmt-dev libfmt9 nlohmann-json3-dev libcli11-dev doctest-dev \
  libyaml-cpp-dev libyaml-cpp0.7 libturbojpeg0-dev libturbojpeg0 libjpeg62-turbo \
  libjpeg62-turbo-dev libpng-dev libpng16-16 zlib1g-dev)
for deb in .devdeps/debs/*.deb; do dpkg -x "$deb" .devdeps/root; done
rm -rf .devdeps/debs .devdeps/root/usr/share/doc .devdeps/root/usr/share/man
# Debian's libz.so points at /lib/.../libz.so.1.2.13; any system's libz.so.1 will do.
ln -sf /lib/x86_64-linux-gnu/libz.so.1 .devdeps/root/usr/lib/x86_64-linux-gnu/libz.so
du -sh .devdeps
