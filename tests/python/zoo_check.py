"""zoo_check.py CONFIG PATH: loads the state_dict file PATH strictly into the Python model of
CONFIG (a configuration name of zoo_reference.py, class_num 10). Prints "ok <n> entries" and
exits 0, or prints the error and exits 1."""
import sys

import torch

from zoo_reference import CONFIGS, build


def main():
    if len(sys.argv) != 3:
        print("usage: zoo_check.py CONFIG PATH")
        return 1
    config, path = sys.argv[1], sys.argv[2]
    if config not in CONFIGS:
        print(f"unknown configuration {config!r}; known: {', '.join(CONFIGS)}")
        return 1
    try:
        model = build(config, 10, 0.5, initialise=False)
        state = torch.load(path, map_location="cpu")
        model.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001 - any failure is reported, not raised
        print(f"{type(error).__name__}: {error}")
        return 1
    print(f"ok {len(state)} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
