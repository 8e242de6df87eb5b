"""timm's Swin Transformer v1 (swin_tiny .. swin_large_patch4_window7_224) on plain torch, as the
baseline's ft_net_swin uses it: timm.create_model('swin_base_patch4_window7_224',
drop_path_rate=0.2), then `model.head = nn.Sequential()`; the baseline permutes
forward_features' normed (B, H/32, W/32, C) map to NCHW and average-pools it.

Written from timm's timm/models/swin_transformer.py (WindowAttention, SwinTransformerBlock,
PatchMerging, SwinTransformerStage, SwinTransformer, checkpoint_filter_fn) and timm/layers
(PatchEmbed, Mlp, DropPath, ClassifierHead): the same module names, registration order,
non-persistent buffers (relative_position_index, attn_mask), LayerNorm eps (1e-5), -100 mask,
window clamping, stochastic-depth schedule and init. Attention is timm's unfused arithmetic
(its default; PyTorch 1.13 has no fused kernel). The layers and window helpers shared with
the other reference networks are in timm_layers.py.
"""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_layers import (ClassifierHead, DropPath, Mlp, PatchEmbed, attention, calc_window_shift,
                         drop_path_rates, merge_2x2, merge_heads, relative_position_index,
                         shift_mask, split_qkv, trunc_normal_init, window_attention)

# name: (embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio, default img_size)
VARIANTS = {
    "swin_tiny_patch4_window7_224": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 4, 4.0, (224, 224)),
    "swin_small_patch4_window7_224": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 4, 4.0, (224, 224)),
    "swin_base_patch4_window7_224": (128, (2, 2, 18, 2), (4, 8, 16, 32), 7, 4, 4.0, (224, 224)),
    "swin_large_patch4_window7_224": (192, (2, 2, 18, 2), (6, 12, 24, 48), 7, 4, 4.0, (224, 224)),
    # Fast tests: 128x64 gives patch grids 32x16, 16x8, 8x4 and 4x2, so stage 2 shifts along
    # the height only (window 4x4, shift 2x0) and stage 3 clamps its window to 4x2, unshifted.
    "swin_reduced": (32, (2, 2, 2, 2), (1, 2, 2, 4), 4, 4, 4.0, (128, 64)),
}


