#!/usr/bin/python3
"""The Python side of reidnet's per-family speed table: each model family's test-time
embedding in eager PyTorch (the Python models of tests/python/zoo_models.py, osnet_models.py
and the upstream networks it wraps), timed as
reidnet-bench times reidnet's.

    /usr/bin/python3 benchmarks/families.py --model pcb --dtype bf16 --batch-size 16

Paths: fp32 eager (NCHW) and eager_cl (channels_last); bf16 autocast_cl (CPU autocast,
channels_last) and bf16_weights (the model and input in bfloat16); a path PyTorch cannot run
prints a comment and counts as 0. Each prints its best round: `result <path> <img/s>`.

What a deployer would run instead, fp32, where python3-onnxruntime is installed:
- --onnxruntime: the model exported by torch.onnx.export (opset 17, the batch dynamic) and run
  by ONNX Runtime (path onnxruntime);
- --onnx FILE: ONNX Runtime on a file written elsewhere (path onnxruntime_file), e.g. by
  reidnet-export from the weights that --save-weights FILE writes first (the Python model's
  state_dict, which reidnet loads as it is).
ONNX Runtime gets --threads intra-op threads and its full graph optimisation. PyTorch runs
with OpenBLAS as reidnet's programs run it (cap_openblas).
"""
import argparse
import copy
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from reference_models import FtNet  # noqa: E402
import osnet_models  # noqa: E402
import vit_models  # noqa: E402
from zoo_models import (BASELINE_INPUT_SIZES, BASELINE_WRAPPERS, PCB,  # noqa: E402
                        BaselineWrapper, BnneckNet, FtNetDense, FtNetIbn, FtNetUsam)


def cap_openblas():
    """As reidnet's set_cpu_threads: the pthread build of OpenBLAS (Debian's default) capped at
    one thread, whose pool otherwise spins beside PyTorch's OpenMP threads; so that both sides
    run with the same BLAS setting."""
    import ctypes
    try:
        blas = ctypes.CDLL("libopenblas.so.0")  # the copy torch loaded
    except OSError:
        return "no OpenBLAS"
    if blas.openblas_get_parallel() != 1:
        return "OpenBLAS (single-threaded or OpenMP build)"
    blas.openblas_set_num_threads(1)
    return "OpenBLAS (pthread build) capped at 1 thread"


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


class Embedding(torch.nn.Module):
    """The test-time embedding as a module's forward, for torch.onnx.export."""

    def __init__(self, model, embed):
        super().__init__()
        self.model, self.embed = model, embed

    def forward(self, images):
        return self.embed(self.model, images)


def runtime_session(path, threads):
    import onnxruntime
    onnxruntime.set_default_logger_severity(3)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def export_python(model, embed, images, path):
    # eval(): the exporter restores the wrapper's mode afterwards, and with it the model's.
    torch.onnx.export(Embedding(model, embed).eval(), (images,), path, opset_version=17,
                      input_names=["images"], output_names=["features"],
                      dynamic_axes={"images": {0: "N"}, "features": {0: "N"}})


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
    parser.add_argument("--onnxruntime", action="store_true")
    parser.add_argument("--onnx", help="an ONNX file of the same model, for ONNX Runtime")
    parser.add_argument("--save-weights", help="write the model's state_dict here, then time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {cap_openblas()}")
    torch.manual_seed(0)
    model, embed = build(args.model, args.class_num, (args.height, args.width))
    model.eval()
    if args.save_weights:
        torch.save(model.state_dict(), args.save_weights)
    images = torch.randn(args.batch_size, 3, args.height, args.width)
    sessions = {}
    if args.dtype == "fp32" and args.onnxruntime:
        exported = os.path.join(tempfile.mkdtemp(prefix="reidnet-families-"), "python.onnx")
        export_python(model, embed, images, exported)
        sessions["onnxruntime"] = runtime_session(exported, args.threads)
    if args.dtype == "fp32" and args.onnx:
        sessions["onnxruntime_file"] = runtime_session(args.onnx, args.threads)
    # bf16: CPU autocast (torch 1.13's fails on the transformers' LayerNorms, which it leaves in
    # float32 beside bfloat16 activations) and the whole model in bfloat16, as reidnet runs it.
    paths = ["eager", "eager_cl"] if args.dtype == "fp32" else ["autocast_cl", "bf16_weights"]
    paths += list(sessions)
    best = {path: 0.0 for path in paths}
    failed = set()
    for _ in range(args.rounds):
        for path in paths:
            if path in failed:
                continue
            if path in sessions:
                session, feed = sessions[path], {"images": images.numpy()}
                session.run(None, feed)  # warm-up
                start = time.perf_counter()
                for _ in range(args.iters):
                    session.run(None, feed)
                best[path] = max(best[path], args.batch_size * args.iters / (time.perf_counter() - start))
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
