#!/usr/bin/env bash
# Data-parallel training throughput: ft_net at 128x64, fp32, 16 pictures per process per step,
# reidnet (reidnet-distributed, GradientAverager on c10d/Gloo) beside PyTorch (DDP on Gloo),
# on one process with 2 threads and on two processes with 1 thread each (and reidnet's with
# SyncBatchNorm), interleaved, best of 2 rounds; then the ratios.
#   benchmarks/distributed.sh [build-dir] [extra flags for both, e.g. --steps 20]
set -euo pipefail
build=${1:-build}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
python=${REIDNET_PYTHON:-/usr/bin/python3}
reidnet=("$build/benchmarks/reidnet-distributed")
pytorch=("$python" "$here/distributed_reference.py")
free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
one() { OMP_NUM_THREADS=2 "$@" --threads 2; }
two() {  # rank 1 in the background, rank 0 in front (it prints)
  local port
  port=$(free_port)
  env WORLD_SIZE=2 RANK=1 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" OMP_NUM_THREADS=1 \
    "$@" --threads 1 > /dev/null &
  env WORLD_SIZE=2 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" OMP_NUM_THREADS=1 \
    "$@" --threads 1
  wait
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for round in 1 2; do
  echo "--- round $round"
  one "${reidnet[@]}" "$@" | tee -a "$log"
  one "${pytorch[@]}" "$@" | tee -a "$log"
  two "${reidnet[@]}" "$@" | tee -a "$log"
  two "${pytorch[@]}" "$@" | tee -a "$log"
  two "${reidnet[@]}" --sync-bn "$@" | tee -a "$log"
done
best() { grep "^$1 $2 processes" "$log" | sed 's/.*: \([0-9.]*\) img\/s.*/\1/' | sort -g | tail -1; }
r1=$(best reidnet 1) p1=$(best pytorch 1) r2=$(best reidnet 2) p2=$(best pytorch 2) s2=$(best reidnet-sync-bn 2)
echo "--- best of 2 rounds (img/s): reidnet 1 proc $r1, 2 procs $r2 ($s2 with --sync-bn);" \
     "PyTorch 1 proc $p1, 2 procs $p2"
awk -v r1="$r1" -v p1="$p1" -v r2="$r2" -v p2="$p2" -v s2="$s2" 'BEGIN {
  printf "reidnet / PyTorch: 1 process %.2fx, 2 processes (DDP) %.2fx\n", r1 / p1, r2 / p2
  printf "2 processes / 1 process: reidnet %.2fx, PyTorch %.2fx\n", r2 / r1, p2 / p1
  printf "SyncBatchNorm / plain BatchNorm on 2 processes: reidnet %.2fx\n", s2 / r2 }'
