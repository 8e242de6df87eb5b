"""Python reference of timm's HRNet classification networks (timm/models/hrnet.py,
HighResolutionNet with head 'classification', and the BasicBlock / Bottleneck of
timm/models/resnet.py it builds on), on plain torch.

It reproduces timm's state_dict keys, their order and shapes, its BatchNorm settings
(eps 1e-5, momentum 0.1), its init (convs Kaiming-normal fan_out/relu, BatchNorm weight 1 and
bias 0, conv biases and the classifier left at PyTorch's default) and its forward_features:
the 2048-channel map of final_layer at stride 32, which the Market-1501 baseline's ft_net_hr
pools after it has replaced `classifier` by an empty nn.Sequential.

    net = create("hrnet_w18")                 # as ft_net_hr holds it: no classifier keys
    fmap = features(net.eval(), images)       # (B, 2048, H/32, W/32)
    imagenet = create_imagenet("hrnet_w18")   # with classifier (Linear 2048 -> 1000)
"""
import torch
import torch.nn as nn

__all__ = ["VARIANTS", "CONFIGS", "create", "create_imagenet", "features"]


def _full(width):
    """timm's configuration of the full-size variants (branch i has width * 2^i)."""
    w = width
    return [
        (1, "BOTTLENECK", (4,), (64,)),
        (1, "BASIC", (4, 4), (w, 2 * w)),
        (4, "BASIC", (4, 4, 4), (w, 2 * w, 4 * w)),
        (3, "BASIC", (4, 4, 4, 4), (w, 2 * w, 4 * w, 8 * w)),
    ]


# name -> stage1..stage4 as (num_modules, block type, num_blocks, num_channels); the number
# of branches is the length of num_channels and every stage fuses by sum. Stem width 64.
CONFIGS = {
    "hrnet_w18_small": [
        (1, "BOTTLENECK", (1,), (32,)),
        (1, "BASIC", (2, 2), (16, 32)),
        (1, "BASIC", (2, 2, 2), (16, 32, 64)),
        (1, "BASIC", (2, 2, 2, 2), (16, 32, 64, 128)),
    ],
    "hrnet_w18_small_v2": [
        (1, "BOTTLENECK", (2,), (64,)),
        (1, "BASIC", (2, 2), (18, 36)),
        (3, "BASIC", (2, 2, 2), (18, 36, 72)),
        (2, "BASIC", (2, 2, 2, 2), (18, 36, 72, 144)),
    ],
}
CONFIGS.update({"hrnet_w%d" % w: _full(w) for w in (18, 30, 32, 40, 44, 48, 64)})

VARIANTS = list(CONFIGS)

HEAD_WIDTHS = (32, 64, 128, 256)
NUM_FEATURES = 2048


# --------------------------------------------------------------------------------------------
# Residual blocks (timm's resnet.py BasicBlock / Bottleneck with their defaults)
# --------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 convs. Keys: conv1, bn1, conv2, bn2[, downsample]."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1, expansion 4. Keys: conv1, bn1, conv2, bn2, conv3, bn3[, downsample]."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_blocks(block, inplanes, planes, count):
    """`count` blocks; the first gets a 1x1 conv + BN shortcut when the channels change."""
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, bias=False),
            nn.BatchNorm2d(planes * block.expansion, momentum=0.1))
    layers = [block(inplanes, planes, 1, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, count)]
    return nn.Sequential(*layers)


