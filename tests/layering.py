"""Checks that reidnet's headers keep to their layers.

    python3 tests/layering.py include/reidnet

The folders under include/reidnet are layers, lowest first (LAYERS below). A header may
include headers of its own layer and of the layers below it, never of one above. A folder's
detail/ is private to it: only headers of the same folder include it, except core/detail,
which is the plumbing every layer shares. Within models, layers/ sits below backbones/, and
backbones/ below heads/ and the families in models/ itself. reidnet.hpp, data.hpp and
engine.hpp, the umbrellas, may include anything. Every `#include <reidnet/...>` must name a header that
exists, every header must live in one of the layers, and a header that names LibTorch
(torch::, at::, c10::, TORCH_*) must include a LibTorch header itself. Prints each breach and exits 1 if
there was one.
"""
import pathlib
import re
import sys

LAYERS = [
    ("core", "errors, versions, file and byte plumbing"),
    ("io", "checkpoint, state_dict and MAT-file formats"),
    ("models/layers", "building blocks"),
    ("models/backbones", "feature extractors"),
    ("models", "heads, families and the zoo"),
    ("data", "images, data sets, transforms, loaders"),
    ("solver", "losses, optimisers, schedules, scaler"),
    ("inference", "the fast CPU path"),
    ("export", "ONNX files"),
    ("evaluation", "features, protocol, re-ranking, gallery search"),
    ("distributed", "several processes"),
    ("engine", "run folders and training runs"),
]
UMBRELLAS = {"reidnet.hpp", "data.hpp", "engine.hpp"}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]reidnet/([^>"]+)[>"]', re.MULTILINE)
# The header checks put LibTorch's torch/torch.h, precompiled, before each header; so a header
# that names LibTorch must include a LibTorch header itself, which this check asks instead.
USES_LIBTORCH = re.compile(r'\b(torch|at|c10)::|\bTORCH_[A-Z_]+\(')
INCLUDES_LIBTORCH = re.compile(r'^\s*#\s*include\s*<(torch|ATen|c10)/', re.MULTILINE)


def layer_of(relative: str) -> tuple[int, str]:
    """The rank and name of the layer a header (path under reidnet/) belongs to."""
    folder = relative.rsplit("/", 1)[0] if "/" in relative else ""
    folder = folder.removesuffix("/detail").removesuffix("detail")
    if folder == "models/heads":  # heads and families sit together, above the backbones
        folder = "models"
    for rank, (name, _) in enumerate(LAYERS):
        if folder == name:
            return rank, name
    raise KeyError(folder)


def owner_of_detail(relative: str) -> str | None:
    """The folder whose detail/ holds this header, or None when it is not a detail header."""
    parts = relative.split("/")
    return "/".join(parts[: parts.index("detail")]) if "detail" in parts else None


def main(root: pathlib.Path) -> int:
    problems = []
    headers = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.hpp"))
    if not headers:
        print(f"no headers under {root}")
        return 1
    for header in headers:
        if header in UMBRELLAS:
            continue
        try:
            rank, layer = layer_of(header)
        except KeyError:
            problems.append(f"{header}: not in a layer folder ({', '.join(n for n, _ in LAYERS)})")
            continue
        text = (root / header).read_text()
        code = re.sub(r'//[^\n]*', '', text)  # comments may name LibTorch freely
        if USES_LIBTORCH.search(code) and not INCLUDES_LIBTORCH.search(text):
            problems.append(f"{header}: names LibTorch but includes none of its headers")
        for included in INCLUDE.findall(text):
            if not (root / included).is_file():
                problems.append(f"{header}: includes reidnet/{included}, which does not exist")
                continue
            if included in UMBRELLAS:
                problems.append(f"{header}: includes the umbrella reidnet/{included}")
                continue
            included_rank, included_layer = layer_of(included)
            if included_rank > rank:
                problems.append(f"{header} ({layer}) includes reidnet/{included}, "
                                f"of the higher layer {included_layer}")
            owner = owner_of_detail(included)
            own_folder = header.rsplit("/", 1)[0].removesuffix("/detail")
            if owner is not None and owner != "core" and owner != own_folder:
                problems.append(f"{header} includes reidnet/{included}, private to {owner}/")
    for problem in problems:
        print(problem)
    print(f"{len(headers)} headers, {len(problems)} breaches of the layering")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(pathlib.Path(sys.argv[1])))
