"""A tracker's Python ReID loop over a MOTChallenge sequence, timed: per frame, the picture
opened with PIL, a PIL crop per det.txt box (clamped to the frame as reidnet-embed clamps it),
each crop resized as BoxMOT does for torchreid's models (cv2.resize, INTER_LINEAR) to 256x128,
ToTensor and Normalize, then one batch per frame through torchreid's osnet_x0_25 in eval mode
and L2-normalised.

    python3 benchmarks/embed_reference.py --write-weights osnet.pth          # the shared model
    python3 benchmarks/embed_reference.py --weights osnet.pth --mot SEQ [--compare SEQ.npy]

Prints one JSON line: {"frames", "crops", "seconds", "crops_per_second"}, timed from the first
frame to the last as reidnet-embed's progress times itself (model building is not timed); with --compare, also the largest difference between
its features and those reidnet-embed wrote to SEQ.npy.
"""
import argparse
import json
import math
import os
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import osnet_models  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def model_with(weights):
    model = osnet_models.build("osnet_x0_25", num_classes=751)
    if weights:
        model.load_state_dict(torch.load(weights, map_location="cpu"))
    return model.eval()


def pixels_of(box, height, width):
    x, y, w, h = box
    edge = lambda value, limit: min(max(math.floor(value), 0), limit)  # noqa: E731
    left, right = edge(x, width), edge(x + w, width)
    top, bottom = edge(y, height), edge(y + h, height)
    return (left, top, right, bottom) if right > left and bottom > top else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write-weights")
    parser.add_argument("--weights")
    parser.add_argument("--mot")
    parser.add_argument("--compare")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.write_weights:
        torch.manual_seed(0)
        torch.save(model_with(None).state_dict(), args.write_weights)
        return
    model = model_with(args.weights)
    rows = np.loadtxt(os.path.join(args.mot, "det", "det.txt"), delimiter=",", ndmin=2)
    frames = sorted({int(f) for f in rows[:, 0]})
    features = np.zeros((len(rows), 512), np.float32)
    order = np.argsort(rows[:, 0], kind="stable")
    rows_of = {frame: [] for frame in frames}
    for i in order:
        rows_of[int(rows[i, 0])].append(i)
    crops = 0
    start = time.perf_counter()
    for frame in frames:
        picture = Image.open(os.path.join(args.mot, "img1", f"{frame:06d}.jpg")).convert("RGB")
        indices = rows_of[frame]
        batch, kept = [], []
        for i in indices:
            pixels = pixels_of(rows[i, 2:6], picture.height, picture.width)
            if pixels is None:
                continue
            crop = np.asarray(picture.crop(pixels))
            resized = cv2.resize(crop, (128, 256), interpolation=cv2.INTER_LINEAR)
            batch.append(TF.normalize(TF.to_tensor(resized), MEAN, STD))
            kept.append(i)
        if batch:
            with torch.inference_mode():
                features[kept] = F.normalize(model(torch.stack(batch)), dim=1).numpy()
        crops += len(indices)
    seconds = time.perf_counter() - start
    result = {"frames": len(frames), "crops": crops, "seconds": round(seconds, 3),
              "crops_per_second": round(crops / seconds, 2)}
    if args.compare:
        written = np.load(args.compare, allow_pickle=False)
        result["max_feature_difference"] = float(np.abs(written[:, rows.shape[1]:] - features[order]).max())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
