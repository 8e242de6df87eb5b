"""timm's ConvNeXt (convnext_tiny .. convnext_xlarge) on plain torch, as the baseline's
ft_net_convnext uses it: timm.create_model('convnext_base', drop_path_rate=0.2), then
`model.head = nn.Sequential()`, which removes the head's LayerNorm with its fc, so that
forward_features' raw last stage is what the baseline pools.

Written from timm's timm/models/convnext.py (ConvNeXtBlock, ConvNeXtStage, ConvNeXt,
_init_weights) and timm/layers (LayerNorm, LayerNorm2d, Mlp, DropPath): the same module names,
registration order, eps (1e-6), GELU and stochastic-depth schedule. Mlp, drop_path and the
init are shared with the other reference networks in timm_layers.py.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_layers import Mlp, drop_path, drop_path_rates, trunc_normal_init

VARIANTS = {
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "convnext_xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}
EPS = 1e-6


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def __init__(self, channels):
        super().__init__(channels, eps=EPS)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, channels, drop_path_rate):
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=EPS)
        self.mlp = Mlp(channels, 4 * channels)
        self.gamma = nn.Parameter(1e-6 * torch.ones(channels))
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2)
        y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        return drop_path(y, self.drop_path_rate, self.training) + x


class Stage(nn.Module):
    def __init__(self, in_channels, out_channels, stride, rates):
        super().__init__()
        if in_channels != out_channels or stride > 1:
            self.downsample = nn.Sequential(
                LayerNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, kernel_size=stride, stride=stride))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[Block(out_channels, r) for r in rates])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    """timm's NormMlpClassifierHead without a hidden layer: pool, norm, flatten, fc."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.norm = LayerNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.norm(x.mean((2, 3), keepdim=True)).flatten(1))


class ConvNeXt(nn.Module):
    def __init__(self, depths, dims, drop_path_rate=0.0, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4),
                                  LayerNorm2d(dims[0]))
        rates = drop_path_rates(drop_path_rate, depths)
        self.stages = nn.Sequential(*[
            Stage(dims[max(i - 1, 0)], dims[i], 1 if i == 0 else 2, rates[i])
            for i in range(4)])
        self.norm_pre = nn.Identity()
        self.head = Head(dims[3], num_classes)
        trunc_normal_init(self, (nn.Conv2d, nn.Linear))

    def forward_features(self, x):
        return self.norm_pre(self.stages(self.stem(x)))

    def forward(self, x):
        return self.head(self.forward_features(x))


def create_imagenet(name, drop_path_rate=0.0):
    depths, dims = VARIANTS[name]
    return ConvNeXt(depths, dims, drop_path_rate)


def create(name, drop_path_rate=0.0):
    net = create_imagenet(name, drop_path_rate)
    net.head = nn.Sequential()
    return net


def features(net, x):
    return net.forward_features(x)
