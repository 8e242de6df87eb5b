"""PyTorch's side of benchmarks/distributed.sh: ft_net (the baseline's ResNet-50 + ClassBlock)
training throughput on one process or, under torchrun's environment variables, with
DistributedDataParallel on Gloo. Synthetic pictures, fp32, channels_last, SGD, as
reidnet-distributed. Rank 0 prints the job's images per second."""
import argparse
import os
import sys
import time

# LibTorch 2.4+ rendezvous on libuv by default, which Debian's build lacks.
os.environ.setdefault("USE_LIBUV", "0")

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from reference_models import FtNet  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--classes", type=int, default=751)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo", init_method="env://")
    torch.manual_seed(0)
    net = FtNet(class_num=args.classes, droprate=0.0).to(memory_format=torch.channels_last)
    net.train()
    model = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True) if distributed else net
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(args.batch_size, 3, args.height, args.width).contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(args.classes, (args.batch_size,))

    def step():
        loss = F.cross_entropy(model(images), labels)
        sgd.zero_grad()
        loss.backward()
        sgd.step()

    for _ in range(args.warmup):
        step()
    if distributed:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if distributed:
        dist.barrier()
    seconds = time.perf_counter() - start
    if not distributed or dist.get_rank() == 0:
        print(f"pytorch {world} processes x {args.threads} threads: "
              f"{world * args.batch_size * args.steps / seconds:.2f} img/s "
              f"({args.steps} steps of {args.batch_size} per process, {seconds / args.steps:.3f} s per step)")


if __name__ == "__main__":
    main()
