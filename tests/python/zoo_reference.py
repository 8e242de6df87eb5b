"""Writes the reference data of the other model families (zoo_models.py) into argv[1]:

- keys.json: for every configuration, the state_dict as [key, shape] in order, plus the
  parameter count (class_num 751, droprate 0.5);
- forward.pt: a plain dict of tensors: the input, every configuration's weights (class_num 10,
  randomised norms) and its eval-mode logits, embedding, metric feature and flip-sum test
  feature, as the baseline's test.py / fast-reid's inference compute them; the full-size
  transformers' weights are not stored but drawn from a seed on both sides (fill_synthetic),
  and they run on an input of their own size;
- training.pt: three SGD steps of every configuration from those weights (losses, a
  [sum, sum of squares] fingerprint of every state entry, and the trained head entries);
- fastreid_new.pth / fastreid_old.pth / fastreid.pt: fast-reid checkpoints of the BoT model
  (current layout, and the older one with pixel_mean / pixel_std in the model dict), with the
  embedding fast-reid's inference returns for 0-255 images;
- python_<family>.pth: plain torch.save(model.state_dict()) files (OSNet's: torchreid's
  checkpoint layout, and BoxMOT's {'model_state_dict'}), with python_outputs.pt holding the
  matching embeddings;
- imagenet_<variant>.pth: the unmodified upstream network of each smaller wrapped variant
  (its ImageNet classifier included), as a published ImageNet file holds it, and
  imagenet_<variant>_original.pth where the network's first publisher used other keys
  (ConvNeXt's facebookresearch files) or older versions of the project another layout (timm's
  Swin files with their index and mask buffers, DINOv3's original release);
  imagenet224_vit_reduced.pth, a ViT file for 224x224 whose position table the test resamples,
  with imagenet224.pt holding the features of the reduced ViT it loads into.
"""
import collections
import contextlib
import copy
import json
import math
import os
import sys

# Idle OpenMP threads sleep instead of spinning: on a machine busy with other work (a parallel
# build or test run) spinning threads make each step an order of magnitude slower. Set before
# torch loads its OpenMP runtime; the numbers are the same either way.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

import convnext_models  # noqa: E402
import efficientnet_models  # noqa: E402
import eva_models  # noqa: E402
import hrnet_models  # noqa: E402
import nasnet_models  # noqa: E402
import osnet_models  # noqa: E402
import swin_models  # noqa: E402
import swinv2_models  # noqa: E402
import vit_models  # noqa: E402
from zoo_models import (BASELINE_INPUT_SIZES, BASELINE_WRAPPERS, PCB,  # noqa: E402
                        BaselineWrapper, BnneckNet, BnneckWrapper, FtNetDense, FtNetIbn,
                        FtNetUsam, randomize_batchnorm_statistics, randomize_instancenorm_affine,
                        resnet50_ibn_a)

