"""torchreid_file.py write FILE | check DATA FILE FEATURES

write: a torchreid checkpoint of osnet_x0_25 with 12 identities (randomised norms), in the layout
  torchreid's save_checkpoint gives a DataParallel model trained with Adam
  ({'state_dict' with 'module.' keys, 'epoch', 'rank1', 'optimizer'}).
check: loads FILE as torchreid's load_pretrained_weights does (the state dict, 'module.'
  stripped), computes the query and gallery features of the Market-style data set DATA with
  torchreid's test transform (PIL images, Resize((256, 128)) with torchvision's default bilinear
  filter, ToTensor, ImageNet's Normalize) and the baseline's rule (the features of the picture
  and of its mirror image summed, L2-normalised), and compares them with reidnet's features
  file FEATURES (qf, gf), picture by picture in name order. Exits 0 when every feature is within
  1e-4, else prints the difference and exits 1.
"""
import glob
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402

import osnet_models  # noqa: E402
from zoo_models import randomize_batchnorm_statistics  # noqa: E402
from zoo_reference import torchreid_checkpoint  # noqa: E402

MODEL, CLASSES = "osnet_x0_25", 12
TOLERANCE = 1e-4


def write(path):
    torch.manual_seed(7)
    model = osnet_models.build(MODEL, CLASSES).eval()
    randomize_batchnorm_statistics(model, torch.Generator().manual_seed(8))
    torchreid_checkpoint(model, path)


def features(model, folder):
    transform = T.Compose([T.Resize((256, 128)), T.ToTensor(),
                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                   if p.lower().endswith((".jpg", ".jpeg", ".png")))
    images = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        f = model(images) + model(images.flip(3))
    return f / f.norm(dim=1, keepdim=True)


def check(data, path, features_path):
    checkpoint = torch.load(path, map_location="cpu")
    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in checkpoint["state_dict"].items()}
    model = osnet_models.build(MODEL, CLASSES)
    model.load_state_dict(state, strict=True)
    model.eval()
    reidnet = torch.load(features_path, map_location="cpu")
    worst = 0.0
    for key, folder in (("qf", "query"), ("gf", "bounding_box_test")):
        expected = features(model, os.path.join(data, folder))
        actual = reidnet[key]
        if actual.shape != expected.shape:
            print(f"{key}: reidnet {tuple(actual.shape)}, Python {tuple(expected.shape)}")
            return 1
        worst = max(worst, (actual - expected).abs().max().item())
    print(f"largest difference from Python's features: {worst:.3g}")
    return 0 if worst < TOLERANCE else 1


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "check":
        return check(*sys.argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
