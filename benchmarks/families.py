#!/usr/bin/python3
"""The Python side of reidnet's per-family speed table: each model family's test-time
embedding in eager PyTorch (the Python models of tests/python/zoo_models.py, osnet_models.py
and the upstream networks it wraps), timed as
reidnet-bench times reidnet's.

    /usr/bin/python3 benchmarks/families.py --model pcb --dtype bf16 --batch-size 16

Paths: fp32 eager (NCHW) and eager_cl (channels_last); bf16 autocast_cl (CPU autocast,
channels_last) and bf16_weights (the model and input in bfloat16); a path PyTorch cannot run
prints a comment and counts as 0. Each prints its best round: `result <path> <img/s>`.
"""
import argparse
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from reference_models import FtNet  # noqa: E402
import osnet_models  # noqa: E402
import vit_models  # noqa: E402
from zoo_models import (BASELINE_INPUT_SIZES, BASELINE_WRAPPERS, PCB,  # noqa: E402
                        BaselineWrapper, BnneckNet, FtNetDense, FtNetIbn, FtNetUsam)


def build(name, classes, size):
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
        network = {"img_size": size} if name in BASELINE_INPUT_SIZES else {}
        return BaselineWrapper(upstream, variant, classes, **network), lambda m, x: m.embed(x)
    if name == "vit_base_patch16":
        return (BaselineWrapper(vit_models, "vit_base_patch16_224", classes, img_size=size),
                lambda m, x: m.embed(x))
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
    model, embed = build(args.model, args.class_num, (args.height, args.width))
    model.eval()
    images = torch.randn(args.batch_size, 3, args.height, args.width)
    # bf16: CPU autocast (torch 1.13's fails on the transformers' LayerNorms, which it leaves in
    # float32 beside bfloat16 activations) and the whole model in bfloat16, as reidnet runs it.
    paths = ["eager", "eager_cl"] if args.dtype == "fp32" else ["autocast_cl", "bf16_weights"]
    best = {path: 0.0 for path in paths}
    failed = set()
    for _ in range(args.rounds):
        for path in paths:
            if path in failed:
                continue
            channels_last = path.endswith("_cl")
            net = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
            autocast = path.startswith("autocast")
            if path == "bf16_weights":
                net, x = copy.deepcopy(model).to(torch.bfloat16), images.to(torch.bfloat16)
            try:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    embed(net, x)  # warm-up
                    start = time.perf_counter()
                    for _ in range(args.iters):
                        embed(net, x)
                    seconds = time.perf_counter() - start
            except RuntimeError as error:
                print(f"# {path} failed: {error}")
                failed.add(path)
                continue
            best[path] = max(best[path], args.batch_size * args.iters / seconds)
    for path, throughput in best.items():
        print(f"result {path} {throughput:.2f}")


if __name__ == "__main__":
    main()
