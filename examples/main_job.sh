#!/usr/bin/env bash
# The README's main job: build reidnet and run its example on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${REIDNET_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target reidnet-model-summary
"$build"/examples/reidnet-model-summary
