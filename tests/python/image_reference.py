"""Writes the reference data of tests/test_image.cpp into the folder given as argv[1].

Real photographs (Debian's python3-skimage sample images), cut to person-like tall crops,
saved as JPEG (colour, grey, progressive, 4:4:4) and PNG (RGB, grey, grey+alpha, RGBA,
palette, 16-bit), then decoded and transformed by PIL and torchvision:

- pictures/<name>: the files;
- manifest.json: the file names, the resize sizes, the colour factors, the broken files;
- reference.pt: a plain dict of tensors: decoded/<file> (PIL convert('RGB'), uint8 HWC),
  resized/<bicubic|bilinear>/<file>/<h>x<w> (torchvision Resize, uint8 HWC), eval/<file> (Resize,
  ToTensor, Normalize; float CHW), eval_half/<file> (Normalize(0.5, 0.5)), eval_fastreid/<file>
  (fast-reid's pixel_mean and pixel_std on 0..255), pad_crop_flip/<file> (Resize, Pad(10), crop at (3, 17),
  hflip; uint8 HWC), brightness|contrast|saturation/<file>/<factor> (uint8 HWC).
"""
import io
import json
import os
import sys

import numpy as np
import skimage.data
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
RESIZE_SIZES = [(256, 128), (64, 32), (384, 192), (100, 37), (128, 64)]
FACTORS = [0.5, 0.9, 0.93, 1.07, 1.1, 1.5]


def crops():
    """Person-like (tall) crops of photographs, (name, uint8 HWC or HW array)."""
    return [
        ("astronaut", skimage.data.astronaut()[0:512, 120:376]),    # 512x256: downscale x2
        ("coffee", skimage.data.coffee()[40:340, 210:353]),         # 300x143: odd ratios
        ("chelsea", skimage.data.chelsea()[60:188, 180:244]),       # 128x64: Market's size
        ("rocket", skimage.data.rocket()[0:427, 260:461]),          # 427x201
        ("camera", skimage.data.camera()[60:460, 200:400]),         # grey 400x200
    ]


def save_variants(name, array, folder):
    """Saves one crop in several encodings; returns the file names."""
    files = []
    image = Image.fromarray(array)
    rgb = image.convert("RGB")

    def save(suffix, picture, **options):
        file = f"{name}{suffix}"
        picture.save(os.path.join(folder, file), **options)
        files.append(file)

    save(".jpg", image, quality=90)
    if image.mode == "RGB":
        save("_q75_444.jpg", rgb, quality=75, subsampling=0)
        save("_progressive.jpg", rgb, quality=85, progressive=True)
        save("_grey.jpg", rgb.convert("L"), quality=90)
        save("_rgb.png", rgb)
        save("_grey.png", rgb.convert("L"))
        alpha = Image.fromarray(
            np.tile(np.linspace(0, 255, array.shape[1]).astype(np.uint8), (array.shape[0], 1)))
        rgba = rgb.copy()
        rgba.putalpha(alpha)
        save("_rgba.png", rgba)
        la = rgb.convert("L")
        la.putalpha(alpha)
        save("_la.png", la)
        palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        save("_palette.png", palette)
        # Transparency chunks (tRNS), which convert('RGB') ignores.
        save("_palette_trns.png", palette, transparency=0)
        save("_rgb_trns.png", rgb, transparency=(0, 0, 0))
        save("_grey_trns.png", rgb.convert("L"), transparency=0)
        # Cut after the image data (no IEND chunk): PIL still reads it.
        with open(os.path.join(folder, f"{name}_rgb.png"), "rb") as f:
            complete = f.read()
        with open(os.path.join(folder, f"{name}_no_iend.png"), "wb") as f:
            f.write(complete[:-12])
        files.append(f"{name}_no_iend.png")
        # 16-bit grey: PIL opens it as mode "I" and clips to 0..255 in convert('RGB').
        grey = np.asarray(rgb.convert("L")).astype(np.uint16)
        save("_grey16.png", Image.fromarray(grey * 3))
        # 16 bits per sample: PIL keeps the high byte of each RGB sample.
        deep = (array.astype(np.uint16) * 257 + 3).byteswap().tobytes()
        with open(os.path.join(folder, f"{name}_rgb16.png"), "wb") as out:
            out.write(png_rgb16(array.shape[1], array.shape[0], deep))
        files.append(f"{name}_rgb16.png")
    else:
        save(".png", image)
    return files


