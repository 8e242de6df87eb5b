#!/usr/bin/env bash
# Loader benchmark: writes a toy data set with reidnet-toy-data, then times reidnet's loader and
# the Python baseline's torchvision DataLoader on it, interleaved (2 workers each).
#   benchmarks/loader.sh [build-dir] [extra reidnet-loader flags...]
set -euo pipefail
build=${1:-build}
shift || true
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
"$build"/examples/reidnet-toy-data --out "$data/toy" --ids 100 --images-per-id 8 --seed 1
"$build"/benchmarks/reidnet-loader --data "$data/toy" --workers 2 "$@"
