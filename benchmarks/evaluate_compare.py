"""Runs reidnet-evaluate and the Python baseline (evaluate_reference.py) side by side on the
same synthetic data, interleaved, and prints the time ratios, peak memory and whether both
print the same Rank@k/mAP line.

  /usr/bin/python3 benchmarks/evaluate_compare.py --build build
  /usr/bin/python3 benchmarks/evaluate_compare.py --build build --rounds 1 --queries 1000 \
      --gallery 6000 --rerank-queries 500 --rerank-gallery 3000 --market-rerank

1. evaluate(): Market size by default (3,368 x 19,732, 512-d, 751 ids, 6 cameras).
2. re-ranking: both implementations at --rerank-queries x --rerank-gallery (the baseline
   needs (Nq+Ng)^2 dense matrices: over 10 GB at Market size); with --market-rerank also
   reidnet alone at the protocol size, from matrices and from features.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(command):
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit("failed: %s\n%s%s" % (" ".join(command), completed.stdout, completed.stderr))
    lines = [l for l in completed.stdout.splitlines() if l.startswith("benchmark=")]
    if not lines:
        return {}
    fields = dict(re.findall(r"(\w+)=(\S+)", lines[-1]))
    fields["line"] = lines[-1][lines[-1].index("Rank@1"):]
    return fields


def largest_difference(*results):
    """Largest difference of Rank@1/5/10 and mAP between result lines (float32 scores from a
    matrix product and from the baseline's per-query np.dot round differently, so near-ties may
    swap: expect ~1e-6)."""
    keys = ("Rank@1", "Rank@5", "Rank@10", "mAP")
    values = [[float(dict(re.findall(r"([\w@]+):(\S+)", r["line"]))[k]) for k in keys]
              for r in results]
    return max(abs(a - b) for other in values[1:] for a, b in zip(values[0], other))


def python(*args):
    return run([sys.executable, os.path.join(HERE, "evaluate_reference.py"), *args])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build", help="CMake build folder with benchmarks")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of each")
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=19732)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--ids", type=int, default=751)
    parser.add_argument("--noise", type=float, default=2.5, help="see evaluate_reference.py")
    parser.add_argument("--rerank-queries", type=int, default=800)
    parser.add_argument("--rerank-gallery", type=int, default=4800)
    parser.add_argument("--protocol-only", action="store_true", help="skip the re-ranking part")
    parser.add_argument("--market-rerank", action="store_true",
                        help="also time reidnet's re-ranking at the protocol size")
    parser.add_argument("--threads", type=int, default=0, help="reidnet threads (0 = default)")
    args = parser.parse_args()
    program = os.path.join(args.build, "benchmarks", "reidnet-evaluate")
    if not os.path.exists(program):
        sys.exit("%s not found: configure with -DREIDNET_BUILD_BENCHMARKS=ON and build" % program)

    with tempfile.TemporaryDirectory() as folder:
        market = os.path.join(folder, "market.pt")
        small = os.path.join(folder, "rerank.pt")
        size = ["--dim", str(args.dim), "--ids", str(args.ids), "--noise", str(args.noise)]
        python("generate", market, "--queries", str(args.queries), "--gallery", str(args.gallery),
               *size)
        python("generate", small, "--queries", str(args.rerank_queries), "--gallery",
               str(args.rerank_gallery), *size)
        threads = ["--threads", str(args.threads)]

        print("== evaluate(): %d queries x %d gallery, %d-d" % (args.queries, args.gallery, args.dim))
        baseline, ours = [], []
        for round_ in range(args.rounds):
            b = python("protocol", market)
            o = run([program, "protocol", "--data", market, "--repeat", "1", *threads])
            baseline.append(float(b["seconds"]))
            ours.append(float(o["seconds"]))
            print("round %d: python %.2f s, reidnet %.3f s" % (round_ + 1, baseline[-1], ours[-1]))
        print("python : %s" % b["line"])
        print("reidnet: %s  (mINP %s)" % (o["line"], o["mINP"]))
        print("largest difference of Rank@k/mAP: %.1e" % largest_difference(b, o))
        print("evaluate speed-up (median python / median reidnet): %.1fx"
              % (statistics.median(baseline) / statistics.median(ours)))

        if args.protocol_only:
            return
        print("\n== re-ranking: %d queries x %d gallery" % (args.rerank_queries, args.rerank_gallery))
        b = python("re-ranking", small)
        o = run([program, "re-ranking", "--data", small, "--from", "matrices", *threads])
        f = run([program, "re-ranking", "--data", small, "--from", "features", *threads])
        print("python          : %7.2f s  peak RSS %6s MB  %s" % (float(b["seconds"]), b["peak_rss_mb"], b["line"]))
        print("reidnet matrices: %7.2f s  peak RSS %6s MB  %s" % (float(o["seconds"]), o["peak_rss_mb"], o["line"]))
        print("reidnet features: %7.2f s  peak RSS %6s MB  %s" % (float(f["seconds"]), f["peak_rss_mb"], f["line"]))
        print("largest difference of Rank@k/mAP: %.1e" % largest_difference(b, o, f))
        print("re-ranking speed-up (python / reidnet matrices): %.1fx"
              % (float(b["seconds"]) / float(o["seconds"])))

        if args.market_rerank:
            print("\n== reidnet re-ranking at %d queries x %d gallery" % (args.queries, args.gallery))
            for source in ("matrices", "features"):
                r = run([program, "re-ranking", "--data", market, "--from", source, *threads])
                print("from %-8s: %7.2f s  peak RSS %6s MB (%s MB before)  %s"
                      % (source, float(r["seconds"]), r["peak_rss_mb"], r["rss_before_mb"], r["line"]))


if __name__ == "__main__":
    main()
