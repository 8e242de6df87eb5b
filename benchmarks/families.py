#!/usr/bin/python3
"""The Python side of reidnet's per-family speed table: each model family's test-time
embedding in eager PyTorch (the Python models of tests/python/zoo_models.py, osnet_models.py
and the upstream networks it wraps), timed as
reidnet-bench times reidnet's.

    /usr/bin/python3 benchmarks/families.py --model pcb --dtype bf16 --batch-size 16

Paths: fp32 eager (NCHW) and eager_cl (channels_last); bf16 autocast_cl (CPU autocast,
channels_last). Each prints its best round: `result <path> <img/s>`.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from reference_models import FtNet  # noqa: E402
import osnet_models  # noqa: E402
from zoo_models import (BASELINE_WRAPPERS, PCB, BaselineWrapper, BnneckNet,  # noqa: E402
                        FtNetDense, FtNetIbn, FtNetUsam)


def build(name, classes):
    if name == "ft_net":
        return FtNet(classes), lambda m, x: m.embed(x)
    if name == "ft_net_dense":
        return FtNetDense(classes), lambda m, x: m.embed(x)
    if name == "ft_net_ibn":
        return FtNetIbn(classes), lambda m, x: m.embed(x)
    if name == "ft_net_usam":
        return FtNetUsam(classes), lambda m, x: m.embed(x)
    if name == "pcb":
        return PCB(classes), lambda m, x: m.pcb_parts(x).reshape(x.size(0), -1)
    if name == "bnneck":
        return BnneckNet(classes, "gem", 1), lambda m, x: m.embed(x)
    if name in osnet_models.VARIANTS:  # torchreid's eval output is the embedding
        return osnet_models.build(name, classes), lambda m, x: m(x)
    if name in BASELINE_WRAPPERS:
        upstream, variant = BASELINE_WRAPPERS[name]
        return BaselineWrapper(upstream, variant, classes), lambda m, x: m.embed(x)
    raise SystemExit(f"families.py: unknown model {name}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ft_net")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--class-num", type=int, default=751)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, embed = build(args.model, args.class_num)
    model.eval()
    images = torch.randn(args.batch_size, 3, args.height, args.width)
    paths = ["eager", "eager_cl"] if args.dtype == "fp32" else ["autocast_cl"]
    best = {path: 0.0 for path in paths}
    for _ in range(args.rounds):
        for path in paths:
            channels_last = path.endswith("_cl")
            net = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                        enabled=args.dtype == "bf16"):
                embed(net, x)  # warm-up
                start = time.perf_counter()
                for _ in range(args.iters):
                    embed(net, x)
                seconds = time.perf_counter() - start
            best[path] = max(best[path], args.batch_size * args.iters / seconds)
    for path, throughput in best.items():
        print(f"result {path} {throughput:.2f}")


if __name__ == "__main__":
    main()
