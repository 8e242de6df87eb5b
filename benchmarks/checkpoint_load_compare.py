"""Runs the checkpoint load benchmark side by side: reidnet-checkpoint-load and Python's
torch.load on the same ResNet-50 checkpoints (zip and legacy formats, ~100 MB each), each
load in a fresh process, the two sides interleaved; prints medians and ratios.

    python3 benchmarks/checkpoint_load_compare.py --binary build/benchmarks/reidnet-checkpoint-load

Goals (issue "Checkpoint interop"): time <= 1.0x Python's; peak extra memory <= 1.2x the file.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))


def parse(line):
    fields = dict(item.split("=") for item in line.split()[1:])
    return float(fields["load_s"]), float(fields["peak_extra_mb"]), float(fields["file_mb"])


def run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return parse(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="path to reidnet-checkpoint-load")
    parser.add_argument("--runs", type=int, default=5, help="loads per side and file")
    parser.add_argument("--folder", help="where to write the checkpoints (default: a temp dir)")
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp(prefix="reidnet_checkpoint_bench_")
    os.makedirs(folder, exist_ok=True)
    state = torchvision.models.resnet50().state_dict()
    files = {"zip": os.path.join(folder, "resnet50.pth"),
             "legacy": os.path.join(folder, "resnet50_legacy.pth")}
    torch.save(state, files["zip"])
    torch.save(state, files["legacy"], _use_new_zipfile_serialization=False)

    python = [sys.executable, os.path.join(HERE, "checkpoint_load_reference.py")]
    print(f"{'file':8} {'reidnet s':>10} {'python s':>10} {'time ratio':>10} "
          f"{'reidnet MB':>10} {'python MB':>10} {'file MB':>8} {'mem/file':>8}")
    for name, path in files.items():
        ours, theirs = [], []
        for _ in range(args.runs):  # interleaved, so both sides see the same machine load
            ours.append(run([args.binary, "--file", path]))
            theirs.append(run(python + ["--file", path]))
        our_time = statistics.median(r[0] for r in ours)
        their_time = statistics.median(r[0] for r in theirs)
        our_memory = statistics.median(r[1] for r in ours)
        their_memory = statistics.median(r[1] for r in theirs)
        file_mb = ours[0][2]
        print(f"{name:8} {our_time:10.4f} {their_time:10.4f} {our_time / their_time:10.2f} "
              f"{our_memory:10.1f} {their_memory:10.1f} {file_mb:8.1f} {our_memory / file_mb:8.2f}")


if __name__ == "__main__":
    main()
