"""Checks the files tests/test_checkpoint.cpp wrote, with Python's own torch.load.

    checkpoint_check.py <fixture dir>

- cpp_ft_net.pth (reidnet::save_state_dict of an FtNet loaded from ft_net.pth): an
  OrderedDict in the Python model's key order, tensors bit-identical to ft_net.pth, and
  FtNet(751).load_state_dict(..., strict=True) accepts it.
- cpp_tensors.pth (reidnet::save_tensors of tensors.pth as read by reidnet): every dtype,
  bit-identical to tensors_expected.pt.
- both load with torch.load(weights_only=True), PyTorch's restricted unpickler.
Exits non-zero with a message naming the first difference.
"""
import collections
import os
import sys

import torch

from reference_models import FtNet

INTEGER_VIEW = {torch.float64: torch.int64, torch.float32: torch.int32,
                torch.float16: torch.int16, torch.bfloat16: torch.int16}


def bit_identical(actual, expected):
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    if actual.dtype in INTEGER_VIEW:
        view = INTEGER_VIEW[actual.dtype]
        return torch.equal(actual.contiguous().view(view), expected.contiguous().view(view))
    return torch.equal(actual, expected)


def compare(name, actual, expected):
    if list(actual.keys()) != list(expected.keys()):
        raise SystemExit(f"{name}: keys differ: {list(actual.keys())[:5]}... vs "
                         f"{list(expected.keys())[:5]}...")
    for key, value in expected.items():
        if not bit_identical(actual[key], value):
            raise SystemExit(f"{name}: tensor {key} differs ({actual[key].dtype} "
                             f"{tuple(actual[key].shape)} vs {value.dtype} {tuple(value.shape)})")


def main():
    folder = sys.argv[1]
    path = lambda name: os.path.join(folder, name)

    written = torch.load(path("cpp_ft_net.pth"))
    if not isinstance(written, collections.OrderedDict):
        raise SystemExit(f"cpp_ft_net.pth holds a {type(written).__name__}, not an OrderedDict")
    net = FtNet(751)
    compare("cpp_ft_net.pth", written, torch.load(path("ft_net.pth")))
    if list(written.keys()) != list(net.state_dict().keys()):
        raise SystemExit("cpp_ft_net.pth is not in the Python model's key order")
    net.load_state_dict(written, strict=True)

    compare("cpp_tensors.pth", torch.load(path("cpp_tensors.pth")),
            torch.load(path("tensors_expected.pt")))
    # PyTorch's own restricted loader (the default from torch 2.6) accepts the files too.
    for name in ("cpp_ft_net.pth", "cpp_tensors.pth"):
        torch.load(path(name), weights_only=True)
    print("checkpoint_check: files written by reidnet load in Python, bit-identical")


if __name__ == "__main__":
    main()
