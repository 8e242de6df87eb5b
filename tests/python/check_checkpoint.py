"""Checks files written by reidnet's programs from Python (Debian's torch):

  check_checkpoint.py ft_net <net.pth> <nclasses> <stride> <linear_num>
      torch.load the file and load it *strictly* into the Python ft_net.
  check_checkpoint.py features <features.pth> <dim>
      torch.load the feature dict and check its keys and shapes.
Exit status 0 on success; a message on stderr otherwise.
"""
import sys

import torch

from reference_models import FtNet


def check_ft_net(path, nclasses, stride, linear_num):
    state = torch.load(path, map_location="cpu")
    assert isinstance(state, dict), f"{path}: not a dict but {type(state)}"
    net = FtNet(int(nclasses), 0.5, int(stride), int(linear_num))
    net.load_state_dict(state, strict=True)
    assert list(state.keys()) == list(net.state_dict().keys()), "key order differs"


def check_features(path, dim):
    features = torch.load(path, map_location="cpu")
    for key in ("qf", "ql", "qc", "gf", "gl", "gc"):
        assert key in features, f"{path}: no '{key}'"
    assert features["qf"].shape[1] == int(dim) and features["gf"].shape[1] == int(dim)
    assert features["qf"].shape[0] == features["ql"].shape[0] == features["qc"].shape[0]
    assert features["gf"].shape[0] == features["gl"].shape[0] == features["gc"].shape[0]
    norms = features["qf"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4), "features not L2-normalised"


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    {"ft_net": check_ft_net, "features": check_features}[kind](*args)
