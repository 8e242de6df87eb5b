#!/usr/bin/env bash
# Runs reidnet-bench and benchmarks/reference_python.py side by side, interleaved (the order
# alternates every round), and prints reidnet / best Python path for each case. Each number is
# the best of ROUNDS short runs, which is what survives a shared, noisy machine best.
#
#   benchmarks/compare_speed.sh [build-dir]
#   ROUNDS=3 CASES="embed_fp32_b16 train_bf16_b16" ABLATION=1 benchmarks/compare_speed.sh build
#
# Environment: ROUNDS (2), THREADS (2), EMBED_ITERS (4), EMBED_B1_ITERS (16), TRAIN_ITERS (2),
# CASES (all five), ABLATION (1: also time reidnet embed fp32 batch 16 with each optimisation
# off), PYTHON, DEVICE (cpu or cuda; CUDA cases are named like the CPU ones, e.g.
# "embed_fp16_b128 train_fp16_b32"), PYTHON_EXTRA_PATHS (embed: also time these Python paths,
# e.g. compile_cl), PYTHON_REUSE_MEMORY (1: also run the Python side with glibc tuned as
# reidnet::reuse_freed_host_memory tunes it, paths suffixed "+reuse"; reported in their own
# columns, not as "best Python").
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
bench=$build/benchmarks/reidnet-bench
python=${PYTHON:-/usr/bin/python3}
reference=$root/benchmarks/reference_python.py
rounds=${ROUNDS:-2}
threads=${THREADS:-2}
embed_iters=${EMBED_ITERS:-4}
embed_b1_iters=${EMBED_B1_ITERS:-16}
train_iters=${TRAIN_ITERS:-2}
cases=${CASES:-"embed_fp32_b16 embed_bf16_b16 embed_fp32_b1 train_fp32_b16 train_bf16_b16"}
ablation=${ABLATION:-0}
device=${DEVICE:-cpu}
python_extra_paths=${PYTHON_EXTRA_PATHS:-}
python_reuse_memory=${PYTHON_REUSE_MEMORY:-1}
# What reidnet::reuse_freed_host_memory() sets with mallopt, as glibc tunables for Python.
reuse_tunables="glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647:glibc.malloc.top_pad=268435456"

if [[ ! -x $bench ]]; then
  echo "compare_speed.sh: $bench not found; build with -DREIDNET_BUILD_BENCHMARKS=ON" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# reidnet <case> <variant> <args...>: one reidnet-bench run, recorded as "R case variant img/s".
reidnet() {
  local case=$1 variant=$2
  shift 2
  "$bench" --threads "$threads" --device "$device" "$@" |
    awk -v c="$case" -v v="$variant" '/ms\/batch p50/ {p50 = $3} /^throughput/ {print "R", c, v, $2, p50}' >>"$log"
}

# python <case> <args...>: one reference run, every path, recorded as "P case path img/s".
python_side() {
  local case=$1 mode=$2
  shift 2
  local extra=()
  [[ $mode == embed && -n $python_extra_paths ]] && extra=(--extra-paths "$python_extra_paths")
  # reference <path suffix> <args...>: one run, every path, recorded as "P case path img/s".
  reference() {
    local suffix=$1
    shift
    "$python" "$reference" --threads "$threads" --device "$device" "${extra[@]}" "$@" |
      awk -v c="$case" -v s="$suffix" '/^result/ {print "P", c, $2 s, $3, $4}' >>"$log"
  }
  reference "" "$@"
  if [[ $python_reuse_memory == 1 && $device == cpu ]]; then
    GLIBC_TUNABLES=$reuse_tunables reference "+reuse" "$@"
  fi
}

