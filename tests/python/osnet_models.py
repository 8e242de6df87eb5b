"""Python reference models of the OSNet family (Zhou et al., ICCV 2019 and TPAMI 2021),
written after torchreid's torchreid/models/osnet.py (osnet_x1_0, osnet_x0_75, osnet_x0_5,
osnet_x0_25, osnet_ibn_x1_0) and torchreid/models/osnet_ain.py (osnet_ain_x1_0 ... x0_25).

They reproduce torchreid's state_dict keys, their order and shapes, its initialisation
(convs Kaiming-normal fan_out/relu with bias 0, every norm weight 1 and bias 0, Linear
N(0, 0.01) with bias 0) and its forward: in training mode the classifier's logits ('softmax')
or (logits, v) ('triplet'); in eval mode v, the feature after the fc block. The two upstream
files spell the omni-scale block differently:

- osnet.py: conv1, conv2a, conv2b.{0,1}, conv2c.{0..2}, conv2d.{0..3}, gate, conv3,
  downsample, IN; the stride-2 transition (Conv1x1 + AvgPool2d) is the last entry of conv2 and
  conv3; osnet_ibn_x1_0 puts an affine InstanceNorm in conv1 and after the residual sum of the
  blocks of conv2 (conv3 and conv4 stay plain).
- osnet_ain.py: conv1, conv2.{0..3}.layers.{0..t-1}, gate, conv3, downsample, IN; the
  transitions are top-level pool2 / pool3; OSBlockINin has a bias-free conv3 without BatchNorm
  followed by an affine InstanceNorm inside the residual branch; conv1 uses InstanceNorm.

    model = build("osnet_ain_x1_0", num_classes=751)
    v = model.eval()(images)   # (B, 512)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VARIANTS", "build", "feature_map"]

# Channels of conv1, conv2, conv3 and conv4 (= conv5) for each width.
WIDTHS = {
    "x1_0": [64, 256, 384, 512],
    "x0_75": [48, 192, 288, 384],
    "x0_5": [32, 128, 192, 256],
    "x0_25": [16, 64, 96, 128],
}

# name -> (file the layout follows, width, variant)
VARIANTS = {
    "osnet_x1_0": ("osnet", "x1_0", "plain"),
    "osnet_x0_75": ("osnet", "x0_75", "plain"),
    "osnet_x0_5": ("osnet", "x0_5", "plain"),
    "osnet_x0_25": ("osnet", "x0_25", "plain"),
    "osnet_ibn_x1_0": ("osnet", "x1_0", "ibn"),
    "osnet_ain_x1_0": ("osnet_ain", "x1_0", "ain"),
    "osnet_ain_x0_75": ("osnet_ain", "x0_75", "ain"),
    "osnet_ain_x0_5": ("osnet_ain", "x0_5", "ain"),
    "osnet_ain_x0_25": ("osnet_ain", "x0_25", "ain"),
}

# Which blocks of conv2, conv3, conv4 carry the AIN block (InstanceNorm inside the residual).
AIN_PATTERN = [[True, True], [False, True], [True, False]]


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
class ConvNormReLU(nn.Module):
    """Bias-free conv, BatchNorm (or affine InstanceNorm), ReLU. Keys: conv, bn."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, instance_norm=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.InstanceNorm2d(cout, affine=True) if instance_norm else nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def conv1x1(cin, cout):
    return ConvNormReLU(cin, cout, 1)


class LinearConv1x1(nn.Module):
    """1x1 conv and (optionally) BatchNorm, no activation. Keys: conv, bn."""

    def __init__(self, cin, cout, batch_norm=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout) if batch_norm else None

    def forward(self, x):
        x = self.conv(x)
        return x if self.bn is None else self.bn(x)


class LiteConv3x3(nn.Module):
    """1x1 conv (linear), depthwise 3x3 conv, BatchNorm, ReLU. Keys: conv1, conv2, bn."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class Stream(nn.Module):
    """osnet_ain's stream of `depth` lite 3x3 layers. Key: layers."""

    def __init__(self, channels, depth):
        super().__init__()
        self.layers = nn.Sequential(*[LiteConv3x3(channels, channels) for _ in range(depth)])

    def forward(self, x):
        return self.layers(x)


class Gate(nn.Module):
    """Channel gate shared by the streams of a block: global average pool, 1x1 conv down by
    `reduction` (with bias), ReLU, 1x1 conv up (with bias), sigmoid; multiplies its input.
    Keys: fc1, fc2 (norm1 with layer_norm)."""

    def __init__(self, channels, num_gates=None, return_gates=False, activation="sigmoid",
                 reduction=16, layer_norm=False):
        super().__init__()
        num_gates = channels if num_gates is None else num_gates
        self.return_gates = return_gates
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.norm1 = nn.LayerNorm((channels // reduction, 1, 1)) if layer_norm else None
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, num_gates, 1, bias=True)
        if activation not in ("sigmoid", "relu", "linear"):
            raise RuntimeError("unknown gate activation " + activation)
        self.activation = activation

    def forward(self, x):
        g = self.fc1(self.global_avgpool(x))
        if self.norm1 is not None:
            g = self.norm1(g)
        g = self.fc2(self.relu(g))
        if self.activation == "sigmoid":
            g = torch.sigmoid(g)
        elif self.activation == "relu":
            g = F.relu(g)
        return g if self.return_gates else x * g


# --------------------------------------------------------------------------------------------
# Omni-scale blocks
# --------------------------------------------------------------------------------------------
class OmniScaleBlock(nn.Module):
    """osnet.py's block: four streams of 1..4 lite 3x3 layers on a 1x1 bottleneck (out / 4),
    summed through one shared gate, 1x1 up, plus the (projected) input; with `instance_norm`
    an affine InstanceNorm after the sum; ReLU."""

    def __init__(self, cin, cout, instance_norm=False, reduction=4):
        super().__init__()
        mid = cout // reduction
        self.conv1 = conv1x1(cin, mid)
        self.conv2a = LiteConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*[LiteConv3x3(mid, mid) for _ in range(2)])
        self.conv2c = nn.Sequential(*[LiteConv3x3(mid, mid) for _ in range(3)])
        self.conv2d = nn.Sequential(*[LiteConv3x3(mid, mid) for _ in range(4)])
        self.gate = Gate(mid)
        self.conv3 = LinearConv1x1(mid, cout)
        self.downsample = LinearConv1x1(cin, cout) if cin != cout else None
        self.IN = nn.InstanceNorm2d(cout, affine=True) if instance_norm else None

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = (self.gate(self.conv2a(x1)) + self.gate(self.conv2b(x1)) + self.gate(self.conv2c(x1))
              + self.gate(self.conv2d(x1)))
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv3(x2) + shortcut
        if self.IN is not None:
            out = self.IN(out)
        return F.relu(out)


