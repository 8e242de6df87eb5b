"""Writes the reference data of tests/test_models.cpp into the folder given as argv[1]:

- keys.json: for every model and option value, the state_dict as [key, shape] in order,
  plus the parameter count;
- forward.pt: a plain dict of tensors (weights, inputs and eval-mode outputs) that
  torch::pickle_load reads.
"""
import itertools
import json
import os
import sys

import torch

from reference_models import (ClassBlock, FtNet, randomize_batchnorm_statistics, resnet,
                              set_last_stride)


def describe(module):
    return {
        "keys": [[k, list(v.shape)] for k, v in module.state_dict().items()],
        "parameters": sum(p.numel() for p in module.parameters()),
    }


def key_references():
    out = {}
    for depth, classes, stride in itertools.product([18, 34, 50, 101, 152], [1000, 10], [1, 2]):
        out[f"resnet{depth}/num_classes={classes}/last_stride={stride}"] = describe(
            resnet(depth, classes, stride))
    for classes, stride, linear, droprate in itertools.product(
            [751, 10], [1, 2], [512, 256, 0], [0.5, 0.0]):
        name = f"ft_net/class_num={classes}/stride={stride}/linear_num={linear}/droprate={droprate}"
        out[name] = describe(FtNet(classes, droprate, stride, linear))
    for relu, bnorm, linear, droprate in itertools.product(
            [False, True], [True, False], [512, 0], [0.5, 0.0]):
        name = f"class_block/relu={int(relu)}/bnorm={int(bnorm)}/linear={linear}/droprate={droprate}"
        out[name] = describe(ClassBlock(2048, 751, droprate, relu, bnorm, linear))
    return out


def forward_references():
    generator = torch.Generator().manual_seed(20261126)
    torch.manual_seed(7)
    tensors = {}
    image = torch.randn(2, 3, 128, 64, generator=generator)
    single = torch.randn(1, 3, 256, 128, generator=generator)
    tensors["input"] = image
    tensors["input_single"] = single
    with torch.no_grad():
        small = resnet(18).eval()
        randomize_batchnorm_statistics(small, generator)
        for k, v in small.state_dict().items():
            tensors[f"resnet18/{k}"] = v
        tensors["resnet18/output"] = small(image)

        # One backbone serves resnet50 and both heads, to keep the file small.
        backbone = None
        for linear in (512, 0):
            net = FtNet(751, 0.5, 2, linear).eval()
            randomize_batchnorm_statistics(net, generator)
            if backbone is None:
                backbone = net.model.state_dict()
                tensors.update({f"resnet50/{k}": v for k, v in backbone.items()})
                tensors["resnet50/output"] = net.model(image)
            net.model.load_state_dict(backbone)
            tensors.update({f"head{linear}/{k}": v
                            for k, v in net.classifier.state_dict().items()})
            for stride in (2, 1):
                set_last_stride(net.model, stride)
                tag = f"ft_net_linear{linear}_stride{stride}"
                tensors[f"{tag}/logits"] = net(image)
                tensors[f"{tag}/embed"] = net.embed(image)
                tensors[f"{tag}/features"] = net.features(image)
                tensors[f"{tag}/embed_single"] = net.embed(single)
    return tensors


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "keys.json"), "w") as f:
        json.dump(key_references(), f)
    torch.save(forward_references(), os.path.join(out_dir, "forward.pt"))


if __name__ == "__main__":
    main()