CONFIGS = [
    "ft_net_dense/stride=2/linear_num=512",
    "ft_net_dense/stride=1/linear_num=512",
    "ft_net_dense/stride=2/linear_num=0",
    "ft_net_ibn/stride=2/linear_num=512",
    "ft_net_ibn/stride=1/linear_num=0",
    "ft_net_usam/stride=2/linear_num=512",
    "ft_net_usam/stride=1/linear_num=512",
    "ft_net_usam_ibn/stride=1/linear_num=512",
    "pcb/stride=1/linear_num=256",
    "bnneck/stride=1/pool=avg",
    "bnneck/stride=1/pool=max",
    "bnneck/stride=1/pool=gem",
    "bnneck/stride=1/pool=gem_fixed",
    "bnneck/stride=2/pool=gem",
    "bnneck_ibn/stride=1/pool=gem",
    # torchreid's OSNets: every name; its fc width is linear_num (0: no fc block).
    "osnet_x1_0/stride=2/linear_num=512",
    "osnet_x0_75/stride=2/linear_num=512",
    "osnet_x0_5/stride=2/linear_num=512",
    "osnet_x0_25/stride=2/linear_num=512",
    "osnet_x0_25/stride=2/linear_num=0",
    "osnet_ibn_x1_0/stride=2/linear_num=512",
    "osnet_ain_x1_0/stride=2/linear_num=512",
    "osnet_ain_x0_75/stride=2/linear_num=512",
    "osnet_ain_x0_5/stride=2/linear_num=512",
    "osnet_ain_x0_25/stride=2/linear_num=512",
    # The baseline's wrappers of other projects' networks, at full size (forward only), and a
    # smaller variant of each network's code under the registered ClassBlock head (forward and
    # training).
    "ft_net_convnext/stride=2/linear_num=512",
    "convnext_tiny/stride=2/linear_num=512",
    "ft_net_hr/stride=2/linear_num=512",
    "hrnet_w18_small/stride=2/linear_num=512",
    "ft_net_efficient/stride=2/linear_num=512",
    "efficientnet-b0/stride=2/linear_num=512",
    "ft_net_nas/stride=2/linear_num=512",
    "nasnet_a_tiny/stride=2/linear_num=512",
    # The baseline's transformers, and ViT-B/16 with TransReID's overlapping patches, at full
    # size (forward only, on drawn weights), and a reduced configuration of each network's code
    # (forward and training), with the class-token feature and BNNeck + GeM on a ViT.
    "ft_net_swin/stride=2/linear_num=512",
    "swin_reduced/stride=2/linear_num=512",
    "ft_net_swinv2/stride=2/linear_num=512",
    "swinv2_reduced/stride=2/linear_num=512",
    "ft_net_dino/stride=2/linear_num=512",
    "dinov3_reduced/stride=2/linear_num=512",
    "vit_base_patch16/stride=2/linear_num=512/patch_stride=12",
    "vit_reduced/stride=2/linear_num=512/patch_stride=12",
    "vit_reduced/stride=2/linear_num=512/pool=token",
    "vit_reduced/stride=2/pool=gem/head=bnneck",
]

# family -> (reference module, variant): the baseline's wrappers, and smaller variants of the
# same networks by name, under the ClassBlock head (the same wrapper).
WRAPPED = dict(BASELINE_WRAPPERS, **{
    "convnext_tiny": (convnext_models, "convnext_tiny"),
    "hrnet_w18_small": (hrnet_models, "hrnet_w18_small"),
    "efficientnet-b0": (efficientnet_models, "efficientnet-b0"),
    "nasnet_a_tiny": (nasnet_models, "nasnet_a_tiny"),
    "swin_reduced": (swin_models, "swin_reduced"),
    "swinv2_reduced": (swinv2_models, "swinv2_reduced"),
    "dinov3_reduced": (eva_models, "dinov3_reduced"),
    "vit_reduced": (vit_models, "vit_reduced"),
    "vit_base_patch16": (vit_models, "vit_base_patch16_224"),
})
# The reduced configurations of the transformers' code (registered by the C++ test).
REDUCED_TRANSFORMERS = ("swin_reduced", "swinv2_reduced", "dinov3_reduced", "vit_reduced")
# The input sizes the networks are built for where they depend on it (the reduced ones: the
# shared 128x64 input's).
INPUT_SIZES = dict(BASELINE_INPUT_SIZES, vit_base_patch16=(256, 128))
# Full-size transformers: weights drawn from a seed on both sides (fill_synthetic) rather than
# stored, each on an input of its size.
SYNTHETIC = {"ft_net_swin/stride=2/linear_num=512", "ft_net_swinv2/stride=2/linear_num=512",
             "ft_net_dino/stride=2/linear_num=512",
             "vit_base_patch16/stride=2/linear_num=512/patch_stride=12"}
# Full-size networks: keys, shapes and one eval forward; their training steps are run on the
# smaller variants of the same code.
FORWARD_ONLY = {f"{family}/stride=2/linear_num=512" for family in BASELINE_WRAPPERS} | SYNTHETIC