class StreamBlock(nn.Module):
    """osnet_ain.py's blocks. Plain (OSBlock): conv3 is 1x1 + BatchNorm. With `instance_norm`
    (OSBlockINin): conv3 is a bare 1x1 conv followed by an affine InstanceNorm, still inside
    the residual branch."""

    def __init__(self, cin, cout, instance_norm=False, reduction=4, streams=4):
        super().__init__()
        mid = cout // reduction
        self.conv1 = conv1x1(cin, mid)
        self.conv2 = nn.ModuleList([Stream(mid, depth) for depth in range(1, streams + 1)])
        self.gate = Gate(mid)
        self.conv3 = LinearConv1x1(mid, cout, batch_norm=not instance_norm)
        self.downsample = LinearConv1x1(cin, cout) if cin != cout else None
        self.IN = nn.InstanceNorm2d(cout, affine=True) if instance_norm else None

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = 0
        for stream in self.conv2:
            x2 = x2 + self.gate(stream(x1))
        x3 = self.conv3(x2)
        if self.IN is not None:
            x3 = self.IN(x3)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(x3 + shortcut)


def transition(channels):
    """1x1 conv + BatchNorm + ReLU, then a 2x2 average pool of stride 2. Keys: 0.conv, 0.bn."""
    return nn.Sequential(conv1x1(channels, channels), nn.AvgPool2d(2, stride=2))


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------
class OSNetReference(nn.Module):
    def __init__(self, num_classes, channels, variant="plain", feature_dim=512, loss="softmax"):
        super().__init__()
        self.loss = loss
        c = channels
        self.conv1 = ConvNormReLU(3, c[0], 7, stride=2, padding=3,
                                  instance_norm=variant in ("ibn", "ain"))
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        if variant == "ain":
            def stage(i):
                first, second = AIN_PATTERN[i]
                return nn.Sequential(StreamBlock(c[i], c[i + 1], instance_norm=first),
                                     StreamBlock(c[i + 1], c[i + 1], instance_norm=second))
            self.conv2 = stage(0)
            self.pool2 = transition(c[1])
            self.conv3 = stage(1)
            self.pool3 = transition(c[2])
            self.conv4 = stage(2)
        else:
            def stage(i, reduce, instance_norm=False):
                blocks = [OmniScaleBlock(c[i], c[i + 1], instance_norm),
                          OmniScaleBlock(c[i + 1], c[i + 1], instance_norm)]
                if reduce:
                    blocks.append(transition(c[i + 1]))
                return nn.Sequential(*blocks)
            # torchreid's IBN variant passes IN to conv1 and conv2 only.
            self.conv2 = stage(0, True, instance_norm=variant == "ibn")
            self.conv3 = stage(1, True)
            self.conv4 = stage(2, False)
        self.conv5 = conv1x1(c[3], c[3])
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        # torchreid's fc_dims=None: no fc block, the pooled map is the feature.
        self.fc = None
        if feature_dim is not None:
            self.fc = nn.Sequential(nn.Linear(c[3], feature_dim), nn.BatchNorm1d(feature_dim),
                                    nn.ReLU())
        self.classifier = nn.Linear(c[3] if feature_dim is None else feature_dim, num_classes)
        self.init_params()

    def init_params(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def featuremaps(self, x):
        return feature_map(self, x)

    def forward(self, x):
        v = self.global_avgpool(self.featuremaps(x)).flatten(1)
        if self.fc is not None:
            v = self.fc(v)
        if not self.training:
            return v
        y = self.classifier(v)
        if self.loss == "softmax":
            return y
        if self.loss == "triplet":
            return y, v
        raise KeyError("unsupported loss " + self.loss)


def feature_map(model, x):
    """The unpooled conv5 map, (B, C, H/16, W/16)."""
    x = model.maxpool(model.conv1(x))
    x = model.conv2(x)
    if hasattr(model, "pool2"):
        x = model.pool2(x)
    x = model.conv3(x)
    if hasattr(model, "pool3"):
        x = model.pool3(x)
    return model.conv5(model.conv4(x))


def build(name, num_classes=1000, loss="softmax", feature_dim=512):
    """torchreid's `name` (pretrained=False) with `num_classes` identities; feature_dim None
    leaves the fc block out (torchreid's fc_dims=None)."""
    if name not in VARIANTS:
        raise KeyError("unknown OSNet variant " + name)
    _, width, variant = VARIANTS[name]
    return OSNetReference(num_classes, WIDTHS[width], variant=variant, feature_dim=feature_dim,
                          loss=loss)
