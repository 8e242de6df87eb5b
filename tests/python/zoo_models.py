"""Python reference models of the other model families, built on Debian's torchvision.

- FtNetDense, PCB, FtNetUsam and FtNetIbn follow the Market-1501 baseline
  (Person_reID_baseline_pytorch, model.py): ft_net_dense, PCB / PCB_test, ft_net(usam=True)
  and ft_net(ibn=True);
- resnet50_ibn_a follows IBN-Net's ResNet-50-IBN-a (torchvision-style keys, IN/BN split in the
  bn1 of every Bottleneck of layer1..layer3);
- BnneckNet follows fast-reid's BoT model: a backbone without fc, then an EmbeddingHead with a
  global pool, a BatchNorm neck with a frozen bias and a bias-free classifier weight;
- BaselineWrapper follows the baseline's wrappers of other projects' networks
  (ft_net_swin, ft_net_swinv2, ft_net_dino, ft_net_convnext, ft_net_hr, ft_net_efficient,
  ft_net_NAS): the upstream network as `model`, its feature map average-pooled into a ClassBlock;
- BnneckWrapper is fast-reid's BoT head on such a network (`backbone`, `heads`).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import convnext_models
import efficientnet_models
import eva_models
import hrnet_models
import nasnet_models
import swin_models
import swinv2_models
from reference_models import ClassBlock, FtNet, randomize_batchnorm_statistics, set_last_stride

__all__ = ["ClassBlock", "FtNet", "randomize_batchnorm_statistics", "set_last_stride", "IBN",
           "resnet50_ibn_a", "FtNetDense", "FtNetIbn", "USAM", "FtNetUsam", "PCB", "GeM",
           "EmbeddingHead", "BnneckNet", "resnet_map",
           "randomize_instancenorm_affine", "BaselineWrapper", "BnneckWrapper", "BASELINE_WRAPPERS",
           "BASELINE_INPUT_SIZES"]


def resnet_map(m, x):
    """Stem and the four stages of a torchvision-style ResNet: the (B, 2048, h, w) map."""
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


# --------------------------------------------------------------------------------------------
# IBN-Net
# --------------------------------------------------------------------------------------------
class IBN(nn.Module):
    """IBN-Net's instance-batch normalisation: InstanceNorm on the first half of the channels,
    BatchNorm on the rest, outputs concatenated."""

    def __init__(self, planes, ratio=0.5):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        first, rest = torch.split(x, self.half, 1)
        return torch.cat((self.IN(first.contiguous()), self.BN(rest.contiguous())), 1)


def resnet50_ibn_a(num_classes=1000, last_stride=2):
    """IBN-Net's resnet50_ibn_a: torchvision's ResNet-50 (v1.5) with bn1 of every Bottleneck in
    layer1..layer3 replaced by IBN(planes); layer4 stays plain. IBN-Net initialises convs with
    N(0, sqrt(2 / (k * k * out_channels))) and norms with weight 1, bias 0, which is what
    torchvision's kaiming_normal_(fan_out) and the defaults of the new norms give."""
    model = torchvision.models.resnet50(num_classes=num_classes)
    for layer in (model.layer1, model.layer2, model.layer3):
        for block in layer:
            # Assigning an existing attribute keeps its place in the module order.
            block.bn1 = IBN(block.bn1.num_features)
    set_last_stride(model, last_stride)
    return model