def png_rgb16(width, height, big_endian_samples):
    """A 16-bit RGB PNG written by hand (PIL cannot write one)."""
    import struct
    import zlib

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = width * 6
    raw = b"".join(b"\x00" + big_endian_samples[y * row:(y + 1) * row] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def broken_files(folder, good_jpeg, good_png):
    """Files PIL refuses; returns their names after checking that PIL does refuse them."""
    names = {}
    with open(good_jpeg, "rb") as f:
        jpeg = f.read()
    with open(good_png, "rb") as f:
        png = f.read()
    names["truncated.jpg"] = jpeg[: len(jpeg) // 2]
    names["truncated.png"] = png[: len(png) // 2]
    corrupt = bytearray(png)
    corrupt[len(png) // 2] ^= 0xFF  # breaks the IDAT checksum
    names["corrupt.png"] = bytes(corrupt)
    names["not_an_image.jpg"] = b"this is a text file, not a picture\n"
    names["empty.png"] = b""
    names["header_only.jpg"] = jpeg[:20]
    for name, data in names.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        try:
            Image.open(path).convert("RGB")
        except Exception:  # noqa: BLE001 - any refusal will do
            continue
        raise SystemExit(f"PIL unexpectedly accepts {name}")
    return sorted(names)


def main():
    out = sys.argv[1]
    pictures = os.path.join(out, "pictures")
    os.makedirs(pictures, exist_ok=True)
    files = []
    for name, array in crops():
        files += save_variants(name, np.ascontiguousarray(array), pictures)

    tensors = {}
    resize_files = [f for f in files if f.endswith(".jpg") or f.endswith("_rgba.png")
                    or f.endswith("_palette.png") or f == "camera.png"]
    colour_files = ["astronaut.jpg", "coffee.jpg", "chelsea.jpg"]
    normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    FASTREID_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    FASTREID_STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    for file in files:
        image = Image.open(os.path.join(pictures, file)).convert("RGB")
        tensors[f"decoded/{file}"] = torch.from_numpy(np.array(image))
        if file in resize_files:
            for h, w in RESIZE_SIZES:
                for mode in (InterpolationMode.BICUBIC, InterpolationMode.BILINEAR):
                    resized = transforms.Resize((h, w), interpolation=mode)(image)
                    tensors[f"resized/{mode.value}/{file}/{h}x{w}"] = torch.from_numpy(np.array(resized))
            evaluated = normalize(
                transforms.Resize((256, 128), interpolation=InterpolationMode.BICUBIC)(image))
            tensors[f"eval/{file}"] = evaluated
            # Other families' normalisations: TransReID's and CLIP-ReID's mean = std = 0.5,
            # and fast-reid's float 0..255 pixels less pixel_mean, over pixel_std.
            resized_eval = transforms.Resize((256, 128), interpolation=InterpolationMode.BICUBIC)(image)
            tensors[f"eval_half/{file}"] = transforms.Compose(
                [transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])(resized_eval)
            pixels = torch.from_numpy(np.array(resized_eval)).permute(2, 0, 1).float()
            tensors[f"eval_fastreid/{file}"] = pixels.sub(FASTREID_MEAN).div(FASTREID_STD)
            # Pad(10) -> crop at (3, 17) -> hflip, the train transform with fixed draws.
            resized = transforms.Resize((256, 128), interpolation=InterpolationMode.BICUBIC)(image)
            shifted = F.hflip(F.crop(F.pad(resized, 10), 3, 17, 256, 128))
            tensors[f"pad_crop_flip/{file}"] = torch.from_numpy(np.array(shifted))
        if file in colour_files:
            for factor in FACTORS:
                for kind, function in (("brightness", F.adjust_brightness),
                                       ("contrast", F.adjust_contrast),
                                       ("saturation", F.adjust_saturation)):
                    adjusted = function(image, factor)
                    tensors[f"{kind}/{file}/{factor}"] = torch.from_numpy(np.array(adjusted))

    broken = broken_files(pictures, os.path.join(pictures, "chelsea.jpg"),
                          os.path.join(pictures, "chelsea_rgb.png"))
    torch.save(tensors, os.path.join(out, "reference.pt"))
    manifest = {"files": files, "resize_files": resize_files, "resize_sizes": RESIZE_SIZES,
                "colour_files": colour_files, "factors": FACTORS, "broken": broken}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
