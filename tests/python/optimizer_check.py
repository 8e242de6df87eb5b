"""Loads an Adam/AdamW/AMSGrad state file reidnet wrote into torch.optim and checks it against
the one Python wrote after the same steps (training_reference.py's adam_steps):

  optimizer_check.py <adam|adamw|amsgrad> <reidnet_state.pt> <fixture folder>

Both files must load with load_state_dict, hold equal hyperparameters and bit-equal state, and
take a fourth step to bit-equal weights. Exit code 0 when they do."""
import os
import sys

import torch

MAKERS = {
    "adam": lambda groups: torch.optim.Adam(groups, weight_decay=5e-4),
    "adamw": lambda groups: torch.optim.AdamW(groups, weight_decay=5e-4),
    "amsgrad": lambda groups: torch.optim.Adam(groups, weight_decay=5e-4, amsgrad=True),
}


def main():
    kind, ours_path, fixtures = sys.argv[1:4]
    reference = torch.load(os.path.join(fixtures, "reference.pt"))
    weights = [reference[f"{kind}_after_2_{i}"] for i in range(2)]
    stepped = []
    for path in (ours_path, os.path.join(fixtures, f"{kind}_state.pt")):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = MAKERS[kind]([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 1.0}])
        optimizer.load_state_dict(torch.load(path))
        g = torch.Generator().manual_seed(3)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        state = optimizer.state_dict()
        optimizer.step()
        stepped.append((state, [p.detach() for p in params]))
    (ours, our_weights), (python, python_weights) = stepped
    for a, b in zip(ours["param_groups"], python["param_groups"]):
        for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "params"):
            if a[key] != b[key]:
                sys.exit(f"param group {key}: reidnet {a[key]}, Python {b[key]}")
    if sorted(ours["state"]) != sorted(python["state"]):
        sys.exit(f"state entries: reidnet {sorted(ours['state'])}, Python {sorted(python['state'])}")
    for index, entry in python["state"].items():
        if sorted(ours["state"][index]) != sorted(entry):
            sys.exit(f"state[{index}] keys: reidnet {sorted(ours['state'][index])}, Python {sorted(entry)}")
        for key, value in entry.items():
            mine = ours["state"][index][key]
            if mine.dtype != value.dtype or not torch.equal(mine, value):
                sys.exit(f"state[{index}][{key}] differs: reidnet {mine.dtype}, Python {value.dtype}")
    for i, (a, b) in enumerate(zip(our_weights, python_weights)):
        if not torch.equal(a, b):
            sys.exit(f"parameter {i} after a fourth step differs by {(a - b).abs().max().item()}")
    print(f"{kind}: reidnet's state file equals Python's and takes the same fourth step")


if __name__ == "__main__":
    main()
