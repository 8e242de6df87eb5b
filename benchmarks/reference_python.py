#!/usr/bin/python3
"""The Python side of reidnet's speed comparison: the same FtNet (torchvision ResNet-50 +
ClassBlock, tests/python/reference_models.py) on every path PyTorch offers from Python.

    /usr/bin/python3 benchmarks/reference_python.py --mode embed --dtype fp32 --batch-size 16

Paths (--paths, comma separated; default: all that apply to the mode, dtype and device):
  embed fp32: eager (NCHW), eager_cl (channels_last), ts (trace + freeze + optimize_for_inference)
  embed bf16/fp16: autocast_cl, half_cl (weights in the dtype), ts_half (frozen, optimised, weights
             in the dtype); compile_cl (torch.compile, 2.x only) on request
  train fp32: eager, eager_cl     train bf16/fp16: autocast, autocast_cl (fp16: with GradScaler)
--device cuda runs the same paths on the GPU (cudnn.benchmark on, a sync after every step).
The paths are timed interleaved (--rounds rounds of each), and each prints its best round:
    result <path> <img/s> <ms per batch, p50>
benchmarks/compare_speed.sh runs this next to reidnet-bench and prints the ratios.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from reference_models import FtNet  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EMBED_PATHS = {"fp32": ["eager", "eager_cl", "ts"], "half": ["autocast_cl", "half_cl", "ts_half"]}
TRAIN_PATHS = {"fp32": ["eager", "eager_cl"], "half": ["autocast", "autocast_cl"]}


def default_paths(mode, dtype):
    table = EMBED_PATHS if mode == "embed" else TRAIN_PATHS
    return table["fp32" if dtype == "fp32" else "half"]


class Embed(nn.Module):
    """FtNet.embed as a module's forward, so that it can be traced."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.embed(x)


def synchronizer(device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def embed_runner(path, args, images, device):
    dtype = DTYPES[args.dtype]
    net = FtNet(args.class_num, stride=args.stride, linear_num=args.linear_num).eval()
    model = Embed(net).eval().to(device)
    x = images
    if path.endswith("_cl") or path == "ts_half":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if path in ("half_cl", "ts_half"):
        model = model.to(dtype)
        x = x.to(dtype)
    if path in ("ts", "ts_half"):
        with torch.no_grad():
            model = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
    if path == "compile_cl":
        model = torch.compile(model)
    autocast = path in ("autocast_cl", "compile_cl") and dtype != torch.float32
    amp_dtype = dtype if autocast else torch.bfloat16  # 1.13 refuses float32 even when disabled
    sync = synchronizer(device)

    def step():
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
            model(x)
        sync()

    return step


def train_runner(path, args, images, device):
    dtype = DTYPES[args.dtype]
    net = FtNet(args.class_num, stride=args.stride, linear_num=args.linear_num).train().to(device)
    x = images
    if path.endswith("_cl"):
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    lr = 0.05
    backbone = list(net.model.parameters())
    head = list(net.classifier.parameters())
    optimizer = torch.optim.SGD([{"params": backbone, "lr": 0.1 * lr}, {"params": head, "lr": lr}],
                                lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    labels = torch.randint(args.class_num, (x.shape[0],), device=device)
    autocast = path.startswith("autocast") and dtype != torch.float32
    amp_dtype = dtype if autocast else torch.bfloat16
    # fp16 needs loss scaling, as in reidnet-bench and reidnet-train.
    use_scaler = dtype == torch.float16 and device.type == "cuda"
    scaler = (torch.amp.GradScaler("cuda", enabled=use_scaler) if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler(enabled=use_scaler))
    sync = synchronizer(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
            loss = nn.functional.cross_entropy(net(x), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["embed", "train"], default="embed")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--linear-num", type=int, default=512)
    parser.add_argument("--class-num", type=int, default=751)
    parser.add_argument("--paths", default="", help="comma-separated paths (default: all)")
    parser.add_argument("--extra-paths", default="",
                        help="comma-separated paths timed after the default ones (e.g. compile_cl)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    paths = args.paths.split(",") if args.paths else default_paths(args.mode, args.dtype)
    paths += [path for path in args.extra_paths.split(",") if path]
    images = torch.randn(args.batch_size, 3, args.height, args.width).to(device)
    make = embed_runner if args.mode == "embed" else train_runner
    steps = {path: make(path, args, images, device) for path in paths}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    best = {path: (0.0, 0.0) for path in paths}
    for _ in range(args.rounds):
        for path, step in steps.items():
            times = []
            for _ in range(args.iters):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            throughput = args.batch_size * len(times) / sum(times)
            if throughput > best[path][0]:
                best[path] = (throughput, 1000 * statistics.median(times))
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, "
          f"mode={args.mode} dtype={args.dtype} batch={args.batch_size} iters={args.iters}")
    for path in paths:
        print(f"result {path} {best[path][0]:.2f} {best[path][1]:.1f}")


if __name__ == "__main__":
    main()
