"""Python reference of NASNet-A-Large (Zoph et al., CVPR 2018) as Cadene's pretrainedmodels
package builds it (pretrainedmodels/models/nasnet.py, NASNetALarge), on plain torch.

It reproduces that file's state_dict keys, their order and shapes, BatchNorm eps 0.001 and
momentum 0.1, PyTorch's default initialisation, and its forward, including the two pixel
shifts of the ported TensorFlow graph:

- path_2 of the factorised reduction (cell_stem_1 and the First cells) pads the right and
  bottom by one, drops the first row and column, then subsamples with a 1x1 average pool of
  stride 2;
- ReductionCell0's separable branches and MaxPoolPad / AvgPoolPad pad the left and top by one,
  run the stride-2 op, then drop the first row and column of its output.

ReductionCell0 therefore halves a map of n rows to floor(n / 2), while the factorised
reduction of cell_6 halves the same map to ceil(n / 2): the network runs only where the
stride-8 map (cells 0-5) has an even height and width (32x16 for 256x128, 16x8 for 128x64).

Variants: nasnetalarge (stem 96, penultimate 4032, as upstream) and nasnet_a_tiny, the same
architecture at stem 8, penultimate 96 (for tests). The Python baseline's ft_net_NAS pools
`features(x)`, the output of cell_17 without the ReLU that upstream's logits() applies, and
empties avg_pool, dropout and last_linear, so create() has no last_linear.

    net = create("nasnet_a_tiny").eval()
    fmap = features(net, torch.randn(2, 3, 128, 64))   # (2, 96, 4, 2)
"""
from collections import OrderedDict

import torch
import torch.nn as nn

__all__ = ["VARIANTS", "NASNetALarge", "create", "create_imagenet", "features"]

# name -> constructor arguments of NASNetALarge
VARIANTS = {
    "nasnetalarge": dict(stem_filters=96, penultimate_filters=4032, filters_multiplier=2),
    "nasnet_a_tiny": dict(stem_filters=8, penultimate_filters=96, filters_multiplier=2),
}


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=0.001, momentum=0.1, affine=True)


def _relu_conv_bn(cin, cout):
    """conv_1x1 / conv_prev_1x1: ReLU, bias-free 1x1 conv, BatchNorm. Keys: conv, bn."""
    return nn.Sequential(OrderedDict([
        ("relu", nn.ReLU()),
        ("conv", nn.Conv2d(cin, cout, 1, stride=1, bias=False)),
        ("bn", _bn(cout)),
    ]))


class SeparableConv2d(nn.Module):
    """Depthwise kxk conv then pointwise 1x1 conv, both bias-free."""

    def __init__(self, cin, cout, kernel, stride, padding):
        super().__init__()
        self.depthwise_conv2d = nn.Conv2d(cin, cin, kernel, stride=stride, padding=padding,
                                          bias=False, groups=cin)
        self.pointwise_conv2d = nn.Conv2d(cin, cout, 1, stride=1, bias=False)

    def forward(self, x):
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class BranchSeparables(nn.Module):
    """ReLU, separable_1, bn_sep_1, ReLU, separable_2 (stride 1), bn_sep_2.

    kind "plain": separable_1 keeps cin channels (BranchSeparables);
    kind "stem": separable_1 maps to cout (BranchSeparablesStem);
    kind "reduction": as plain, separable_1 on the input padded left/top by one and its output
    cropped by its first row and column (BranchSeparablesReduction; key-less `padding`).
    """

    def __init__(self, cin, cout, kernel, stride, padding, kind="plain"):
        super().__init__()
        middle = cout if kind == "stem" else cin
        self.relu = nn.ReLU()
        self.separable_1 = SeparableConv2d(cin, middle, kernel, stride, padding)
        self.bn_sep_1 = _bn(middle)
        self.relu1 = nn.ReLU()
        self.separable_2 = SeparableConv2d(middle, cout, kernel, 1, padding)
        self.bn_sep_2 = _bn(cout)
        self.shifted = kind == "reduction"
        if self.shifted:
            self.padding = nn.ZeroPad2d((1, 0, 1, 0))

    def forward(self, x):
        x = self.relu(x)
        if self.shifted:
            x = self.separable_1(self.padding(x))[:, :, 1:, 1:].contiguous()
        else:
            x = self.separable_1(x)
        x = self.relu1(self.bn_sep_1(x))
        return self.bn_sep_2(self.separable_2(x))


