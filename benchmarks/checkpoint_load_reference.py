"""Python side of the checkpoint load benchmark: one torch.load of the file, timed, with the
peak memory it adds (same method as reidnet-checkpoint-load).

    python3 benchmarks/checkpoint_load_reference.py --file resnet50.pth
    -> python load_s=0.0950 peak_extra_mb=98.3 file_mb=97.8 tensors=320
"""
import argparse
import os
import time

import torch


def memory_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True)
    args = parser.parse_args()
    torch.empty(1)
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    tensors = torch.load(args.file, map_location="cpu")
    elapsed = time.perf_counter() - start
    peak_extra = memory_mb("VmHWM") - before
    print(f"python load_s={elapsed:.4f} peak_extra_mb={peak_extra:.1f} "
          f"file_mb={os.path.getsize(args.file) / 2**20:.1f} tensors={len(tensors)}")


if __name__ == "__main__":
    main()
