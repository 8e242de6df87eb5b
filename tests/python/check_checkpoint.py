"""Checks files written by reidnet's programs from Python (Debian's torch):

  check_checkpoint.py ft_net <net.pth> <nclasses> <stride> <linear_num>
      torch.load the file and load it *strictly* into the Python ft_net.
  check_checkpoint.py features <features.pth> <dim>
      torch.load the feature dict and check its keys and shapes.
  check_checkpoint.py optimizer <optimizer.pt> <net.pth> <nclasses> <stride> <linear_num> <out.pt>
      load reidnet's optimizer state into Python's SGD for ft_net (the baseline's two groups),
      take one step, and save Python's state to <out.pt> and its momentum buffers, by
      parameter index, to <out.pt>.expected.
  check_checkpoint.py adam_optimizer <optimizer.pt> <net.pth> <adam|adamw>
      load reidnet's Adam or AdamW state into Python's, for the two groups (backbone, head) of
      the model that net.pth holds: ft_net (the baseline's) or BNNeck (fast-reid's); every
      moment and step must come through, and the optimizer must take a step.
Exit status 0 on success; a message on stderr otherwise.
"""
import sys

import torch

from reference_models import FtNet
from zoo_models import BnneckNet


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


def check_optimizer(optimizer_path, net_path, nclasses, stride, linear_num, out_path):
    net = FtNet(int(nclasses), 0.5, int(stride), int(linear_num))
    net.load_state_dict(torch.load(net_path, map_location="cpu"), strict=True)
    named = list(net.named_parameters())
    backbone = [p for n, p in named if not n.startswith("classifier.")]
    head = [p for n, p in named if n.startswith("classifier.")]
    sgd = torch.optim.SGD([{"params": backbone}, {"params": head}], lr=0.05, momentum=0.9,
                          nesterov=True, weight_decay=5e-4)
    saved = torch.load(optimizer_path, map_location="cpu")
    assert set(saved) == {"state", "param_groups"}, f"keys {set(saved)}"
    sgd.load_state_dict(saved)
    params = [p for group in sgd.param_groups for p in group["params"]]
    assert len(sgd.state) > 0, "no momentum buffers"
    for index, entry in saved["state"].items():
        assert entry["momentum_buffer"].shape == params[index].shape, f"buffer {index}"
        assert torch.equal(sgd.state[params[index]]["momentum_buffer"], entry["momentum_buffer"])
    for group, saved_group in zip(sgd.param_groups, saved["param_groups"]):
        assert group["lr"] == saved_group["lr"] and group["nesterov"] is True
    for p in params:
        if p in sgd.state:
            p.grad = p.detach() * 0.01
    sgd.step()
    torch.save(sgd.state_dict(), out_path)
    torch.save({str(i): sgd.state[p]["momentum_buffer"] for i, p in enumerate(params) if p in sgd.state},
               out_path + ".expected")


def check_adam_optimizer(optimizer_path, net_path, kind):
    weights = torch.load(net_path, map_location="cpu")
    if "heads.weight" in weights:
        net, head = BnneckNet(weights["heads.weight"].shape[0]), "heads."
    else:
        classifier = weights["classifier.classifier.0.weight"]
        net, head = FtNet(classifier.shape[0], 0.5, 2, classifier.shape[1]), "classifier."
    net.load_state_dict(weights, strict=True)
    named = list(net.named_parameters())
    groups = [{"params": [p for n, p in named if not n.startswith(head)]},
              {"params": [p for n, p in named if n.startswith(head)]}]
    adam = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind](groups, lr=1.0)
    saved = torch.load(optimizer_path, map_location="cpu")
    adam.load_state_dict(saved)
    params = [p for group in adam.param_groups for p in group["params"]]
    assert len(saved["state"]) > 100, f"only {len(saved['state'])} parameters have state"
    for index, entry in saved["state"].items():
        state = adam.state[params[index]]
        assert entry["step"].dtype == torch.float32 and entry["step"].dim() == 0, "step"
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key], entry[key]), f"state[{index}][{key}]"
    assert adam.param_groups[1]["lr"] == saved["param_groups"][1]["lr"] != 1.0
    for p in params:
        p.grad = p.detach() * 0.01
    adam.step()


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    {"ft_net": check_ft_net, "features": check_features, "optimizer": check_optimizer,
     "adam_optimizer": check_adam_optimizer}[kind](*args)
