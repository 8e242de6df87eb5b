#!/usr/bin/python3
"""The Python side of reidnet's per-family speed table: each model family's test-time
embedding in eager PyTorch (the Python models of tests/python/zoo_models.py, osnet_models.py
and the upstream networks it wraps), timed as
reidnet-bench times reidnet's.

    /usr/bin/python3 benchmarks/families.py --model pcb --dtype bf16 --batch-size 16

Paths: fp32 eager (NCHW) and eager_cl (channels_last); bf16 autocast_cl (CPU autocast,
channels_last) and bf16_weights (the model and input in bfloat16); int8 pytorch_int8 (below),
beside fp32 eager for the ratio; a path PyTorch cannot run prints a comment and counts as 0. Each
prints its best round: `result <path> <img/s>`.

int8 is PyTorch's own post-training static quantisation, FX graph mode (prepare_fx, convert_fx)
of the test-time embedding, calibrated on --calibration-images images (those of
--calibration-dir, else random ones). Its engine is onednn, oneDNN's int8 kernels, the library
reidnet calls: Debian's torch (1.13 in Debian 12, 2.6 in Debian 13) is built without fbgemm and
so without the fbgemm/x86 engines, which makes onednn PyTorch's x86 int8 backend here. Besides
its result it prints `fidelity pytorch_int8 cosine_min <x> cosine_mean <y>`: the per-image
cosine between its embedding and fp32 eager's of the timed images. A family FX cannot trace
(control flow on tensors) prints `# int8 failed: <reason>` and counts as 0.

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
import pathlib
import sys
import tempfile
import time

import torch
from PIL import Image

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
    if name == "bnneck":  # as reidnet's create_model("bnneck") builds it: last stride 2, average pooling
        return BnneckNet(classes, "avg", 2), lambda m, x: m.embed(x)
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
    """The test-time embedding as a module's forward, for torch.onnx.export and FX."""

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


def calibration_images(directory, count, size):
    """The first count .jpg/.png files under directory, sorted, as the test loader feeds them:
    resized bicubic, scaled to [0, 1], ImageNet's mean and std taken off."""
    files = sorted(p for p in pathlib.Path(directory).rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        raise SystemExit(f"families.py: no .jpg or .png under {directory}")
    height, width = size
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images = []
    for file in files[:count]:
        with Image.open(file) as image:
            image = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
            pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        images.append((pixels.view(height, width, 3).permute(2, 0, 1).float() / 255 - mean) / std)
    return torch.stack(images)


def quantize_int8(model, embed, calibration, batch_size):
    """The embedding quantised to int8 by FX graph mode: traced, observed on calibration in
    batches of batch_size, converted to onednn's quantised operators."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "onednn"
    # A copy: prepare_fx folds BatchNorm into the convolutions, and eager times the original.
    wrapper = Embedding(copy.deepcopy(model), embed).eval()
    prepared = prepare_fx(wrapper, get_default_qconfig_mapping("onednn"), (calibration[:1],))
    with torch.no_grad():
        for batch in calibration.split(batch_size):
            prepared(batch)
    return convert_fx(prepared)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ft_net")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "int8"])
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
    parser.add_argument("--calibration-images", type=int, default=64, help="int8: how many")
    parser.add_argument("--calibration-dir", help="int8: calibrate on its images, not random ones")
    args = parser.parse_args()
    if args.calibration_images < 1:
        parser.error("--calibration-images must be at least 1")
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
    quantized, fidelity = None, None
    if args.dtype == "int8":
        size = (args.height, args.width)
        if args.calibration_dir:
            calibration = calibration_images(args.calibration_dir, args.calibration_images, size)
        else:
            calibration = torch.randn(args.calibration_images, 3, *size,
                                      generator=torch.Generator().manual_seed(1))
        print(f"# int8 calibrated on {calibration.size(0)} images")
        # Any exception: FX's tracing raises TraceError, TypeError and others on control flow,
        # and a quantised operator onednn lacks raises NotImplementedError on the first run.
        try:
            quantized = quantize_int8(model, embed, calibration, args.batch_size)
            with torch.inference_mode():
                cosines = torch.nn.functional.cosine_similarity(
                    quantized(images).flatten(1), embed(model, images).flatten(1))
            fidelity = cosines.min().item(), cosines.mean().item()
        except Exception as error:
            reason = " ".join(f"{type(error).__name__}: {error}".split())  # on the comment's line
            print(f"# int8 failed: {reason}")
            quantized = None
    # bf16: CPU autocast (torch 1.13's fails on the transformers' LayerNorms, which it leaves in
    # float32 beside bfloat16 activations) and the whole model in bfloat16, as reidnet runs it.
    paths = {"fp32": ["eager", "eager_cl"], "bf16": ["autocast_cl", "bf16_weights"],
             "int8": ["eager", "pytorch_int8"]}[args.dtype]
    paths += list(sessions)
    best = {path: 0.0 for path in paths}
    failed = set() if quantized is not None else {"pytorch_int8"}
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
            run = embed
            if path == "bf16_weights":
                net, x = copy.deepcopy(model).to(torch.bfloat16), images.to(torch.bfloat16)
            if path == "pytorch_int8":  # the quantised module's forward is the embedding
                net, run = quantized, lambda m, x: m(x)
            try:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    run(net, x)  # warm-up
                    start = time.perf_counter()
                    for _ in range(args.iters):
                        run(net, x)
                    seconds = time.perf_counter() - start
            except RuntimeError as error:
                print(f"# {path} failed: {error}")
                failed.add(path)
                continue
            best[path] = max(best[path], args.batch_size * args.iters / seconds)
    for path, throughput in best.items():
        print(f"result {path} {throughput:.2f}")
    if fidelity:
        print(f"fidelity pytorch_int8 cosine_min {fidelity[0]:.4f} cosine_mean {fidelity[1]:.4f}")
        if best["eager"] and best["pytorch_int8"]:
            print(f"# pytorch_int8 / eager {best['pytorch_int8'] / best['eager']:.2f}x")


if __name__ == "__main__":
    main()