def randomize_instancenorm_affine(module, generator):
    """Affine parameters of every InstanceNorm away from 1 / 0."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.InstanceNorm2d) and m.affine:
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)


# --------------------------------------------------------------------------------------------
# The baseline's families
# --------------------------------------------------------------------------------------------
class FtNetDense(nn.Module):
    """The baseline's ft_net_dense: DenseNet-121 whose features end in an appended global
    average pool (so torchvision's final ReLU is skipped), then ClassBlock(1024)."""

    def __init__(self, class_num, droprate=0.5, stride=2, linear_num=512):
        super().__init__()
        model = torchvision.models.densenet121()
        model.features.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        model.fc = nn.Sequential()
        if stride == 1:
            model.features.transition3.pool.stride = 1
        self.model = model
        self.classifier = ClassBlock(1024, class_num, droprate, linear=linear_num)

    def features(self, x):
        x = self.model.features(x)
        return x.view(x.size(0), x.size(1))

    def embed(self, x):
        return self.classifier.add_block(self.features(x))

    def forward(self, x):
        return self.classifier(self.features(x))


class FtNetIbn(nn.Module):
    """The baseline's ft_net(ibn=True): ft_net with IBN-Net's resnet50_ibn_a as `model`."""

    def __init__(self, class_num, droprate=0.5, stride=2, linear_num=512):
        super().__init__()
        model = resnet50_ibn_a(last_stride=stride)
        model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.model = model
        self.classifier = ClassBlock(2048, class_num, droprate, linear=linear_num)

    def features(self, x):
        x = self.model.avgpool(resnet_map(self.model, x))
        return x.view(x.size(0), x.size(1))

    def embed(self, x):
        return self.classifier.add_block(self.features(x))

    def forward(self, x):
        return self.classifier(self.features(x))


class USAM(nn.Module):
    """The baseline's USAM attention: a fixed 3x3 box filter against the centre pixel of the
    channel-sum map, BatchNorm and LeakyReLU, borders cleared ("polish"), x + att * x."""

    def __init__(self, kernel_size=3, padding=1, polish=True):
        super().__init__()
        kernel = torch.ones((kernel_size, kernel_size)).unsqueeze(0).unsqueeze(0)
        self.weight = nn.Parameter(data=kernel, requires_grad=False)
        kernel2 = (torch.ones((1, 1)) * (kernel_size * kernel_size)).unsqueeze(0).unsqueeze(0)
        self.weight2 = nn.Parameter(data=kernel2, requires_grad=False)
        self.polish = polish
        self.pad = padding
        self.relu = nn.LeakyReLU(0.1)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        fmap = x.sum(1, keepdim=True)
        x1 = F.conv2d(fmap, self.weight, padding=self.pad)
        x2 = F.conv2d(fmap, self.weight2, padding=0)
        att = self.relu(self.bn(x2 - x1))
        if self.polish:
            # The baseline zeroes the first/last rows and columns in place; a mask multiply
            # gives the same values and gradients.
            mask = torch.zeros_like(att)
            mask[:, :, 1:-1, 1:-1] = 1
            att = att * mask
        return x + att * x


class FtNetUsam(FtNet):
    """The baseline's ft_net(usam=True): usam_1 after the stem ReLU, usam_2 after layer1,
    both registered after `model` and `classifier`; ft_net(ibn=True, usam=True) with `ibn`,
    whose `model` is IBN-Net's resnet50_ibn_a."""

    def __init__(self, class_num, droprate=0.5, stride=2, linear_num=512, ibn=False):
        super().__init__(class_num, droprate, stride, linear_num)
        if ibn:
            model = resnet50_ibn_a(last_stride=stride)
            model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.model = model  # keeps its place, before `classifier`
        self.usam_1 = USAM()
        self.usam_2 = USAM()

    def features(self, x):
        m = self.model
        x = self.usam_1(m.relu(m.bn1(m.conv1(x))))
        x = self.usam_2(m.layer1(m.maxpool(x)))
        x = m.layer4(m.layer3(m.layer2(x)))
        x = m.avgpool(x)
        return x.view(x.size(0), x.size(1))


class PCB(nn.Module):
    """The baseline's PCB: ResNet-50 with layer4 at stride 1, six horizontal parts, one
    ClassBlock(2048, linear=256) per part."""

    part = 6

    def __init__(self, class_num, droprate=0.5):
        super().__init__()
        self.model = torchvision.models.resnet50()
        self.avgpool = nn.AdaptiveAvgPool2d((self.part, 1))
        self.dropout = nn.Dropout(p=droprate)
        self.model.layer4[0].downsample[0].stride = (1, 1)
        self.model.layer4[0].conv2.stride = (1, 1)
        for i in range(self.part):
            setattr(self, f"classifier{i}",
                    ClassBlock(2048, class_num, droprate, relu=False, bnorm=True, linear=256))

    def pooled(self, x):
        return self.avgpool(resnet_map(self.model, x))  # (B, 2048, 6, 1)

    def pcb_parts(self, x):
        """What the baseline's PCB_test returns: the (B, 2048, 6) part map, no dropout."""
        x = self.pooled(x)
        return x.view(x.size(0), x.size(1), x.size(2))

    def forward(self, x):
        x = self.dropout(self.pooled(x))
        return [getattr(self, f"classifier{i}")(x[:, :, i].view(x.size(0), x.size(1)))
                for i in range(self.part)]


# --------------------------------------------------------------------------------------------
# fast-reid's BoT
# --------------------------------------------------------------------------------------------
class GeM(nn.Module):
    """Generalised mean pooling; fast-reid's GeneralizedMeanPoolingP when learnable."""

    def __init__(self, p=3.0, eps=1e-6, learnable=True):
        super().__init__()
        self.eps = eps
        if learnable:
            self.p = nn.Parameter(torch.ones(1) * p)
        else:
            self.p = float(p)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


def make_pool(pool):
    if pool == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if pool == "max":
        return nn.AdaptiveMaxPool2d(1)
    if pool == "gem":
        return GeM(3.0, learnable=True)
    if pool == "gem_fixed":
        return GeM(3.0, learnable=False)
    raise ValueError(f"unknown pool {pool!r}")


class EmbeddingHead(nn.Module):
    """fast-reid's EmbeddingHead: pool -> BatchNorm neck (bias frozen) -> bias-free linear."""

    def __init__(self, class_num, feat_dim=2048, pool="avg"):
        super().__init__()
        self.pool_layer = make_pool(pool)
        self.bottleneck = nn.Sequential(nn.BatchNorm2d(feat_dim))
        self.bottleneck[0].bias.requires_grad_(False)
        self.weight = nn.Parameter(torch.empty(class_num, feat_dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, features):
        f = self.pool_layer(features)           # (B, C, 1, 1), the triplet feature
        e = self.bottleneck(f)[..., 0, 0]       # (B, C), the test feature
        logits = F.linear(e, self.weight)
        return logits, e, f[..., 0, 0]


class BnneckNet(nn.Module):
    """fast-reid's BoT: ResNet-50 (or ResNet-50-IBN-a) without fc as `backbone`, then the
    EmbeddingHead as `heads`. forward returns (logits, post-BN embedding, pre-BN feature)."""

    def __init__(self, class_num, pool="avg", stride=1, ibn=False):
        super().__init__()
        backbone = resnet50_ibn_a() if ibn else torchvision.models.resnet50()
        del backbone.fc
        del backbone.avgpool
        set_last_stride(backbone, stride)
        self.backbone = backbone
        self.heads = EmbeddingHead(class_num, 2048, pool)

    def forward(self, x):
        return self.heads(resnet_map(self.backbone, x))

    def embed(self, x):
        return self.forward(x)[1]


_FEATURE_WIDTHS = {}  # (module, variant) -> channels of its feature map

# The baseline's switches onto other projects' networks: family -> (reference module, variant).
BASELINE_WRAPPERS = {
    "ft_net_swin": (swin_models, "swin_base_patch4_window7_224"),
    "ft_net_swinv2": (swinv2_models, "swinv2_base_window8_256"),
    "ft_net_dino": (eva_models, "vit_base_patch16_dinov3"),
    "ft_net_convnext": (convnext_models, "convnext_base"),
    "ft_net_hr": (hrnet_models, "hrnet_w18"),
    "ft_net_efficient": (efficientnet_models, "efficientnet-b4"),
    "ft_net_nas": (nasnet_models, "nasnetalarge"),
}
# The sizes the baseline builds its transformers for (train.py / test.py: Swin at 224x224,
# SwinV2 and DINOv3 at (h, w) = (256, 128)).
BASELINE_INPUT_SIZES = {"ft_net_swin": (224, 224), "ft_net_swinv2": (256, 128),
                        "ft_net_dino": (256, 128)}


def _feature_width(upstream, variant, network, img_size):
    key = (upstream.__name__, variant)
    if key not in _FEATURE_WIDTHS:
        with torch.no_grad():
            probe = upstream.features(network.eval(), torch.zeros(1, 3, *(img_size or (128, 64))))
        _FEATURE_WIDTHS[key] = probe.size(1)
    network.train()
    return _FEATURE_WIDTHS[key]


class BaselineWrapper(nn.Module):
    """`model` = the network `upstream.create(variant)`, as the baseline modifies it (its
    ImageNet classifier removed or kept); `classifier` = ClassBlock(dim, ...) on the
    average-pooled `upstream.features`."""

    def __init__(self, upstream, variant, class_num, droprate=0.5, linear_num=512,
                 drop_path_rate=0.0, **network_options):
        super().__init__()
        self.model = upstream.create(variant, drop_path_rate=drop_path_rate, **network_options)
        self.feature_map = upstream.features
        width = _feature_width(upstream, variant, self.model, network_options.get("img_size"))
        self.classifier = ClassBlock(width, class_num, droprate, linear=linear_num)

    def features(self, x):
        x = F.adaptive_avg_pool2d(self.feature_map(self.model, x), (1, 1))
        return x.view(x.size(0), x.size(1))

    def embed(self, x):
        return self.classifier.add_block(self.features(x))

    def forward(self, x):
        return self.classifier(self.features(x))


class BnneckWrapper(nn.Module):
    """fast-reid's BoT head (EmbeddingHead as `heads`) on `upstream.create(variant)` as
    `backbone`; forward returns (logits, post-BN embedding, pre-BN feature), as BnneckNet."""

    def __init__(self, upstream, variant, class_num, pool="avg", **network_options):
        super().__init__()
        self.backbone = upstream.create(variant, **network_options)
        self.feature_map = upstream.features
        width = _feature_width(upstream, variant, self.backbone, network_options.get("img_size"))
        self.heads = EmbeddingHead(class_num, width, pool)

    def forward(self, x):
        return self.heads(self.feature_map(self.backbone, x))

    def embed(self, x):
        return self.forward(x)[1]
