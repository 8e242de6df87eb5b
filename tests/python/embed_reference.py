"""Writes the reference data of tests/test_embed.cpp into the folder given as argv[1].

A frame made of photographs (Debian's python3-skimage samples), detection boxes in
MOTChallenge's x, y, w, h (inside, fractional, partly outside, larger than the frame, tiny,
and ones without pixels), and a small torchreid OSNet (osnet_x0_25, 8 ids, random weights and
BatchNorm statistics from a fixed seed); then what a tracker's Python loop gives for them:

- frame.png: the frame (lossless, so that both sides decode the same pixels);
- osnet.pth: the model's state_dict (torchreid's keys);
- reference.pt: a plain dict of tensors:
  boxes (N, 4) float32; pixels (N, 4) int64 top, left, bottom, right after clamping (-1 where
  the box has no pixel); and for each resize in RESIZES (opencv: cv2.resize INTER_LINEAR, as
  BoxMOT; pil_bilinear and pil_bicubic: PIL's Image.resize, as torchvision's Resize):
  inputs/<resize> (valid boxes, 3, 256, 128): the PIL crop resized, ToTensor, Normalize;
  embeddings/<resize> (N, 512): the model's eval output, L2-normalised, zero rows for boxes
  without pixels; opencv/<h>x<w>: cv2.resize(opencv_source, (w, h), INTER_LINEAR) of the uint8
  picture opencv_source;
- npy/*.npy: arrays numpy.save writes, for the reader's acceptance and refusals.
"""
import math
import os
import sys

import cv2
import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import osnet_models  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
HEIGHT, WIDTH = 256, 128
CLASSES = 8
RESIZES = ["opencv", "pil_bilinear", "pil_bicubic"]
NAN = float("nan")
# x, y, w, h; the frame is 576 x 768.
BOXES = [
    (100.0, 50.0, 256.0, 512.0),    # 512 x 256: an exact halving (OpenCV switches to INTER_AREA)
    (300.7, 20.2, 80.6, 190.3),     # fractional
    (-30.0, 400.0, 120.0, 300.0),   # partly outside: clamped left and below
    (-50.0, -60.0, 900.0, 700.0),   # larger than the frame
    (700.0, 10.0, 3.0, 5.0),        # tiny: upscaled
    (200.0, 200.0, 0.0, 50.0),      # zero width
    (NAN, 10.0, 20.0, 30.0),        # not finite
    (800.0, 10.0, 50.0, 50.0),      # wholly outside, right
    (10.0, 10.0, -5.0, 20.0),       # negative width
    (400.0, 300.0, 0.4, 30.0),      # no whole pixel column
    (500.5, 100.0, 60.0, 150.0),    # across the seam of two photographs
    (-10.0, -10.0, 5.0, 5.0),       # wholly outside, above left
]
OPENCV_SIZES = [(256, 128), (64, 32), (600, 350), (517, 128), (258, 150), (3, 2), (1, 1)]


def make_frame():
    frame = np.zeros((576, 768, 3), np.uint8)
    frame[:512, :512] = skimage.data.astronaut()
    frame[:400, 512:768] = skimage.data.coffee()[:400, 100:356]
    frame[512:576, :451] = skimage.data.chelsea()[100:164]
    return frame


def pixels_of(box, height, width):
    x, y, w, h = box
    if not all(math.isfinite(v) for v in box):
        return None
    left = min(max(math.floor(x), 0), width)
    right = min(max(math.floor(x + w), 0), width)
    top = min(max(math.floor(y), 0), height)
    bottom = min(max(math.floor(y + h), 0), height)
    if right <= left or bottom <= top:
        return None
    return top, left, bottom, right


def resized(crop, resize):
    if resize == "opencv":
        return Image.fromarray(cv2.resize(np.asarray(crop), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR))
    return crop.resize((WIDTH, HEIGHT), Image.BILINEAR if resize == "pil_bilinear" else Image.BICUBIC)


def make_model():
    torch.manual_seed(5)
    model = osnet_models.build("osnet_x0_25", num_classes=CLASSES)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def write_npy_files(out):
    folder = os.path.join(out, "npy")
    os.makedirs(folder, exist_ok=True)
    matrix = (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) / 3
    np.save(os.path.join(folder, "f4_2d.npy"), matrix)
    np.save(os.path.join(folder, "f8_1d.npy"), np.arange(5, dtype=np.float64) / 7)
    np.save(os.path.join(folder, "empty.npy"), np.zeros((0, 4), np.float32))
    np.save(os.path.join(folder, "fortran.npy"), np.asfortranarray(matrix))
    np.save(os.path.join(folder, "big_endian.npy"), matrix.astype(">f4"))
    np.save(os.path.join(folder, "int32.npy"), np.arange(6, dtype=np.int32).reshape(2, 3))
    np.save(os.path.join(folder, "three_d.npy"), np.zeros((2, 2, 2), np.float32))
    with open(os.path.join(folder, "version2.npy"), "wb") as file:
        np.lib.format.write_array(file, matrix, version=(2, 0))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    frame = make_frame()
    Image.fromarray(frame).save(os.path.join(out, "frame.png"))
    picture = Image.fromarray(frame)
    model = make_model()
    torch.save(model.state_dict(), os.path.join(out, "osnet.pth"))

    reference = {"boxes": torch.tensor(BOXES, dtype=torch.float32)}
    pixels = [pixels_of(box, frame.shape[0], frame.shape[1]) for box in BOXES]
    reference["pixels"] = torch.tensor([p if p else (-1, -1, -1, -1) for p in pixels], dtype=torch.int64)
    for resize in RESIZES:
        inputs = []
        for p in pixels:
            if p is None:
                continue
            top, left, bottom, right = p
            crop = picture.crop((left, top, right, bottom))
            inputs.append(TF.normalize(TF.to_tensor(resized(crop, resize)), MEAN, STD))
        batch = torch.stack(inputs)
        with torch.no_grad():
            features = F.normalize(model(batch), dim=1)
        embeddings = torch.zeros(len(BOXES), features.shape[1])
        embeddings[torch.tensor([p is not None for p in pixels])] = features
        reference["inputs/" + resize] = batch
        reference["embeddings/" + resize] = embeddings

    source = np.ascontiguousarray(frame[37:37 + 517, 11:11 + 301])
    reference["opencv_source"] = torch.from_numpy(source.copy())
    for h, w in OPENCV_SIZES:
        reference[f"opencv/{h}x{w}"] = torch.from_numpy(
            cv2.resize(source, (w, h), interpolation=cv2.INTER_LINEAR).copy())
    torch.save(reference, os.path.join(out, "reference.pt"))
    write_npy_files(out)


if __name__ == "__main__":
    main()