def conv_bn(cin, cout, kernel, stride, relu, bias=False):
    """Conv (padding kernel // 2), BatchNorm and optionally ReLU. Keys: 0, 1."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias),
              nn.BatchNorm2d(cout, momentum=0.1)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# High-resolution module
# --------------------------------------------------------------------------------------------
class HighResolutionModule(nn.Module):
    """Parallel branches of residual blocks, then every branch fused into every other.
    Keys: branches.{i}.{k}, fuse_layers.{i}.{j} (Identity where i == j)."""

    def __init__(self, block, num_blocks, in_channels, num_channels):
        super().__init__()
        block = BLOCKS[block]
        n = len(num_channels)
        self.out_channels = [c * block.expansion for c in num_channels]
        self.branches = nn.ModuleList([
            make_blocks(block, in_channels[i], num_channels[i], num_blocks[i]) for i in range(n)])
        if n == 1:
            self.fuse_layers = nn.Identity()
            return
        out = self.out_channels
        rows = []
        for i in range(n):
            row = []
            for j in range(n):
                if j > i:
                    path = conv_bn(out[j], out[i], 1, 1, relu=False)
                    path.append(nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"))
                elif j == i:
                    path = nn.Identity()
                else:
                    steps = i - j
                    path = nn.Sequential(*[
                        conv_bn(out[j], out[i] if k == steps - 1 else out[j], 3, 2,
                                relu=k != steps - 1)
                        for k in range(steps)])
                row.append(path)
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)

    def forward(self, x):
        x = [branch(t) for branch, t in zip(self.branches, x)]
        if len(x) == 1:
            return x
        fused = []
        for row in self.fuse_layers:
            y = row[0](x[0])
            for j in range(1, len(x)):
                y = y + row[j](x[j])
            fused.append(torch.relu(y))
        return fused


class HighResolutionNet(nn.Module):
    """timm's HighResolutionNet with the classification head. Keys: conv1, bn1, conv2, bn2,
    layer1, transition1, stage2, transition2, stage3, transition3, stage4, incre_modules,
    downsamp_modules, final_layer, classifier."""

    def __init__(self, stages, num_classes=1000, stem_width=64, head_conv_bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_width, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width, momentum=0.1)
        self.conv2 = nn.Conv2d(stem_width, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=0.1)

        _, block, num_blocks, num_channels = stages[0]
        block = BLOCKS[block]
        self.layer1 = make_blocks(block, 64, num_channels[0], num_blocks[0])
        channels = [num_channels[0] * block.expansion]
        for s in range(1, 4):
            num_modules, block, num_blocks, num_channels = stages[s]
            widths = [c * BLOCKS[block].expansion for c in num_channels]
            setattr(self, "transition%d" % s, self._transition(channels, widths))
            modules = []
            for _ in range(num_modules):
                modules.append(HighResolutionModule(block, num_blocks, widths, num_channels))
                widths = modules[-1].out_channels
            setattr(self, "stage%d" % (s + 1), nn.Sequential(*modules))
            channels = widths

        head = [w * Bottleneck.expansion for w in HEAD_WIDTHS]
        self.incre_modules = nn.ModuleList([
            make_blocks(Bottleneck, c, HEAD_WIDTHS[i], 1) for i, c in enumerate(channels)])
        self.downsamp_modules = nn.ModuleList([
            conv_bn(head[i], head[i + 1], 3, 2, relu=True, bias=head_conv_bias)
            for i in range(len(channels) - 1)])
        self.final_layer = conv_bn(head[3], NUM_FEATURES, 1, 1, relu=True, bias=head_conv_bias)
        self.classifier = nn.Linear(NUM_FEATURES, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @staticmethod
    def _transition(before, after):
        units = []
        for i, width in enumerate(after):
            if i < len(before):
                units.append(nn.Identity() if before[i] == width
                             else conv_bn(before[i], width, 3, 1, relu=True))
            else:
                steps = i + 1 - len(before)
                units.append(nn.Sequential(*[
                    conv_bn(before[-1], width if k == steps - 1 else before[-1], 3, 2, relu=True)
                    for k in range(steps)]))
        return nn.ModuleList(units)

    def stages(self, x):
        """The four branch maps of stage 4 (strides 4, 8, 16, 32)."""
        maps = [self.layer1(x)]
        for s in range(1, 4):
            transition = getattr(self, "transition%d" % s)
            # timm feeds every transition unit the last branch; Identity passes branch i on.
            maps = [maps[i] if isinstance(t, nn.Identity) else t(maps[-1])
                    for i, t in enumerate(transition)]
            for module in getattr(self, "stage%d" % (s + 1)):
                maps = module(maps)
        return maps

    def forward_features(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        maps = self.stages(x)
        y = self.incre_modules[0](maps[0])
        for i in range(1, len(maps)):
            y = self.incre_modules[i](maps[i]) + self.downsamp_modules[i - 1](y)
        return self.final_layer(y)

    def forward(self, x):
        x = self.forward_features(x).mean((2, 3))
        return self.classifier(x)


def create_imagenet(name):
    """timm's `name` as published, with its ImageNet classifier."""
    return HighResolutionNet(CONFIGS[name])


def create(name, drop_path_rate=0.0):
    """`name` as the baseline's ft_net_hr holds it: classifier replaced by an empty
    nn.Sequential (no keys). HRNet has no stochastic depth; drop_path_rate is ignored."""
    del drop_path_rate
    net = create_imagenet(name)
    net.classifier = nn.Sequential()
    return net


def features(net, x):
    """The unpooled map ft_net_hr pools: final_layer's output, (B, 2048, H/32, W/32)."""
    return net.forward_features(x)
