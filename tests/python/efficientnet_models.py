"""Python reference of EfficientNet b0..b7 as the efficientnet_pytorch package builds them
(lukemelas/EfficientNet-PyTorch, efficientnet_pytorch/model.py and utils.py), on plain torch.

The facts it reproduces:

- state_dict keys and order: _conv_stem, _bn0, _blocks.N.{_expand_conv, _bn0, _depthwise_conv,
  _bn1, _se_reduce, _se_expand, _project_conv, _bn2}, _conv_head, _bn1, _fc;
- widths and depths scaled by round_filters / round_repeats with each variant's coefficients;
- BatchNorm momentum 1 - 0.99 and eps 1e-3 (TensorFlow's decay and epsilon);
- TensorFlow "SAME" padding computed once, when the network is built, for the variant's
  ImageNet resolution (224 for b0, 380 for b4), and applied as that fixed zero padding
  whatever the size of the input;
- swish x * sigmoid(x); squeeze-excitation; the skip with drop connect at rate
  drop_connect_rate * idx / number_of_blocks;
- PyTorch's default initialisation (the package sets none of its own).

The Market-1501 baseline (Person_reID_baseline_pytorch, ft_net_efficient) keeps `_fc` and adds
parameter-free `head`, `avgpool` and `classifier` modules; it pools `extract_features(x)`.

    net = create("efficientnet-b0")
    fmap = features(net.eval(), images)   # (B, 1280, H/32, W/32)
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VARIANTS", "create", "create_imagenet", "features"]

# name -> (width coefficient, depth coefficient, ImageNet resolution, dropout before _fc)
COEFFICIENTS = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
}
VARIANTS = list(COEFFICIENTS)

# The b0 stages: (repeats, kernel, stride, expand ratio, in, out, se ratio); all keep id_skip.
STAGES = [
    (1, 3, 1, 1, 32, 16, 0.25),
    (2, 3, 2, 6, 16, 24, 0.25),
    (2, 5, 2, 6, 24, 40, 0.25),
    (3, 3, 2, 6, 40, 80, 0.25),
    (3, 5, 1, 6, 80, 112, 0.25),
    (4, 5, 2, 6, 112, 192, 0.25),
    (1, 3, 1, 6, 192, 320, 0.25),
]

DEFAULT_DROP_CONNECT = 0.2
BN_MOMENTUM = 1 - 0.99
BN_EPS = 1e-3
DEPTH_DIVISOR = 8


def round_filters(filters, width):
    """Channels scaled by `width`, to a multiple of 8, never more than 10% below."""
    scaled = filters * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += DEPTH_DIVISOR
    return int(rounded)


def round_repeats(repeats, depth):
    return int(math.ceil(depth * repeats))


def strided_size(size, stride):
    return [int(math.ceil(size[0] / stride)), int(math.ceil(size[1] / stride))]


class MemoryEfficientSwish(torch.autograd.Function):
    """The package's swish: x * sigmoid(x), keeping only x for the gradient
    grad * (s * (1 + x * (1 - s)))."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        x = ctx.saved_tensors[0]
        s = torch.sigmoid(x)
        return grad * (s * (1 + x * (1 - s)))


def swish(x):
    return MemoryEfficientSwish.apply(x)


def batch_norm(channels):
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


