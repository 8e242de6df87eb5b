#!/usr/bin/env bash
# docs/families.md's per-family speed table: test-time embedding of a batch, reidnet's
# optimize_for_inference (reidnet-bench --model) next to eager PyTorch (benchmarks/families.py)
# on the same machine, interleaved; best of ROUNDS runs each, as img/s and reidnet / Python.
#
#   benchmarks/families.sh [build-dir]
#   MODELS="ft_net pcb" DTYPES=fp32 BATCH=16 benchmarks/families.sh build
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/benchmarks/common/input_size.sh"
build=${1:-$root/build}
bench=$build/benchmarks/reidnet-bench
python=${PYTHON:-/usr/bin/python3}
models=${MODELS:-"ft_net ft_net_dense ft_net_ibn ft_net_usam pcb bnneck"}
dtypes=${DTYPES:-"fp32 bf16"}
batch=${BATCH:-16}
rounds=${ROUNDS:-2}
iters=${ITERS:-4}
threads=${THREADS:-2}
[[ -x $bench ]] || { echo "families.sh: $bench not found; build with -DREIDNET_BUILD_BENCHMARKS=ON" >&2; exit 1; }

echo "| family | dtype | reidnet img/s | reidnet path | Python eager img/s | ratio |"
echo "|---|---|---:|---|---:|---:|"
for model in $models; do
  input_size "$model"
  for dtype in $dtypes; do
    best_r=0 best_p=0 path=""
    for ((round = 0; round < rounds; round++)); do
      out=$("$bench" --model "$model" --mode embed --dtype "$dtype" --batch-size "$batch" \
            --iters "$iters" --threads "$threads" "${size[@]}")
      r=$(awk '/^throughput/ {print $2}' <<<"$out")
      path=$(awk -F'path +' '/^  path/ {print $2}' <<<"$out" | awk '{print $2, $5}')
      p=$("$python" "$root/benchmarks/families.py" --model "$model" --dtype "$dtype" \
            --batch-size "$batch" --iters "$iters" --rounds 1 --threads "$threads" "${size[@]}" |
          awk '/^result/ {if ($3 > best) best = $3} END {print best}')
      best_r=$(awk -v a="$best_r" -v b="$r" 'BEGIN {print (b > a ? b : a)}')
      best_p=$(awk -v a="$best_p" -v b="$p" 'BEGIN {print (b > a ? b : a)}')
    done
    ratio=$(awk -v r="$best_r" -v p="$best_p" 'BEGIN {printf "%.2f", r / p}')
    echo "| $model | $dtype | $best_r | $path | $best_p | ${ratio}x |"
  done
done