# The python_<family>.pth files and the configuration each one holds.
PYTHON_FILES = {
    "dense": "ft_net_dense/stride=2/linear_num=512",
    "ibn": "ft_net_ibn/stride=2/linear_num=512",
    "usam": "ft_net_usam/stride=2/linear_num=512",
    "pcb": "pcb/stride=1/linear_num=256",
    "bnneck": "bnneck/stride=1/pool=gem",
    "osnet_ain": "osnet_ain_x0_25/stride=2/linear_num=512",
    "osnet_boxmot": "osnet_x0_25/stride=2/linear_num=512",
    "convnext": "convnext_tiny/stride=2/linear_num=512",
    "hrnet": "hrnet_w18_small/stride=2/linear_num=512",
    "efficientnet": "efficientnet-b0/stride=2/linear_num=512",
    "nasnet": "nasnet_a_tiny/stride=2/linear_num=512",
    "swin": "swin_reduced/stride=2/linear_num=512",
    "swinv2": "swinv2_reduced/stride=2/linear_num=512",
    "dinov3": "dinov3_reduced/stride=2/linear_num=512",
    "vit": "vit_reduced/stride=2/linear_num=512/patch_stride=12",
}
# The files written in torchreid's save_checkpoint layout, and in BoxMOT's
# {'model_state_dict': ...} one, rather than as a plain state_dict.
TORCHREID_FILES = {"osnet_ain"}
BOXMOT_FILES = {"osnet_boxmot"}
FASTREID_CONFIG = "bnneck/stride=1/pool=gem"
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]
GEM_P = 3.5
TRIPLET_MARGIN = 0.3


def parse(name):
    family, *options = name.split("/")
    return family, dict(option.split("=") for option in options)


def is_bnneck(name):
    """fast-reid's BoT: the bnneck family, or its head on a named backbone."""
    family, options = parse(name)
    return family.startswith("bnneck") or options.get("head") == "bnneck"


@contextlib.contextmanager
def uninitialised():
    """Construction without the random initialisation (torch.nn.init calls do nothing), for
    models that are only described or whose every entry is loaded right after."""
    names = ["uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
             "kaiming_uniform_", "kaiming_normal_"]
    saved = {n: getattr(nn.init, n) for n in names}
    for n in names:
        setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, function in saved.items():
            setattr(nn.init, n, function)


def build(name, class_num, droprate=0.5, initialise=True):
    """The configuration's model, constructed from a fixed random state of its own, so that
    every run (and every class_num / droprate variant) starts from the same initialisation."""
    if not initialise:
        with uninitialised():
            return build(name, class_num, droprate)
    torch.manual_seed(1000 + CONFIGS.index(name))
    family, options = parse(name)
    stride = int(options["stride"])
    if family == "ft_net_dense":
        return FtNetDense(class_num, droprate, stride, int(options["linear_num"]))
    if family == "ft_net_ibn":
        return FtNetIbn(class_num, droprate, stride, int(options["linear_num"]))
    if family in ("ft_net_usam", "ft_net_usam_ibn"):
        return FtNetUsam(class_num, droprate, stride, int(options["linear_num"]),
                         ibn=family == "ft_net_usam_ibn")
    if family == "pcb":
        return PCB(class_num, droprate)
    if family in ("bnneck", "bnneck_ibn"):
        return BnneckNet(class_num, options["pool"], stride, ibn=family == "bnneck_ibn")
    if is_osnet(name):
        width = int(options["linear_num"])
        return osnet_models.build(family, class_num, feature_dim=width or None)
    if family in WRAPPED:
        upstream, variant = WRAPPED[family]
        network = {}
        if family in INPUT_SIZES:
            network["img_size"] = INPUT_SIZES[family]
        if "patch_stride" in options:
            network["patch_stride"] = int(options["patch_stride"])
        if options.get("pool") == "token":
            network["class_token"] = True
        if options.get("head") == "bnneck":
            return BnneckWrapper(upstream, variant, class_num, options["pool"], **network)
        return BaselineWrapper(upstream, variant, class_num, droprate, int(options["linear_num"]),
                               **network)
    raise ValueError(name)


def is_osnet(name):
    return parse(name)[0] in osnet_models.VARIANTS


def backbone_kind(name):
    """The shared backbone weights of forward.pt (None: the model's own)."""
    if is_osnet(name) or parse(name)[0] in WRAPPED:
        return None
    family = parse(name)[0]
    if family == "ft_net_dense":
        return "densenet121"
    if family in ("ft_net_ibn", "ft_net_usam_ibn", "bnneck_ibn"):
        return "resnet50_ibn_a"
    return "resnet50"


def backbone_prefix(name):
    if is_osnet(name):
        return ""  # torchreid's keys are flat
    return "backbone." if is_bnneck(name) else "model."


