"""Reference for tests/test_distributed.cpp, written into argv[1]:

- init.pth: ft_net's initial weights (ResNet-50 + ClassBlock, 8 classes, dropout 0);
- data.pt: 45 pictures [45, 3, 32, 16] (small: ResNet-50 ends at 1x1, and float64 is slow) and
  their labels;
- sampler.pt: torch.utils.data.DistributedSampler's indices (45 samples, 2 replicas,
  shuffle, seed 7) per rank and epoch, as rank{r}_epoch{e};
- ddp_rank{r}.pth: each rank's state_dict after 3 steps of torch.nn.parallel.
  DistributedDataParallel on Gloo (find_unused_parameters, for ft_net's unused fc), 2
  processes, 6 pictures per process per step from that rank's epoch-0 indices, SGD (lr 0.001,
  momentum 0.9, Nesterov, weight decay 5e-4).
"""
import os
import socket
import sys

# LibTorch 2.4+ rendezvous on libuv by default, which Debian's build lacks.
os.environ.setdefault("USE_LIBUV", "0")

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import FtNet  # noqa: E402

SAMPLES, WORLD, SEED, BATCH, STEPS = 45, 2, 7, 6, 3


def sampler_indices(rank, epoch):
    sampler = DistributedSampler(range(SAMPLES), num_replicas=WORLD, rank=rank, shuffle=True,
                                 seed=SEED)
    sampler.set_epoch(epoch)
    return list(sampler)


def train(rank, out, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    model = FtNet(class_num=8, droprate=0.0)
    model.load_state_dict(torch.load(os.path.join(out, "init.pth")))
    model.train()
    # ft_net keeps torchvision's unused fc (for its keys).
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    sgd = torch.optim.SGD(ddp.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    data = torch.load(os.path.join(out, "data.pt"))
    indices = sampler_indices(rank, 0)
    for step in range(STEPS):
        batch = torch.tensor(indices[step * BATCH:(step + 1) * BATCH])
        loss = F.cross_entropy(ddp(data["images"][batch]), data["labels"][batch])
        sgd.zero_grad()
        loss.backward()
        sgd.step()
    torch.save(model.state_dict(), os.path.join(out, f"ddp_rank{rank}.pth"))
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    torch.save(FtNet(class_num=8, droprate=0.0).state_dict(), os.path.join(out, "init.pth"))
    g = torch.Generator().manual_seed(1)
    torch.save({"images": torch.randn(SAMPLES, 3, 32, 16, generator=g),
                "labels": torch.randint(0, 8, (SAMPLES,), generator=g)},
               os.path.join(out, "data.pt"))
    torch.save({f"rank{r}_epoch{e}": torch.tensor(sampler_indices(r, e))
                for r in range(WORLD) for e in range(3)}, os.path.join(out, "sampler.pt"))
    mp.spawn(train, args=(out, free_port()), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
