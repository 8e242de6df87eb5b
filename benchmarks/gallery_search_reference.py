"""Python's FAISS side of benchmarks/gallery_search.sh: builds the indexes that
reidnet-gallery-search built (plan.txt in its --out folder: the same factory strings, training
sample, build and search parameters) on the same features, and prints the same
`row key=value ...` lines, with recall@10 against the exact top 10 that reidnet-gallery-search
wrote (truth.i64). Each index is built as a Python user would: train on the sample, then one
index.add of the whole gallery.

    python3 benchmarks/gallery_search_reference.py --data /tmp/gallery --threads 2
"""
import argparse
import os
import sys
import time

import faiss
import numpy as np

START = time.perf_counter()
# The names of the search parameters in plan.txt and in faiss.ParameterSpace.
SEARCH_PARAMETERS = {"nprobe": "nprobe", "ef_search": "efSearch"}


def progress(line):
    print(f"[{time.perf_counter() - START:8.1f} s] {line}", file=sys.stderr, flush=True)


def fields(line):
    return dict(token.split("=", 1) for token in line.split())


def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6  # kB
    raise RuntimeError("no VmRSS in /proc/self/status")


def recall(found, truth):
    """The fraction of each query's exact top k found in `found`, averaged over the queries."""
    return (truth[:, :, None] == found[:, None, :]).any(axis=2).mean()


def run(plan, data, gallery, train, queries, truth):
    d, k = gallery.shape[1], truth.shape[1]
    head = f"method={plan['method']} factory={plan['factory']}"
    if plan.get("skipped") == "1":
        print(f"row impl=faiss-python {head} skipped=1 hnsw_max={plan['hnsw_max']}", flush=True)
        return
    rss_before = rss_mb()
    index = faiss.index_factory(d, plan["factory"], faiss.METRIC_INNER_PRODUCT)
    below_norm = faiss.downcast_index(faiss.downcast_index(index).index)
    if "ef_construction" in plan:
        below_norm.hnsw.efConstruction = int(plan["ef_construction"])
    if "polysemous_training" in plan:
        below_norm.do_polysemous_training = plan["polysemous_training"] == "1"
    progress(f"faiss-python {plan['method']}: build start")
    start = time.perf_counter()
    if plan["train"] == "1":
        index.train(train)
    index.add(gallery)
    build = time.perf_counter() - start
    rss_growth = rss_mb() - rss_before
    progress(f"faiss-python {plan['method']}: built in {build:.1f} s")
    path = os.path.join(data, "index.faiss")
    faiss.write_index(index, path)
    index_mb = os.path.getsize(path) / 1e6
    os.remove(path)

    name = next((p for p in SEARCH_PARAMETERS if p in plan), None)
    space = faiss.ParameterSpace()
    for value in (plan[name].split(",") if name else [None]):
        parameter = ""
        if name:
            space.set_index_parameter(index, SEARCH_PARAMETERS[name], int(value))
            parameter = f" {name}={value}"
        progress(f"faiss-python {plan['method']}{parameter}: search start")
        start = time.perf_counter()
        _, found = index.search(queries, k)
        search = time.perf_counter() - start
        progress(f"faiss-python {plan['method']}{parameter}: search done in {search:.1f} s")
        print(f"row impl=faiss-python {head}{parameter} build_s={build:.3f} search_s={search:.3f} "
              f"qps={len(queries) / search:.1f} recall10={recall(found, truth):.4f} "
              f"index_mb={index_mb:.2f} rss_mb={rss_growth:.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="reidnet-gallery-search's --out folder")
    parser.add_argument("--threads", type=int, default=2, help="FAISS's OpenMP threads")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    with open(os.path.join(args.data, "data.txt")) as sizes:
        size = {key: int(value) for key, value in fields(sizes.read()).items()}
    n, nq, d, k = size["gallery"], size["queries"], size["dim"], size["k"]

    def read(name, dtype, shape):
        array = np.fromfile(os.path.join(args.data, name), dtype=dtype)
        if array.size != np.prod(shape):
            raise SystemExit(f"{name}: {array.size} values, expected {shape}")
        return array.reshape(shape)

    # Read into memory rather than memory-mapped, as reidnet-gallery-search holds them: the
    # RSS that a build adds is then the index's, not the gallery's pages being read in.
    progress(f"reading {n} gallery and {nq} query features ({d}-d)")
    gallery = read("gallery.f32", np.float32, (n, d))
    queries = read("queries.f32", np.float32, (nq, d))
    train = gallery[read("train.i64", np.int64, (size["train"],))]
    truth = read("truth.i64", np.int64, (nq, k))
    with open(os.path.join(args.data, "plan.txt")) as plan:
        for line in plan:
            run(fields(line), args.data, gallery, train, queries, truth)


if __name__ == "__main__":
    main()