class WindowAttention(nn.Module):
    def __init__(self, dim, num_heads, window):
        super().__init__()
        self.window_size = window
        self.window_area = window[0] * window[1]
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * window[0] - 1) * (2 * window[1] - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.attn_drop = nn.Dropout(0.0)  # p = 0: timm's module layout, attention() leaves it out
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        self.softmax = nn.Softmax(dim=-1)  # timm's module layout; attention() applies the softmax
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def rel_pos_bias(self):
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(self.window_area, self.window_area, -1).permute(2, 0, 1).contiguous()
        return bias.unsqueeze(0)

    def forward(self, x, mask=None):
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        if mask is not None:  # (windows, n, n) -> one per window of every sample
            mask = mask.repeat(x.shape[0] // mask.shape[0], 1, 1).unsqueeze(1)
        x = merge_heads(attention(q, k, v, self.rel_pos_bias(), self.scale, mask))
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim, resolution, num_heads, window, shift, mlp_ratio, drop_path_rate):
        super().__init__()
        self.input_resolution = resolution
        self.window_size, self.shift_size = calc_window_shift(resolution, window, shift)
        self.window_area = self.window_size[0] * self.window_size[1]
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, self.window_size)
        self.drop_path1 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        padded = tuple(-(-r // w) * w for r, w in zip(resolution, self.window_size))
        self.register_buffer("attn_mask", shift_mask(padded, self.window_size, self.shift_size),
                             persistent=False)

    def _attn(self, x):
        return window_attention(x, self.attn, self.window_size, self.shift_size, self.attn_mask)

    def forward(self, x):
        b, h, w, c = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = x.reshape(b, -1, c)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(b, h, w, c)


class PatchMerging(nn.Module):
    def __init__(self, dim, out_dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x):
        _, h, w, _ = x.shape
        x = merge_2x2(F.pad(x, (0, 0, 0, w % 2, 0, h % 2)))
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Module):
    def __init__(self, dim, out_dim, resolution, depth, downsample, num_heads, window, mlp_ratio,
                 rates):
        super().__init__()
        out_res = tuple(r // 2 for r in resolution) if downsample else tuple(resolution)
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        shift = (window[0] // 2, window[1] // 2)
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(out_dim, out_res, num_heads, window, (0, 0) if i % 2 == 0 else shift,
                                 mlp_ratio, rates[i])
            for i in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class SwinTransformer(nn.Module):
    def __init__(self, img_size, patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio,
                 drop_path_rate=0.0, num_classes=1000):
        super().__init__()
        n = len(depths)
        dims = [embed_dim * 2 ** i for i in range(n)]
        self.num_features = dims[-1]
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim, norm=True, flatten=False)
        grid = self.patch_embed.grid_size
        window = (window_size, window_size)
        rates = drop_path_rates(drop_path_rate, depths)
        layers = []
        in_dim, scale = dims[0], 1
        for i in range(n):
            layers.append(SwinTransformerStage(in_dim, dims[i], (grid[0] // scale, grid[1] // scale),
                                               depths[i], i > 0, num_heads[i], window, mlp_ratio,
                                               rates[i]))
            in_dim = dims[i]
            if i > 0:
                scale *= 2
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes)
        trunc_normal_init(self)  # timm's init_weights_vit_timm

    def forward_features(self, x):
        return self.norm(self.layers(self.patch_embed(x)))

    def forward(self, x):
        return self.head(self.forward_features(x))


def create_imagenet(name, drop_path_rate=0.0, img_size=None):
    embed_dim, depths, heads, window, patch, mlp_ratio, default_size = VARIANTS[name]
    return SwinTransformer(tuple(img_size or default_size), patch, embed_dim, depths, heads, window,
                           mlp_ratio, drop_path_rate)


def create(name, drop_path_rate=0.0, img_size=None):
    net = create_imagenet(name, drop_path_rate, img_size)
    net.head = nn.Sequential()
    return net


def features(net, x):
    return net.forward_features(x).permute(0, 3, 1, 2)


def old_timm_state_dict(net):
    """The state_dict of `net` as older timm (and Microsoft's) files lay it out: PatchMerging at
    the end of stage N as layers.N.downsample, the head as head.weight / head.bias, and the
    buffers relative_position_index and attn_mask (shifted blocks only) kept, in the order
    of those modules' registration (a module's own buffers before its children)."""
    current = net.state_dict()
    out = {}
    for key, value in current.items():
        match = re.match(r"^layers\.(\d+)\.downsample\.", key)
        if match or key.startswith("norm.") or key.startswith("head."):
            continue  # placed below, after their stages
        block = re.match(r"^(layers\.\d+\.blocks\.\d+)\.norm1\.weight$", key)
        if block:
            mask = net.get_submodule(block.group(1)).attn_mask
            if mask is not None:
                out[block.group(1) + ".attn_mask"] = mask.clone()
        out[key] = value
        if key.endswith(".attn.relative_position_bias_table"):
            attn = net.get_submodule(key[:-len(".relative_position_bias_table")])
            out[key[:-len("relative_position_bias_table")] + "relative_position_index"] = \
                attn.relative_position_index.clone()
    # Stage N's merging goes after its blocks, before stage N + 1's.
    ordered = {}
    stages = len(net.layers)
    for key, value in out.items():
        ordered[key] = value
        match = re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.bias$", key)
        if match and int(match.group(2)) == len(net.layers[int(match.group(1))].blocks) - 1:
            stage = int(match.group(1))
            if stage + 1 < stages:
                for name in ("norm.weight", "norm.bias", "reduction.weight"):
                    ordered[f"layers.{stage}.downsample.{name}"] = \
                        current[f"layers.{stage + 1}.downsample.{name}"]
    ordered["norm.weight"] = current["norm.weight"]
    ordered["norm.bias"] = current["norm.bias"]
    for name in ("weight", "bias"):
        if f"head.fc.{name}" in current:
            ordered[f"head.{name}"] = current[f"head.fc.{name}"]
    return ordered
