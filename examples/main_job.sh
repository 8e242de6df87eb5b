#!/usr/bin/env bash
# The README's main job: make the synthetic toy data set, measure the untrained model, train it
# from scratch with the scratch preset (no ImageNet weights are needed), and measure again.
#   REIDNET_BUILD_DIR  build folder (default: build)
#   REIDNET_OUT        output folder (default: out)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${REIDNET_BUILD_DIR:-build}
out=${REIDNET_OUT:-out}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target reidnet-toy-data reidnet-train reidnet-test \
  reidnet-embed reidnet-link-accuracy
bin="$build/examples"

rm -rf "$out/toy" "$out/untrained" "$out/toy_run" "$out/toy_sequence"
"$bin/reidnet-toy-data" --out "$out/toy" --seed 0
# A short MOTChallenge sequence of the same street people: how well each model's embeddings
# alone link a frame's detections to those of the frame before (and of 10 frames before).
"$bin/reidnet-toy-data" --style sequence --out "$out/toy_sequence" --seed 0
links() {  # links MODEL_DIR NAME
  "$bin/reidnet-embed" --model-dir "$1" --mot "$out/toy_sequence" --out "$out/$2_sequence.npy" > /dev/null
  "$bin/reidnet-link-accuracy" --mot "$out/toy_sequence" --features "$out/$2_sequence.npy" | head -1 > "$out/$2_links.txt"
  "$bin/reidnet-link-accuracy" --mot "$out/toy_sequence" --features "$out/$2_sequence.npy" --gap 10 | head -1 > "$out/$2_links_gap10.txt"
}
"$bin/reidnet-train" --data "$out/toy" --out "$out/untrained" --preset scratch --total-epoch 0
"$bin/reidnet-test" --data "$out/toy" --model-dir "$out/untrained" | tee "$out/untrained.txt"
links "$out/untrained" untrained
start=$(date +%s)
"$bin/reidnet-train" --data "$out/toy" --out "$out/toy_run" --preset scratch --total-epoch 20
seconds=$(($(date +%s) - start))
"$bin/reidnet-test" --data "$out/toy" --model-dir "$out/toy_run" \
  --show 0 --show-out "$out/toy_run/show_0.png" | tee "$out/trained.txt"
links "$out/toy_run" trained
# The same features searched through a FAISS IVF-PQ index of the gallery (top-k lists).
# (FAISS warns that so small a gallery trains its codebooks on few points.)
"$bin/reidnet-test" --from-mat "$out/toy_run/pytorch_result.mat" --index ivfpq 2>&1 \
  | grep -v "^WARNING clustering" | tee "$out/trained_ivfpq.txt"

map() { sed -n 's/.*mAP:\([0-9.]*\).*/\1/p' "$1"; }
echo
echo "untrained: $(grep Rank@1 "$out/untrained.txt")"
echo "trained:   $(grep Rank@1 "$out/trained.txt")"
echo "  (IVF-PQ) $(grep Rank@1 "$out/trained_ivfpq.txt")"
echo "training took ${seconds} s; mAP $(map "$out/untrained.txt") -> $(map "$out/trained.txt")" \
     "($(awk -v a="$(map "$out/untrained.txt")" -v b="$(map "$out/trained.txt")" 'BEGIN { printf "%.1f", b / a }')x)"
echo "links:     untrained $(cat "$out/untrained_links.txt"), 10 frames apart $(cat "$out/untrained_links_gap10.txt")"
echo "           trained   $(cat "$out/trained_links.txt"), 10 frames apart $(cat "$out/trained_links_gap10.txt")"
echo "outputs:   $out/toy_run (net_last.pth, opts.yaml, train.log, train.jpg, show_0.png)"
