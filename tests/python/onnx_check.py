"""Checks the ONNX files that test_export.cpp writes, one per family.

    python3 onnx_check.py FOLDER [--runtime]

For each FOLDER/<family>.onnx: ONNX's full check (onnx.checker.check_model(full_check=True):
schemas, types and strict shape inference), the graph's one input `images` (N x 3 x H x W, N
free) and one output `features`, both float32, and the preprocessing metadata. With --runtime,
ONNX Runtime also runs the file on FOLDER/<family>.pt's `images` at batch 1 and 7 and its
features must be within 1e-4 (relative to the largest) of reidnet's float32 module,
`features_1` and `features_7`. A FOLDER/<family>.fp16.onnx (float16 weights) is held to the
same float32 features by its rows' cosine, at least 0.999.
Prints one line per file and exits 1 if any failed.
"""
import contextlib
import os
import pathlib
import sys

import onnx
import torch

TOLERANCE = 1e-4
FP16_MIN_COSINE = 0.999
METADATA = {"input_height", "input_width", "channel_order", "mean", "std", "max_pixel_value",
            "interpolation", "normalized_in_graph", "feature_dim", "feature_l2_normalized"}


@contextlib.contextmanager
def native_stderr_silenced():
    """Debian's ONNX Runtime registers ONNX's operator schemas a second time when it opens its
    first session and prints a line for each to the C stderr; errors still come as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_file(path: pathlib.Path, runtime) -> str:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert [i.name for i in graph.input] == ["images"], [i.name for i in graph.input]
    assert [o.name for o in graph.output] == ["features"], [o.name for o in graph.output]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]][0] == 3, dims
    metadata = {p.key: p.value for p in model.metadata_props}
    missing = METADATA - metadata.keys()
    assert not missing, f"metadata lacks {sorted(missing)}"
    assert [d.dim_value for d in dims[2:]] == [int(metadata["input_height"]), int(metadata["input_width"])]
    for value in (graph.input[0], graph.output[0]):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, f"{value.name} is not float32"
    half = path.stem.endswith(".fp16")
    assert metadata.get("dtype") == ("fp16" if half else "fp32"), metadata.get("dtype")
    line = f"{path.stem}: full check passed, opset {model.opset_import[0].version}"
    if runtime is None:
        return line
    reference = torch.load(str(path.parent / (path.stem.removesuffix(".fp16") + ".pt")))
    with native_stderr_silenced():
        session = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = reference["images"].numpy()
    worst, least_cosine = 0.0, 1.0
    for batch, expected in ((1, reference["features_1"]), (7, reference["features_7"])):
        features = torch.from_numpy(session.run(["features"], {"images": images[:batch]})[0])
        assert features.shape == expected.shape, (features.shape, expected.shape)
        difference = ((features - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
        worst = max(worst, difference)
        cosine = torch.nn.functional.cosine_similarity(features.double(), expected.double(), dim=1)
        least_cosine = min(least_cosine, cosine.min().item())
    versus = f"ONNX Runtime {runtime.__version__} at batch 1 and 7"
    if half:
        assert least_cosine >= FP16_MIN_COSINE, f"ONNX Runtime's rows have cosine {least_cosine:.5f} to reidnet's"
        return line + (f"; {versus}: rows' cosine to reidnet's float32 within {1 - least_cosine:.1e} of 1"
                       f" (largest difference {worst:.1e}, relative)")
    assert worst <= TOLERANCE, f"ONNX Runtime differs from reidnet by {worst:.2e} (relative)"
    return line + f"; {versus} within {worst:.1e} of reidnet"


def main() -> int:
    folder = pathlib.Path(sys.argv[1])
    runtime = None
    if "--runtime" in sys.argv[2:]:
        import onnxruntime as runtime
        runtime.set_default_logger_severity(3)
    failures = 0
    files = sorted(folder.glob("*.onnx"))
    if not files:
        print(f"no .onnx files in {folder}")
        return 1
    for path in files:
        try:
            print(check_file(path, runtime), flush=True)
        except Exception as error:  # report every family, then fail
            failures += 1
            print(f"{path.stem}: FAILED: {str(error)[:2000]}", flush=True)
    print(f"{len(files) - failures} of {len(files)} files passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