class ShiftedPool(nn.Module):
    """MaxPoolPad / AvgPoolPad: pad left/top by one, 3x3 pool of stride 2 (padding 1), drop the
    first row and column."""

    def __init__(self, average):
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 0, 1, 0))
        self.pool = (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False) if average
                     else nn.MaxPool2d(3, stride=2, padding=1))

    def forward(self, x):
        return self.pool(self.pad(x))[:, :, 1:, 1:]


class ShiftedPath(nn.Module):
    """path_2 of the factorised reduction: pad right/bottom by one, drop the first row and
    column, 1x1 average pool of stride 2, bias-free 1x1 conv. Keys: conv."""

    def __init__(self, cin, cout):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.avgpool = nn.AvgPool2d(1, stride=2, count_include_pad=False)
        self.conv = nn.Conv2d(cin, cout, 1, stride=1, bias=False)

    def forward(self, x):
        return self.conv(self.avgpool(self.pad(x)[:, :, 1:, 1:]))


def _max3(stride):
    return nn.MaxPool2d(3, stride=stride, padding=1)


def _avg3(stride):
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


class FactorizedReductionMixin:
    """relu, path_1, path_2, final_path_bn: halves x_prev to cout channels (2 x cout // 2)."""

    def _add_paths(self, cin, half):
        self.relu = nn.ReLU()
        self.path_1 = nn.Sequential(OrderedDict([
            ("avgpool", nn.AvgPool2d(1, stride=2, count_include_pad=False)),
            ("conv", nn.Conv2d(cin, half, 1, stride=1, bias=False)),
        ]))
        self.path_2 = ShiftedPath(cin, half)
        self.final_path_bn = _bn(2 * half)

    def _paths(self, x):
        x = self.relu(x)
        return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], 1))


class CellStem0(nn.Module):
    def __init__(self, stem_filters, num_filters):
        super().__init__()
        f = num_filters
        self.conv_1x1 = _relu_conv_bn(stem_filters, f)
        self.comb_iter_0_left = BranchSeparables(f, f, 5, 2, 2)
        self.comb_iter_0_right = BranchSeparables(stem_filters, f, 7, 2, 3, "stem")
        self.comb_iter_1_left = _max3(2)
        self.comb_iter_1_right = BranchSeparables(stem_filters, f, 7, 2, 3, "stem")
        self.comb_iter_2_left = _avg3(2)
        self.comb_iter_2_right = BranchSeparables(stem_filters, f, 5, 2, 2, "stem")
        self.comb_iter_3_right = _avg3(1)
        self.comb_iter_4_left = BranchSeparables(f, f, 3, 1, 1)
        self.comb_iter_4_right = _max3(2)

    def forward(self, x):
        x1 = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(x1) + self.comb_iter_0_right(x)
        c1 = self.comb_iter_1_left(x1) + self.comb_iter_1_right(x)
        c2 = self.comb_iter_2_left(x1) + self.comb_iter_2_right(x)
        c3 = self.comb_iter_3_right(c0) + c1
        c4 = self.comb_iter_4_left(c0) + self.comb_iter_4_right(x1)
        return torch.cat([c1, c2, c3, c4], 1)