def backbone_parameters(name, model):
    """The backbone group of the optimizer: `model` (with USAM's modules), `backbone`, or
    OSNet's conv1..conv5."""
    if is_osnet(name):
        head = {id(p) for p in model.classifier.parameters()}
        if model.fc is not None:
            head |= {id(p) for p in model.fc.parameters()}
        return [p for p in model.parameters() if id(p) not in head]
    if isinstance(model, (BnneckNet, BnneckWrapper)):
        return list(model.backbone.parameters())
    params = list(model.model.parameters())
    if isinstance(model, FtNetUsam):
        params += list(model.usam_1.parameters()) + list(model.usam_2.parameters())
    return params


def first_conv_key(name, model):
    if is_osnet(name):
        return "conv1.conv.weight"
    if isinstance(model, BaselineWrapper):
        return "model." + next(iter(model.model.state_dict()))
    if isinstance(model, BnneckWrapper):
        return "backbone." + next(iter(model.backbone.state_dict()))
    return backbone_prefix(name) + (
        "features.conv0.weight" if backbone_kind(name) == "densenet121" else "conv1.weight")


def describe(module):
    return {
        "keys": [[k, list(v.shape)] for k, v in module.state_dict().items()],
        "parameters": sum(p.numel() for p in module.parameters()),
    }


# --------------------------------------------------------------------------------------------
# Outputs as the baseline's test.py and fast-reid compute them
# --------------------------------------------------------------------------------------------
def evaluate(name, model, x):
    """(logits list, embedding, metric feature) of an eval-mode model."""
    family = parse(name)[0]
    if is_osnet(name):
        v = model(x)  # torchreid's eval output
        return [model.classifier(v)], v, v
    if family == "pcb":
        logits = model(x)
        parts = model.pcb_parts(x)
        embedding = parts.reshape(parts.size(0), -1)  # index = channel * 6 + part
        return logits, embedding, embedding
    if is_bnneck(name):
        logits, e, f = model(x)
        return [logits], e, f
    pooled = model.features(x)
    embedding = model.classifier.add_block(pooled)
    return [model.classifier.classifier(embedding)], embedding, embedding


def test_feature(name, model, x, embedding):
    """The baseline's extract_feature for one batch (embedding = that of x): flip-sum, then
    L2-normalised (per part, times sqrt(6), for PCB)."""
    ff = embedding + evaluate(name, model, x.flip(3))[1]
    if parse(name)[0] == "pcb":
        ff = ff.reshape(ff.size(0), -1, PCB.part)  # back to (B, 2048, 6)
        ff = ff / (ff.norm(p=2, dim=1, keepdim=True) * math.sqrt(PCB.part))
        return ff.reshape(ff.size(0), -1)
    return ff / ff.norm(p=2, dim=1, keepdim=True)


def batch_hard_triplet(f, labels, margin):
    """Hardest positive minus hardest negative plus margin, relu, mean over anchors."""
    distances = (f.unsqueeze(1) - f.unsqueeze(0)).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    positive = same & ~torch.eye(len(labels), dtype=torch.bool)
    hardest_positive = distances.masked_fill(~positive, float("-inf")).max(1).values
    hardest_negative = distances.masked_fill(same, float("inf")).min(1).values
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def training_loss(name, model, x, labels):
    family = parse(name)[0]
    if family == "pcb":
        return sum(F.cross_entropy(logits, labels) for logits in model(x))
    if is_bnneck(name):
        logits, _, f = model(x)
        return F.cross_entropy(logits, labels) + batch_hard_triplet(f, labels, TRIPLET_MARGIN)
    return F.cross_entropy(model(x), labels)


# --------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------
def key_references():
    return {name: describe(build(name, 751, 0.5, initialise=False)) for name in CONFIGS}


def calibrate_usam(model, x, generator):
    """Running statistics of the USAM BatchNorms near those of the input's own attention map.
    Random statistics of order 1 against a channel-sum map of order 100 would scale the
    features by about 100 at each USAM; these keep the outputs in the range of the other
    families while every term stays exercised."""
    m = model.model
    h = m.relu(m.bn1(m.conv1(x)))
    for usam in (model.usam_1, model.usam_2):
        fmap = h.sum(1, keepdim=True)
        att = F.conv2d(fmap, usam.weight2) - F.conv2d(fmap, usam.weight, padding=usam.pad)
        shift = float(torch.randn(1, generator=generator)) * 0.1
        scale = float(torch.rand(1, generator=generator)) * 0.5 + 0.75
        usam.bn.running_mean.fill_(float(att.mean()) + shift * float(att.std()))
        usam.bn.running_var.fill_(float(att.var()) * scale)
        h = m.layer1(m.maxpool(usam(h))) if usam is model.usam_1 else h


