#!/usr/bin/env bash
# Gallery search at ReID scale (512-d synthetic clustered features, 10k queries, top 10): at each
# gallery size, reidnet-gallery-search (exact LibTorch search, then reidnet's flat, IVF-Flat,
# IVF-SQ, IVF-PQ and HNSW indexes) and then benchmarks/gallery_search_reference.py (Python's
# FAISS with the same factory strings and search parameters) on the same features; then a table
# per size and whether an index reaches recall@10 >= 0.95 at >= 20x brute force's queries/s
# with <= 1/4 of the flat index's size.
#   benchmarks/gallery_search.sh [build-dir] [--sizes 100000,1000000] [--threads 2]
#       [more reidnet-gallery-search flags: --queries N --seed S --hnsw-max N --nlist N
#        --methods ivfflat,ivfsq6 ...]
set -euo pipefail
build=build
if (($#)) && [[ $1 != --* ]]; then build=$1; shift; fi
here=$(cd "$(dirname "$0")" && pwd)
python=${REIDNET_PYTHON:-/usr/bin/python3}
sizes=100000,1000000 threads=2 flags=()
while (($#)); do
  case $1 in
    --sizes | --gallery) sizes=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) flags+=("$1"); shift ;;
  esac
done
# Idle OpenMP threads would otherwise spin; OpenBLAS (FAISS's and LibTorch's matmul) keeps its
# own pool, which neither torch::set_num_threads nor faiss.omp_set_num_threads sizes.
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT  # the features are 2 GB at 1M

table() {  # the rows of one size: a markdown table, then the goal's verdict
  awk -v size="$1" '
    /^row / {
      n++
      for (i = 2; i <= NF; i++) { j = index($i, "="); v[n, substr($i, 1, j - 1)] = substr($i, j + 1) }
    }
    # The flat index of the same implementation, or the float32 gallery where --methods left
    # flat out.
    function flat_mb(impl) { return (impl in flat) ? flat[impl] : ("reidnet" in flat) ? flat["reidnet"] : float_mb }
    function label(i) {
      return v[i, "impl"] " " v[i, "method"] (((i, "nprobe") in v) ? " nprobe " v[i, "nprobe"] : "") \
             (((i, "ef_search") in v) ? " efSearch " v[i, "ef_search"] : "")
    }
    END {
      for (i = 1; i <= n; i++) {
        if (v[i, "method"] == "brute") { brute = v[i, "qps"]; float_mb = v[i, "index_mb"] }
        if (v[i, "method"] == "flat") flat[v[i, "impl"]] = v[i, "index_mb"]
      }
      printf "\n### Gallery of %d pictures\n\n", size
      print "| method | implementation | parameters | build (s) | search (s) | queries/s | x brute force | recall@10 | index MB | x flat |"
      print "|---|---|---|--:|--:|--:|--:|--:|--:|--:|"
      met = ""; best_small_fast = best_small_exact = best_fast_exact = ""
      for (i = 1; i <= n; i++) {
        impl = v[i, "impl"]; method = v[i, "method"]
        params = method == "brute" ? "exact: matmul + top-k" : v[i, "factory"]
        if ((i, "nprobe") in v) params = params ", nprobe " v[i, "nprobe"]
        if ((i, "ef_search") in v) params = params ", efSearch " v[i, "ef_search"]
        if (v[i, "skipped"] == 1) {
          printf "| %s | %s | %s | skipped (gallery above --hnsw-max %s) | | | | | | |\n", method, impl, params, v[i, "hnsw_max"]
          continue
        }
        # An index searched with several parameters was built once.
        build = method == "brute" ? "-" : ((impl, method) in built) ? "(same)" : sprintf("%.1f", v[i, "build_s"])
        built[impl, method] = 1
        speed = v[i, "qps"] / brute
        share = v[i, "index_mb"] / flat_mb(impl)
        printf "| %s | %s | %s | %s | %.2f | %.0f | %.1fx | %.4f | %.1f | %.3f |\n", method, impl, params, build,
               v[i, "search_s"], v[i, "qps"], speed, v[i, "recall10"], v[i, "index_mb"], share
        if (method == "brute" || method == "flat") continue
        accurate = v[i, "recall10"] >= 0.95; fast = speed >= 20; small = share <= 0.25
        what = sprintf("%s (recall@10 %.4f, %.1fx brute force, %.3f of flat)", label(i), v[i, "recall10"], speed, share)
        if (accurate && fast && small) met = met (met == "" ? "" : "; ") what
        if (small && fast && (best_small_fast == "" || v[i, "recall10"] > v[best_small_fast, "recall10"])) best_small_fast = i
        if (small && accurate && (best_small_exact == "" || v[i, "qps"] > v[best_small_exact, "qps"])) best_small_exact = i
        if (fast && accurate && (best_fast_exact == "" || v[i, "index_mb"] < v[best_fast_exact, "index_mb"])) best_fast_exact = i
      }
      printf "\nGoal at %d pictures (recall@10 >= 0.95 at >= 20x brute force, index <= 1/4 of flat): ", size
      if (met != "") { print "met by " met; exit }
      printf "not met."
      if (best_small_fast != "") printf " Best recall@10 within the speed and size limits: %s, %.4f.", label(best_small_fast), v[best_small_fast, "recall10"]
      if (best_small_exact != "") printf " Fastest with recall@10 >= 0.95 within the size limit: %s, %.1fx.", label(best_small_exact), v[best_small_exact, "qps"] / brute
      if (best_fast_exact != "") printf " Smallest with recall@10 >= 0.95 at >= 20x: %s, %.3f of flat.", label(best_fast_exact), v[best_fast_exact, "index_mb"] / flat_mb(v[best_fast_exact, "impl"])
      print ""
    }' "$data/rows-$1"
}

for size in ${sizes//,/ }; do
  echo "=== gallery $size: reidnet-gallery-search, then Python's FAISS (progress on stderr)"
  start=$SECONDS
  "$build/benchmarks/reidnet-gallery-search" --gallery "$size" --threads "$threads" --out "$data/$size" \
    "${flags[@]}" | tee "$data/rows-$size"
  "$python" "$here/gallery_search_reference.py" --data "$data/$size" --threads "$threads" | tee -a "$data/rows-$size"
  rm -rf "${data:?}/$size"
  echo "=== gallery $size: $((SECONDS - start)) s"
done
for size in ${sizes//,/ }; do table "$size"; done
