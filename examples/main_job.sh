#!/usr/bin/env bash
# The README's main job, on the embedded default data set: make the synthetic toy data set,
# measure the untrained model, fine-tune FtNet on it, and measure again.
#   REIDNET_BUILD_DIR  build folder (default: build)
#   REIDNET_OUT        output folder (default: out)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${REIDNET_BUILD_DIR:-build}
out=${REIDNET_OUT:-out}
# Small inputs keep the from-scratch fine-tune to a few minutes on 2 CPU cores.
size=(--height 64 --width 32)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target reidnet-toy-data reidnet-train reidnet-test
bin="$build/examples"

rm -rf "$out/toy" "$out/untrained" "$out/toy_run"
"$bin/reidnet-toy-data" --out "$out/toy" --seed 0
"$bin/reidnet-train" --data "$out/toy" --out "$out/untrained" "${size[@]}" --total-epoch 0
"$bin/reidnet-test" --data "$out/toy" --model-dir "$out/untrained" | tee "$out/untrained.txt"
"$bin/reidnet-train" --data "$out/toy" --out "$out/toy_run" "${size[@]}" \
  --total-epoch 40 --batch-size 16 --lr 0.01 --warm-epoch 2
"$bin/reidnet-test" --data "$out/toy" --model-dir "$out/toy_run" \
  --show 0 --show-out "$out/toy_run/show_0.png" | tee "$out/trained.txt"

echo
echo "untrained: $(grep Rank@1 "$out/untrained.txt")"
echo "trained:   $(grep Rank@1 "$out/trained.txt")"
echo "outputs:   $out/toy_run (net_last.pth, opts.yaml, train.log, train.jpg, show_0.png)"
