#!/usr/bin/env bash
# reidnet-embed's throughput (crops/s) on a MOTChallenge sequence next to a tracker's Python
# loop (a PIL crop per box, cv2.resize, one batch per frame; benchmarks/embed_reference.py), the
# same torchreid osnet_x0_25 weights on both sides, in the same run, two rounds interleaved.
#   benchmarks/embed.sh SEQ [build-dir] [threads]
# SEQ is any sequence folder (img1/, det/det.txt), e.g. one `reidnet-toy-data --style sequence` drew.
set -euo pipefail
sequence=${1:?usage: benchmarks/embed.sh SEQ [build-dir] [threads]}
build=${2:-build}
threads=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" "$here/embed_reference.py" --write-weights "$work/osnet.pth"
best_reidnet=0 best_python=0
for round in 1 2; do
  "$build"/examples/reidnet-embed --model osnet_x0_25 --weights "$work/osnet.pth" --mot "$sequence" \
    --out "$work/features.npy" --threads "$threads" > "$work/reidnet.log"
  # The last progress line: "<name> frames N/N <crops> crops <rate> crops/s ...".
  reidnet=$(grep -o '[0-9.]* crops/s' "$work/reidnet.log" | tail -1 | cut -d' ' -f1)
  python_line=$("$python" "$here/embed_reference.py" --weights "$work/osnet.pth" --mot "$sequence" \
    --threads "$threads" --compare "$work/features.npy")
  python_rate=$(echo "$python_line" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["crops_per_second"])')
  echo "round $round: reidnet-embed $reidnet crops/s; Python loop $python_rate crops/s; $python_line"
  best_reidnet=$("$python" -c "print(max($best_reidnet, $reidnet))")
  best_python=$("$python" -c "print(max($best_python, $python_rate))")
done
"$python" -c "print(f'best of 2: reidnet-embed {$best_reidnet:.1f} crops/s, Python {$best_python:.1f} crops/s: {$best_reidnet / $best_python:.2f}x ($threads threads)')"
