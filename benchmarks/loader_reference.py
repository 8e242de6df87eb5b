"""The Python baseline's training input pipeline, timed: torchvision transforms on PIL images in a
torch DataLoader (num_workers=2 by default) over the pictures of a Market-1501-style folder.

    python3 benchmarks/loader_reference.py --data toy/bounding_box_train --epochs 2

Prints one JSON line: {"images": N, "seconds": S, "images_per_second": N/S}. Workers persist and
one warm-up epoch runs first, so process start-up is not timed (reidnet's side is timed alike).
"""
import argparse
import glob
import json
import os
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode


class Pictures(Dataset):
    def __init__(self, folder, transform):
        self.paths = sorted(glob.glob(os.path.join(folder, "*.jpg")) +
                            glob.glob(os.path.join(folder, "*.png")))
        if not self.paths:
            raise SystemExit(f"no .jpg or .png pictures in {folder}")
        ids = sorted({int(os.path.basename(p).split("_")[0]) for p in self.paths})
        self.label_of = {pid: i for i, pid in enumerate(ids)}
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        image = Image.open(path).convert("RGB")
        return self.transform(image), self.label_of[int(os.path.basename(path).split("_")[0])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of pictures")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    size = (args.height, args.width)
    transform = transforms.Compose([
        transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
        transforms.Pad(10),
        transforms.RandomCrop(size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    loader = DataLoader(Pictures(args.data, transform), batch_size=args.batch_size, shuffle=True,
                        drop_last=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0)
    for _ in loader:  # warm-up: starts the workers
        pass
    images = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        for batch, _labels in loader:
            images += batch.shape[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"images": images, "seconds": seconds, "images_per_second": images / seconds}))


if __name__ == "__main__":
    main()
