#!/usr/bin/env bash
# Does training on two processes reach one process's quality? The main job's recipe (toy data
# of seed 0, --preset scratch, 20 epochs) on one process at batch 16 with 2 threads, then on
# two processes (reidnet-train --nproc-per-node 2) at batch 8 each with 1 thread each, with
# and without --sync-bn; reidnet-test measures each. About 20 minutes on 2 cores.
#   benchmarks/distributed_quality.sh [build-dir] [out-dir] [extra reidnet-train flags]
set -euo pipefail
build=${1:-build}
out=${2:-out/distributed_quality}
shift 2 || shift $# || true
bin="$build/examples"
mkdir -p "$out"
[ -d "$out/toy" ] || "$bin/reidnet-toy-data" --out "$out/toy" --seed 0 > /dev/null
run() {  # name, then reidnet-train flags
  local name=$1 start seconds
  shift
  rm -rf "${out:?}/$name"
  start=$(date +%s)
  "$bin/reidnet-train" --data "$out/toy" --out "$out/$name" --preset scratch --total-epoch 20 "$@" \
    > "$out/$name.train.txt" 2>&1 || { cat "$out/$name.train.txt"; exit 1; }
  seconds=$(($(date +%s) - start))
  "$bin/reidnet-test" --data "$out/toy" --model-dir "$out/$name" --threads 2 > "$out/$name.test.txt"
  printf '%-44s %5d s  %s\n' "$name $*" "$seconds" "$(grep Rank@1 "$out/$name.test.txt")"
}
echo "recipe: --preset scratch --total-epoch 20 on toy data of seed 0 $*"
run one_process --batch-size 16 --threads 2 "$@"
run two_processes_sync_bn --nproc-per-node 2 --batch-size 8 --threads 1 --sync-bn "$@"
run two_processes --nproc-per-node 2 --batch-size 8 --threads 1 "$@"