class StaticSameConv2d(nn.Conv2d):
    """A Conv2d whose TensorFlow "SAME" padding is fixed for `image_size` at construction.
    Its only child, `static_padding`, has no parameters, so the keys are the Conv2d's."""

    def __init__(self, cin, cout, kernel, image_size, stride=1, groups=1, bias=True):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=bias)
        pads = []
        for size, step in zip(image_size, (stride, stride)):
            out = int(math.ceil(size / step))
            pads.append(max((out - 1) * step + kernel - size, 0))
        pad_h, pad_w = pads
        if pad_h > 0 or pad_w > 0:
            self.static_padding = nn.ZeroPad2d(
                (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        else:
            self.static_padding = nn.Identity()

    def forward(self, x):
        return super().forward(self.static_padding(x))


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expansion, depthwise conv, squeeze-excitation, 1x1 projection,
    and a skip (with drop connect) where the block keeps its shape."""

    def __init__(self, cin, cout, kernel, stride, expand, se_ratio, image_size):
        super().__init__()
        inner = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = StaticSameConv2d(cin, inner, 1, image_size, bias=False)
            self._bn0 = batch_norm(inner)
        self._depthwise_conv = StaticSameConv2d(
            inner, inner, kernel, image_size, stride=stride, groups=inner, bias=False)
        self._bn1 = batch_norm(inner)
        squeezed = max(1, int(cin * se_ratio))
        self._se_reduce = StaticSameConv2d(inner, squeezed, 1, (1, 1))
        self._se_expand = StaticSameConv2d(squeezed, inner, 1, (1, 1))
        self._project_conv = StaticSameConv2d(
            inner, cout, 1, strided_size(image_size, stride), bias=False)
        self._bn2 = batch_norm(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, inputs, drop_rate):
        x = inputs
        if self.expand != 1:
            x = swish(self._bn0(self._expand_conv(x)))
        x = swish(self._bn1(self._depthwise_conv(x)))
        gate = self._se_expand(swish(self._se_reduce(F.adaptive_avg_pool2d(x, 1))))
        x = torch.sigmoid(gate) * x
        x = self._bn2(self._project_conv(x))
        if self.skip:
            if drop_rate and self.training:
                keep = 1 - drop_rate
                mask = torch.floor(keep + torch.rand(
                    [x.shape[0], 1, 1, 1], dtype=x.dtype, device=x.device))
                x = x / keep * mask
            x = x + inputs
        return x


class EfficientNet(nn.Module):
    """efficientnet_pytorch's EfficientNet with its ImageNet classifier `_fc`."""

    def __init__(self, name, drop_connect_rate=DEFAULT_DROP_CONNECT, num_classes=1000):
        super().__init__()
        width, depth, resolution, dropout = COEFFICIENTS[name]
        self.drop_connect_rate = drop_connect_rate
        size = [resolution, resolution]
        stem = round_filters(32, width)
        self._conv_stem = StaticSameConv2d(3, stem, 3, size, stride=2, bias=False)
        self._bn0 = batch_norm(stem)
        size = strided_size(size, 2)
        self._blocks = nn.ModuleList()
        for repeats, kernel, stride, expand, cin, cout, se_ratio in STAGES:
            cin, cout = round_filters(cin, width), round_filters(cout, width)
            for i in range(round_repeats(repeats, depth)):
                self._blocks.append(MBConv(cin if i == 0 else cout, cout, kernel,
                                           stride if i == 0 else 1, expand, se_ratio, size))
                if i == 0:
                    size = strided_size(size, stride)
        head = round_filters(1280, width)
        self._conv_head = StaticSameConv2d(cout, head, 1, size, bias=False)
        self._bn1 = batch_norm(head)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def extract_features(self, x):
        x = swish(self._bn0(self._conv_stem(x)))
        count = len(self._blocks)
        for idx, block in enumerate(self._blocks):
            x = block(x, self.drop_connect_rate * (float(idx) / count))
        return swish(self._bn1(self._conv_head(x)))

    def forward(self, x):
        x = self._avg_pooling(self.extract_features(x)).flatten(1)
        return self._fc(self._dropout(x))


def create_imagenet(name):
    """The unmodified package network (EfficientNet.from_name(name)), with `_fc`."""
    return EfficientNet(name)


def create(name, drop_path_rate=0.0):
    """The network as ft_net_efficient holds it: `_fc` kept, parameter-free `head`, `avgpool`
    and `classifier` added; `drop_path_rate` is the package's drop_connect_rate."""
    net = EfficientNet(name, drop_connect_rate=drop_path_rate)
    net.head = nn.Sequential()
    net.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    net.classifier = nn.Sequential()
    return net


def features(net, x):
    """The unpooled map the baseline pools: extract_features."""
    return net.extract_features(x)
