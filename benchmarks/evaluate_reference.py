"""The Python baseline's evaluation and re-ranking, timed on synthetic Market-1501-sized data.

  python3 evaluate_reference.py generate market.pt [--queries 3368 --gallery 19732 ...]
  python3 evaluate_reference.py protocol market.pt      # the baseline's per-query loop
  python3 evaluate_reference.py re-ranking market.pt    # the baseline's re_ranking + loop

`protocol` runs the baseline's evaluate.py loop (per query: np.dot, np.argsort, np.argwhere,
np.setdiff1d/intersect1d, np.in1d and the trapezoid AP), the NumPy code of
tests/python/evaluate_reference.py with the baseline's own (unstable) argsort. Each command
prints one `key=value` line that evaluate_compare.py parses; peak_rss_mb is this process's.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from evaluate_reference import (evaluate_features, evaluate_scores, re_ranking,  # noqa: E402
                                synthetic_market)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load(path):
    import torch
    data = torch.load(path)
    return [data[k].numpy() for k in ("qf", "ql", "qc", "gf", "gl", "gc")]


def line(cmc, mAP):
    return "Rank@1:%f Rank@5:%f Rank@10:%f mAP:%f" % (cmc[0], cmc[4], cmc[9], mAP)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["generate", "protocol", "re-ranking"])
    parser.add_argument("data", help="features file (torch.save dict of qf, ql, qc, gf, gl, gc)")
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=19732)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--ids", type=int, default=751)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise", type=float, default=2.5,
                        help="per-dimension noise around each identity's centre")
    args = parser.parse_args()

    if args.command == "generate":
        import torch
        rng = np.random.default_rng(args.seed)
        arrays = synthetic_market(rng, args.queries, args.gallery, args.dim, args.ids, args.cameras,
                                  args.noise)
        names = ("qf", "ql", "qc", "gf", "gl", "gc")
        torch.save({n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in zip(names, arrays)},
                   args.data)
        return

    qf, ql, qc, gf, gl, gc = load(args.data)
    shape = "queries=%d gallery=%d dim=%d" % (qf.shape[0], gf.shape[0], qf.shape[1])
    if args.command == "protocol":
        start = time.perf_counter()
        cmc, mAP = evaluate_features(qf, ql, qc, gf, gl, gc, stable=False)
        elapsed = time.perf_counter() - start
        print("benchmark=evaluate_python %s seconds=%.4f peak_rss_mb=%.0f %s"
              % (shape, elapsed, peak_rss_mb(), line(cmc, mAP)), flush=True)
        return

    # As evaluate_rerank.py: similarities first, then the timed re_ranking call.
    q_g, q_q, g_g = np.dot(qf, gf.T), np.dot(qf, qf.T), np.dot(gf, gf.T)
    before = peak_rss_mb()
    start = time.perf_counter()
    distance = re_ranking(q_g, q_q, g_g)
    elapsed = time.perf_counter() - start
    peak = peak_rss_mb()
    result = evaluate_scores(distance, ql, qc, gl, gc, stable=False, descending=False)
    print("benchmark=re_ranking_python %s seconds=%.3f peak_rss_mb=%.0f rss_before_mb=%.0f %s"
          % (shape, elapsed, peak, before, line(result["cmc"], result["mAP"])), flush=True)


if __name__ == "__main__":
    main()