class CellStem1(nn.Module, FactorizedReductionMixin):
    def __init__(self, stem_filters, num_filters):
        super().__init__()
        f = num_filters
        self.conv_1x1 = _relu_conv_bn(2 * f, f)
        self._add_paths(stem_filters, f // 2)
        self.comb_iter_0_left = BranchSeparables(f, f, 5, 2, 2)
        self.comb_iter_0_right = BranchSeparables(f, f, 7, 2, 3)
        self.comb_iter_1_left = _max3(2)
        self.comb_iter_1_right = BranchSeparables(f, f, 7, 2, 3)
        self.comb_iter_2_left = _avg3(2)
        self.comb_iter_2_right = BranchSeparables(f, f, 5, 2, 2)
        self.comb_iter_3_right = _avg3(1)
        self.comb_iter_4_left = BranchSeparables(f, f, 3, 1, 1)
        self.comb_iter_4_right = _max3(2)

    def forward(self, x_conv0, x_stem_0):
        left = self.conv_1x1(x_stem_0)
        right = self._paths(x_conv0)
        c0 = self.comb_iter_0_left(left) + self.comb_iter_0_right(right)
        c1 = self.comb_iter_1_left(left) + self.comb_iter_1_right(right)
        c2 = self.comb_iter_2_left(left) + self.comb_iter_2_right(right)
        c3 = self.comb_iter_3_right(c0) + c1
        c4 = self.comb_iter_4_left(c0) + self.comb_iter_4_right(left)
        return torch.cat([c1, c2, c3, c4], 1)


class _NormalBody(nn.Module):
    """The five combinations of FirstCell and NormalCell; output [left, c0, c1, c2, c3, c4]."""

    def _add_combinations(self, left, right):
        self.comb_iter_0_left = BranchSeparables(right, right, 5, 1, 2)
        self.comb_iter_0_right = BranchSeparables(left, left, 3, 1, 1)
        self.comb_iter_1_left = BranchSeparables(left, left, 5, 1, 2)
        self.comb_iter_1_right = BranchSeparables(left, left, 3, 1, 1)
        self.comb_iter_2_left = _avg3(1)
        self.comb_iter_3_left = _avg3(1)
        self.comb_iter_3_right = _avg3(1)
        self.comb_iter_4_left = BranchSeparables(right, right, 3, 1, 1)

    def _combine(self, x_left, x_right):
        c0 = self.comb_iter_0_left(x_right) + self.comb_iter_0_right(x_left)
        c1 = self.comb_iter_1_left(x_left) + self.comb_iter_1_right(x_left)
        c2 = self.comb_iter_2_left(x_right) + x_left
        c3 = self.comb_iter_3_left(x_left) + self.comb_iter_3_right(x_left)
        c4 = self.comb_iter_4_left(x_right) + x_right
        return torch.cat([x_left, c0, c1, c2, c3, c4], 1)


class FirstCell(_NormalBody, FactorizedReductionMixin):
    def __init__(self, in_left, out_left, in_right, out_right):
        super().__init__()
        self.conv_1x1 = _relu_conv_bn(in_right, out_right)
        self._add_paths(in_left, out_left)
        # Upstream sizes comb_iter_0_right by out_right: x_left has 2 x out_left = out_right.
        self._add_combinations(out_right, out_right)

    def forward(self, x, x_prev):
        x_left = self._paths(x_prev)
        return self._combine(x_left, self.conv_1x1(x))


class NormalCell(_NormalBody):
    def __init__(self, in_left, out_left, in_right, out_right):
        super().__init__()
        self.conv_prev_1x1 = _relu_conv_bn(in_left, out_left)
        self.conv_1x1 = _relu_conv_bn(in_right, out_right)
        self._add_combinations(out_left, out_right)

    def forward(self, x, x_prev):
        return self._combine(self.conv_prev_1x1(x_prev), self.conv_1x1(x))


class ReductionCell(nn.Module):
    """ReductionCell0 (shifted=True: BranchSeparablesReduction, MaxPoolPad, AvgPoolPad) and
    ReductionCell1 (plain branches and pools)."""

    def __init__(self, in_left, out_left, in_right, out_right, shifted):
        super().__init__()
        kind = "reduction" if shifted else "plain"
        r = out_right
        self.conv_prev_1x1 = _relu_conv_bn(in_left, out_left)
        self.conv_1x1 = _relu_conv_bn(in_right, out_right)
        self.comb_iter_0_left = BranchSeparables(r, r, 5, 2, 2, kind)
        self.comb_iter_0_right = BranchSeparables(r, r, 7, 2, 3, kind)
        self.comb_iter_1_left = ShiftedPool(False) if shifted else _max3(2)
        self.comb_iter_1_right = BranchSeparables(r, r, 7, 2, 3, kind)
        self.comb_iter_2_left = ShiftedPool(True) if shifted else _avg3(2)
        self.comb_iter_2_right = BranchSeparables(r, r, 5, 2, 2, kind)
        self.comb_iter_3_right = _avg3(1)
        self.comb_iter_4_left = BranchSeparables(r, r, 3, 1, 1, kind)
        self.comb_iter_4_right = ShiftedPool(False) if shifted else _max3(2)

    def forward(self, x, x_prev):
        x_left = self.conv_prev_1x1(x_prev)
        x_right = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(x_right) + self.comb_iter_0_right(x_left)
        c1 = self.comb_iter_1_left(x_right) + self.comb_iter_1_right(x_left)
        c2 = self.comb_iter_2_left(x_right) + self.comb_iter_2_right(x_left)
        c3 = self.comb_iter_3_right(c0) + c1
        c4 = self.comb_iter_4_left(c0) + self.comb_iter_4_right(x_right)
        return torch.cat([c1, c2, c3, c4], 1)


class NASNetALarge(nn.Module):
    """NASNet-A (6 @ penultimate_filters): conv0, cell_stem_0, cell_stem_1, cell_0..cell_5,
    reduction_cell_0, cell_6..cell_11, reduction_cell_1, cell_12..cell_17, last_linear."""

    def __init__(self, num_classes=1001, stem_filters=96, penultimate_filters=4032,
                 filters_multiplier=2):
        super().__init__()
        f = penultimate_filters // 24
        self.conv0 = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(3, stem_filters, 3, padding=0, stride=2, bias=False)),
            ("bn", _bn(stem_filters)),
        ]))
        self.cell_stem_0 = CellStem0(stem_filters, f // filters_multiplier ** 2)
        self.cell_stem_1 = CellStem1(stem_filters, f // filters_multiplier)
        # Cells as upstream lists them: (in_left, out_left, in_right, out_right); the left
        # input is x_prev, the right one x.
        self.cell_names = ["cell_%d" % i for i in range(6)] + ["reduction_cell_0"]
        self.cell_names += ["cell_%d" % i for i in range(6, 12)] + ["reduction_cell_1"]
        self.cell_names += ["cell_%d" % i for i in range(12, 18)]
        self.cell_0 = FirstCell(f, f // 2, 2 * f, f)
        self.cell_1 = NormalCell(2 * f, f, 6 * f, f)
        for i in range(2, 6):
            self.add_module("cell_%d" % i, NormalCell(6 * f, f, 6 * f, f))
        self.reduction_cell_0 = ReductionCell(6 * f, 2 * f, 6 * f, 2 * f, shifted=True)
        self.cell_6 = FirstCell(6 * f, f, 8 * f, 2 * f)
        self.cell_7 = NormalCell(8 * f, 2 * f, 12 * f, 2 * f)
        for i in range(8, 12):
            self.add_module("cell_%d" % i, NormalCell(12 * f, 2 * f, 12 * f, 2 * f))
        self.reduction_cell_1 = ReductionCell(12 * f, 4 * f, 12 * f, 4 * f, shifted=False)
        self.cell_12 = FirstCell(12 * f, 2 * f, 16 * f, 4 * f)
        self.cell_13 = NormalCell(16 * f, 4 * f, 24 * f, 4 * f)
        for i in range(14, 18):
            self.add_module("cell_%d" % i, NormalCell(24 * f, 4 * f, 24 * f, 4 * f))
        self.relu = nn.ReLU()
        self.avg_pool = nn.AvgPool2d(11, stride=1, padding=0)
        self.dropout = nn.Dropout()
        self.last_linear = nn.Linear(24 * f, num_classes)

    def features(self, x):
        x_conv0 = self.conv0(x)
        prev = self.cell_stem_0(x_conv0)
        x = self.cell_stem_1(x_conv0, prev)
        for name in self.cell_names:
            cell = getattr(self, name)
            if name.startswith("reduction"):
                # The cell after a reduction takes, as x_prev, the reduction's own x_prev
                # (cell_6 takes cell_4, cell_12 takes cell_10).
                x = cell(x, prev)
            else:
                x, prev = cell(x, prev), x
        return x

    def logits(self, fmap):
        x = self.avg_pool(self.relu(fmap))
        x = self.dropout(x.view(x.size(0), -1))
        return self.last_linear(x)

    def forward(self, x):
        return self.logits(self.features(x))


def create_imagenet(name):
    """The unmodified upstream network as pretrainedmodels.nasnetalarge(num_classes=1000)
    returns it (its 1000-way last_linear)."""
    return NASNetALarge(num_classes=1000, **VARIANTS[name])


def create(name, drop_path_rate=0.0):
    """The network as the baseline's ft_net_NAS modifies it: avg_pool adaptive, dropout and
    last_linear emptied (no last_linear keys). NASNet has no stochastic depth, so
    drop_path_rate is ignored."""
    del drop_path_rate
    net = create_imagenet(name)
    net.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
    net.dropout = nn.Sequential()
    net.last_linear = nn.Sequential()
    return net


def features(net, x):
    """The map the baseline pools: cell_17's output, without upstream's ReLU."""
    return net.features(x)