def randomize_layer_norms_and_scales(model, generator):
    """LayerNorm affines near 1 / 0 and layer scales (`gamma`, 1e-6 at init, which would mute
    every residual branch) of order 0.1, so that every term of the blocks shows in the output."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        for key, value in model.named_parameters():
            if key.rsplit(".", 1)[-1].startswith("gamma"):  # ConvNeXt's gamma, Eva's gamma_1/2
                value.copy_(0.1 + 0.2 * torch.rand(value.shape, generator=generator))


def fill_synthetic(model, seed):
    """Every floating entry of the state_dict, in order, drawn from torch's generator seeded with
    `seed`, which the C++ test seeds alike (LibTorch's generator draws the same numbers):
    N(0, 1 / fan_in) for matrices and kernels, 1 + N(0, 0.1) for norm weights, 0.5 + N(0, 0.1)
    for layer scales, 0.5 + |N(0, 0.5)| for running variances, N(0, 0.02) for the rest."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            draw = torch.empty(value.shape).normal_()
            last = key.rsplit(".", 1)[-1]
            if last == "running_var":
                filled = 0.5 + 0.5 * draw.abs()
            elif value.dim() >= 2:
                filled = draw / math.sqrt(value[0].numel())
            elif last == "weight":
                filled = 1 + 0.1 * draw
            elif "gamma" in last:
                filled = 0.5 + 0.1 * draw
            else:
                filled = 0.02 * draw
            value.copy_(filled)


def base_backbones(generator):
    """One set of backbone weights per kind, shared by every configuration of that kind, so
    that forward.pt stores each backbone tensor once."""
    builders = {
        "resnet50": torchvision.models.resnet50,
        "resnet50_ibn_a": resnet50_ibn_a,
        "densenet121": torchvision.models.densenet121,
    }
    bases = {}
    for i, (kind, make) in enumerate(builders.items()):
        torch.manual_seed(100 + i)
        module = make()
        randomize_batchnorm_statistics(module, generator)
        randomize_instancenorm_affine(module, generator)
        bases[kind] = module.state_dict()
    return bases


def forward_references():
    """Returns (tensors for forward.pt, {config: state_dict whose backbone entries are the
    shared tensors}, {config: eval model} for the configurations reused by later files)."""
    generator = torch.Generator().manual_seed(20261127)
    tensors = {}
    image = torch.randn(2, 3, 128, 64, generator=generator)
    tensors["input"] = image
    bases = base_backbones(generator)
    states, kept = {}, {}
    with torch.no_grad():
        for name in CONFIGS:
            if name in SYNTHETIC:
                model = build(name, 10, 0.5, initialise=False).eval()
                seed = 5000 + CONFIGS.index(name)
                fill_synthetic(model, seed)
                tensors[f"{name}/synthetic_seed"] = torch.tensor(seed)
                x = torch.randn(1, 3, *INPUT_SIZES[parse(name)[0]], generator=generator)
                tensors[f"{name}/input"] = x
                logits, embedding, metric = evaluate(name, model, x)
                tensors[f"{name}/logits/0"] = logits[0]
                tensors[f"{name}/embedding"] = embedding
                tensors[f"{name}/metric_feature"] = metric
                tensors[f"{name}/test_feature"] = test_feature(name, model, x, embedding)
                del model
                continue
            model = build(name, 10, 0.5).eval()
            randomize_batchnorm_statistics(model, generator)
            randomize_instancenorm_affine(model, generator)
            if parse(name)[1].get("pool") == "gem":
                model.heads.pool_layer.p.fill_(GEM_P)
            base, prefix = bases.get(backbone_kind(name), {}), backbone_prefix(name)
            if base:
                backbone = model.backbone if isinstance(model, BnneckNet) else model.model
                own = backbone.state_dict()
                backbone.load_state_dict({k: base[k] for k in own}, strict=True)
            if isinstance(model, FtNetUsam):
                calibrate_usam(model, image, generator)
            randomize_layer_norms_and_scales(model, generator)

            state = collections.OrderedDict()
            for key, value in model.state_dict().items():
                if key.startswith(prefix) and key[len(prefix):] in base:
                    shared = base[key[len(prefix):]]
                    assert torch.equal(shared, value), key
                    value = shared
                state[key] = value
                tensors[f"{name}/state/{key}"] = value
            states[name] = state

            logits, embedding, metric = evaluate(name, model, image)
            for i, part in enumerate(logits):
                tensors[f"{name}/logits/{i}"] = part
            tensors[f"{name}/embedding"] = embedding
            tensors[f"{name}/metric_feature"] = metric
            tensors[f"{name}/test_feature"] = test_feature(name, model, image, embedding)
            if name in PYTHON_FILES.values() or name == FASTREID_CONFIG:
                kept[name] = model
    return tensors, states, kept


def training_batch():
    generator = torch.Generator().manual_seed(4242)
    return torch.randn(4, 3, 128, 64, generator=generator), torch.tensor([0, 0, 1, 1])


def training_dtype(name):
    """float64 for the OSNets and NASNet: in float32 their second and third losses move by
    percents with the rounding of a single sum (PyTorch's own, from one thread to two), so no
    implementation could be held to them; in float64 they agree to 1e-11. The transformers too:
    LibTorch 2.x's fused attention rounds otherwise than the unfused arithmetic, and the small
    sums of some weights (a class-token model's qkv bias) carry it to 1e-4 in float32."""
    float64 = ("nasnet_a_tiny",) + REDUCED_TRANSFORMERS
    return torch.float64 if is_osnet(name) or parse(name)[0] in float64 else torch.float32


def training_references(states):
    x, labels = training_batch()
    tensors = {"train_input": x, "train_labels": labels}
    for name in CONFIGS:
        if name in FORWARD_ONLY:
            continue
        model = build(name, 10, 0.0, initialise=False)
        model.load_state_dict(states[name], strict=True)
        model.train().to(training_dtype(name))
        backbone = backbone_parameters(name, model)
        in_backbone = {id(p) for p in backbone}
        head = [p for p in model.parameters() if id(p) not in in_backbone]
        sgd = torch.optim.SGD([{"params": backbone, "lr": 0.001}, {"params": head, "lr": 0.01}],
                              lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        losses = []
        for _ in range(3):
            sgd.zero_grad()
            loss = training_loss(name, model, x.to(training_dtype(name)), labels)
            loss.backward()
            sgd.step()
            losses.append(loss.item())
        tensors[f"{name}/losses"] = torch.tensor(losses, dtype=torch.float64)
        state = model.state_dict()
        tensors[f"{name}/fingerprint"] = torch.tensor(
            [[v.double().sum().item(), v.double().pow(2).sum().item()] for v in state.values()],
            dtype=torch.float64)
        prefix, first = backbone_prefix(name), first_conv_key(name, model)
        head_keys = ("fc.", "classifier.") if is_osnet(name) else ()
        for key, value in state.items():
            if not key.startswith(prefix) or key == first or key.startswith(head_keys):
                tensors[f"{name}/trained/{key}"] = value.clone()
    return tensors


def fastreid_files(model, out_dir):
    """fast-reid's checkpoint layout around the BoT model's state_dict."""
    x, labels = training_batch()
    trained = copy.deepcopy(model).train()
    sgd = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=0.00035,
                          momentum=0.9, weight_decay=5e-4)
    sgd.zero_grad()
    training_loss(FASTREID_CONFIG, trained, x, labels).backward()
    sgd.step()
    scheduler = {"last_epoch": 3, "base_lrs": [0.00035], "_step_count": 4, "verbose": False,
                 "_last_lr": [0.00035]}
    state = model.state_dict()
    torch.save({"model": state, "optimizer": sgd.state_dict(), "scheduler": scheduler,
                "iteration": 120}, os.path.join(out_dir, "fastreid_new.pth"))
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    old = collections.OrderedDict([("pixel_mean", mean), ("pixel_std", std)])
    old.update(state)
    torch.save({"model": old, "optimizer": sgd.state_dict(), "scheduler": scheduler,
                "iteration": 120}, os.path.join(out_dir, "fastreid_old.pth"))

    generator = torch.Generator().manual_seed(31337)
    images = torch.rand(2, 3, 128, 64, generator=generator) * 255
    with torch.no_grad():
        embedding = model.eval().embed((images - mean) / std)
    torch.save({"images255": images, "embedding": embedding},
               os.path.join(out_dir, "fastreid.pt"))


def torchreid_checkpoint(model, path):
    """torchreid's save_checkpoint layout, as written by a DataParallel-wrapped model trained
    with Adam: {'state_dict' ('module.' on every key), 'epoch', 'rank1', 'optimizer'}."""
    trained = copy.deepcopy(model).train()
    adam = torch.optim.Adam(trained.parameters(), lr=0.0003, weight_decay=5e-4)
    x, labels = training_batch()
    adam.zero_grad()
    F.cross_entropy(trained(x), labels).backward()
    adam.step()
    state = collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    torch.save({"state_dict": state, "epoch": 60, "rank1": 0.875, "optimizer": adam.state_dict()},
               path)


def original_convnext_keys(state):
    """A timm ConvNeXt state_dict in facebookresearch's spelling (which timm's checkpoint filter
    maps back): downsample_layers.S.I, stages.S.N, dwconv, pwconv1/2, norm, head."""
    import re
    renamed = collections.OrderedDict()
    for key, value in state.items():
        key = key.replace("stem.", "downsample_layers.0.")
        key = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.", r"stages.\1.", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        key = key.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        renamed[key] = value
    return renamed


def imagenet_files(out_dir, image):
    """The ImageNet-style files of the smaller wrapped variants; and a ViT file for 224x224,
    whose position table a model of another grid resamples, with the features of that model."""
    written = set()
    for name in CONFIGS:
        family = parse(name)[0]
        if family not in WRAPPED or name in FORWARD_ONLY or family in written:
            continue
        written.add(family)
        upstream, variant = WRAPPED[family]
        torch.manual_seed(77)
        net = upstream.create_imagenet(variant)
        state = net.state_dict()
        torch.save(state, os.path.join(out_dir, f"imagenet_{variant}.pth"))
        original = os.path.join(out_dir, f"imagenet_{variant}_original.pth")
        if upstream is convnext_models:
            torch.save(original_convnext_keys(state), original)
        elif upstream in (swin_models, swinv2_models):
            torch.save(upstream.old_timm_state_dict(net), original)
        elif upstream is eva_models:
            torch.save(eva_models.original_state_dict(net), original)

    torch.manual_seed(78)
    published = vit_models.create_imagenet("vit_reduced", img_size=(224, 224)).state_dict()
    torch.save(published, os.path.join(out_dir, "imagenet224_vit_reduced.pth"))
    reid = vit_models.create("vit_reduced", img_size=(128, 64), patch_stride=12)
    state = {k: v for k, v in published.items() if not k.startswith("head.")}
    grid = ((128 - 16) // 12 + 1, (64 - 16) // 12 + 1)
    state["pos_embed"] = vit_models.resample_abs_pos_embed(state["pos_embed"], grid)
    reid.load_state_dict(state, strict=True)
    with torch.no_grad():
        features = vit_models.features(reid.eval(), image)
    torch.save({"features": features, "pos_embed": state["pos_embed"]},
               os.path.join(out_dir, "imagenet224.pt"))


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    with open(os.path.join(out_dir, "keys.json"), "w") as f:
        json.dump(key_references(), f)

    forward, states, kept = forward_references()
    torch.save(forward, os.path.join(out_dir, "forward.pt"))

    outputs = {}
    for family, name in PYTHON_FILES.items():
        path = os.path.join(out_dir, f"python_{family}.pth")
        if family in TORCHREID_FILES:
            torchreid_checkpoint(kept[name], path)
        elif family in BOXMOT_FILES:
            torch.save({"model_state_dict": kept[name].state_dict(), "epoch": 12}, path)
        else:
            torch.save(kept[name].state_dict(), path)
        outputs[f"{family}/embedding"] = forward[f"{name}/embedding"]
    torch.save(outputs, os.path.join(out_dir, "python_outputs.pt"))
    fastreid_files(kept[FASTREID_CONFIG], out_dir)
    del kept
    imagenet_files(out_dir, forward["input"])

    torch.save(training_references(states), os.path.join(out_dir, "training.pt"))


if __name__ == "__main__":
    main()