run_case() {
  local case=$1 round=$2
  local mode dtype batch iters warmup
  IFS=_ read -r mode dtype batch <<<"$case"
  batch=${batch#b}
  if [[ $mode == train ]]; then iters=$train_iters; warmup=1;
  elif [[ $batch == 1 ]]; then iters=$embed_b1_iters; warmup=3;
  else iters=$embed_iters; warmup=2; fi
  local common=(--mode "$mode" --dtype "$dtype" --batch-size "$batch" --iters "$iters" --warmup "$warmup")
  local reidnet_runs=()
  if [[ $case == embed_fp32_b16 || $case == train_fp32_b16 ]]; then
    reidnet_runs+=("no-reuse|--no-reuse-memory")
  fi
  if [[ $mode == embed ]]; then
    reidnet_runs+=("default|")
    # Where the build calls oneDNN directly: what LibTorch's own oneDNN ops would give.
    [[ $device == cpu ]] && reidnet_runs+=("libtorch-ops|--no-direct-onednn")
    if [[ $ablation == 1 && $case == embed_fp32_b16 ]]; then
      reidnet_runs+=("no-prepack|--no-prepack" "no-prepack-no-fold|--no-prepack --no-fold-bn"
                     "no-fuse|--no-fuse" "dense-NCHW|--no-prepack --no-channels-last")
    fi
  else
    reidnet_runs+=("channels_last|" "NCHW|--no-channels-last")
  fi
  run_reidnet_side() {
    local entry
    for entry in "${reidnet_runs[@]}"; do
      # shellcheck disable=SC2086
      reidnet "$case" "${entry%%|*}" "${common[@]}" ${entry#*|}
    done
  }
  if ((round % 2 == 1)); then
    run_reidnet_side
    python_side "$case" "$mode" "${common[@]}"
  else
    python_side "$case" "$mode" "${common[@]}"
    run_reidnet_side
  fi
}

echo "reidnet vs Python on $device, $rounds interleaved rounds, $threads threads, $(nproc) cores," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
for ((round = 1; round <= rounds; round++)); do
  for case in $cases; do
    run_case "$case" "$round"
    echo "  round $round: $case done" >&2
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# Table: best of the rounds per side; spread = (best - worst) / best over the rounds. "p50
# ratio" compares the fastest median batch time of each side instead of the throughput, which
# a few stalled batches on a shared machine drag down on either side.
awk -v conv_fp32=220 -v conv_bf16=430 -v device="$device" '
  { key = $1 " " $2 " " $3; v = $4 + 0
    if (!(key in best) || v > best[key]) best[key] = v
    if (!(key in worst) || v < worst[key]) worst[key] = v
    if ($5 > 0 && (!(key in p50) || $5 < p50[key])) p50[key] = $5
    if ($1 == "R") { rvars[$2] = rvars[$2] " " $3 } else { pvars[$2] = pvars[$2] " " $3 }
    if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
  function spread(k) { return best[k] > 0 ? 100 * (best[k] - worst[k]) / best[k] : 0 }
  END {
    printf "\n%-15s %-14s %8s %6s | %-12s %8s %6s | %-12s %8s | %7s %7s %7s %9s | %-18s %8s %7s\n",
      "case", "reidnet", "img/s", "spread", "best Python", "img/s", "spread", "Py eager", "img/s",
      "ratio", "xeager", "%conv", "p50 ratio", "best Py +reuse", "img/s", "ratio"
    for (i = 1; i <= n; i++) {
      c = order[i]; split(pvars[c], pv, " "); split(rvars[c], rv, " ")
      bp = ""; bpv = 0; ep = ""; epv = 0; tp = ""; tpv = 0; pp50 = 0
      for (j in pv) { k = "P " c " " pv[j]
        if (pv[j] ~ /[+]reuse$/) { if (best[k] > tpv) { tpv = best[k]; tp = pv[j] }; continue }
        if (k in p50 && (pp50 == 0 || p50[k] < pp50)) pp50 = p50[k]
        if (best[k] > bpv) { bpv = best[k]; bp = pv[j] }
        if (pv[j] !~ /^ts/ && best[k] > epv) { epv = best[k]; ep = pv[j] } }
      br = ""; brv = 0
      for (j in rv) { k = "R " c " " rv[j]; if (rv[j] == "default" || rv[j] == "channels_last") { br = rv[j]; brv = best[k] } }
      if (br == "") continue
      conv = ""
      if (c ~ /^embed/ && device == "cpu") conv = sprintf("%6.0f%%", 100 * brv * 5.3 / (c ~ /bf16/ ? conv_bf16 : conv_fp32))
      tuned = tpv > 0 ? sprintf("%-18s %8.2f %6.2fx", tp, tpv, brv / tpv) : ""
      rk = "R " c " " br
      median = (rk in p50 && pp50 > 0) ? sprintf("%8.2fx", pp50 / p50[rk]) : ""
      printf "%-15s %-14s %8.2f %5.0f%% | %-12s %8.2f %5.0f%% | %-12s %8.2f | %6.2fx %6.2fx %7s %9s | %s\n",
        c, br, brv, spread(rk), bp, bpv, spread("P " c " " bp), ep, epv,
        brv / bpv, brv / epv, conv, median, tuned
    }
    printf "\nevery run (best img/s over the rounds, spread, fastest p50 ms):\n"
    for (k in best) printf "  %-40s %8.2f %5.0f%% %8.1f\n", k, best[k], spread(k), p50[k]
  }' "$log"
