"""timm's Swin Transformer V2 (swinv2_tiny/small/base, window 8 and 16, at 256) on plain torch, as
a ReID baseline uses it: timm.create_model('swinv2_base_window8_256', img_size=(256, 128),
drop_path_rate=0.2), then `model.head = nn.Sequential()`, so that forward_features' final norm
is the map the baseline pools.

Written from timm's timm/models/swin_transformer_v2.py (WindowAttention, SwinTransformerV2Block,
PatchMerging, SwinTransformerV2Stage, SwinTransformerV2, checkpoint_filter_fn) and timm/layers
(PatchEmbed, Mlp, ClassifierHead): the same module names, registration order, non-persistent
buffers, LayerNorm eps (torch's 1e-5), init and stochastic-depth schedule. torch 1.13 has no
fused attention, and timm's SwinV2 does not use it anyway: the cosine attention is unfused.
The layers and window helpers shared with the other reference networks are in timm_layers.py.
"""
import collections
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_layers import (ClassifierHead, DropPath, Mlp, PatchEmbed, calc_window_shift, drop_path_rates,
                         merge_2x2, merge_heads, relative_position_index, shift_mask, split_qkv,
                         trunc_normal_init, window_attention)

__all__ = ["VARIANTS", "create", "create_imagenet", "features", "old_timm_state_dict"]

# name -> architecture; img_size is the size `create` builds for by default: the baseline's
# 256x128 for timm's variants (timm's own default is 256x256; the weights fit both).
VARIANTS = {
    "swinv2_tiny_window8_256": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                    window_size=8, img_size=(256, 128)),
    "swinv2_tiny_window16_256": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                     window_size=16, img_size=(256, 128)),
    "swinv2_small_window8_256": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                                     window_size=8, img_size=(256, 128)),
    "swinv2_small_window16_256": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                                      window_size=16, img_size=(256, 128)),
    "swinv2_base_window8_256": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                                    window_size=8, img_size=(256, 128)),
    "swinv2_base_window16_256": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                                     window_size=16, img_size=(256, 128)),
    # Small, same code: shifted windows in stages 0-1, a shift along the height only in stage 2
    # (its 8x4 grid clamps the window's width to 4), and a clamped 4x2 window in stage 3.
    "swinv2_reduced": dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                           window_size=4, img_size=(128, 64)),
}


def coordinates_table(window, pretrained_window):
    """(1, 2wh-1, 2ww-1, 2): log-spaced relative coordinates, float32 as timm computes them."""
    dh = torch.arange(-(window[0] - 1), window[0], dtype=torch.float32)
    dw = torch.arange(-(window[1] - 1), window[1], dtype=torch.float32)
    table = torch.stack(torch.meshgrid(dh, dw, indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
    divisor = pretrained_window if pretrained_window[0] > 0 else window
    table[:, :, :, 0] /= divisor[0] - 1
    table[:, :, :, 1] /= divisor[1] - 1
    table *= 8
    return torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / math.log2(8)


class WindowAttention(nn.Module):
    def __init__(self, dim, window_size, num_heads, pretrained_window_size=(0, 0)):
        super().__init__()
        self.dim = dim
        self.window_size = tuple(window_size)
        self.pretrained_window_size = tuple(pretrained_window_size)
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        self.softmax = nn.Softmax(dim=-1)
        self.register_buffer("relative_coords_table",
                             coordinates_table(self.window_size, self.pretrained_window_size), persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size),
                             persistent=False)

    def forward(self, x, mask=None):
        n = x.shape[1]
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        q, k, v = split_qkv(F.linear(x, weight=self.qkv.weight, bias=bias), self.num_heads)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp()
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        pos = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = attn + 16 * torch.sigmoid(pos).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0))
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn))
        return self.proj_drop(self.proj(merge_heads(attn @ v)))


class SwinTransformerV2Block(nn.Module):
    def __init__(self, dim, input_resolution, num_heads, window_size, shift_size, drop_path=0.0,
                 pretrained_window_size=0):
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.window_size, self.shift_size = calc_window_shift(
            self.input_resolution, (window_size, window_size), (shift_size, shift_size))
        self.window_area = self.window_size[0] * self.window_size[1]
        self.attn = WindowAttention(dim, self.window_size, num_heads,
                                    (pretrained_window_size, pretrained_window_size))
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * 4.0))
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        # Unlike v1, the mask is for the unpadded input resolution.
        self.register_buffer("attn_mask", self.get_attn_mask(), persistent=False)

    def get_attn_mask(self):
        return shift_mask(self.input_resolution, self.window_size, self.shift_size)

    def _attn(self, x):
        return window_attention(x, self.attn, self.window_size, self.shift_size, self.attn_mask)

    def forward(self, x):
        b, h, w, c = x.shape
        x = x + self.drop_path1(self.norm1(self._attn(x)))
        x = x.reshape(b, -1, c)
        x = x + self.drop_path2(self.norm2(self.mlp(x)))
        return x.reshape(b, h, w, c)


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (timm's order), reduced, then normalised (V2's order)."""

    def __init__(self, dim, out_dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x):
        return self.norm(self.reduction(merge_2x2(x)))


class SwinTransformerV2Stage(nn.Module):
    def __init__(self, dim, out_dim, input_resolution, depth, num_heads, window_size, downsample, rates,
                 pretrained_window_size=0):
        super().__init__()
        resolution = tuple(i // 2 for i in input_resolution) if downsample else tuple(input_resolution)
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([
            SwinTransformerV2Block(out_dim, resolution, num_heads, window_size,
                                   0 if i % 2 == 0 else window_size // 2, rates[i], pretrained_window_size)
            for i in range(depth)])

    def forward(self, x):
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class SwinTransformerV2(nn.Module):
    def __init__(self, img_size, embed_dim, depths, num_heads, window_size, drop_path_rate=0.0,
                 num_classes=1000, patch_size=4, pretrained_window_sizes=(0, 0, 0, 0)):
        super().__init__()
        num_layers = len(depths)
        self.num_features = int(embed_dim * 2 ** (num_layers - 1))
        dims = [int(embed_dim * 2 ** i) for i in range(num_layers)]
        self.patch_embed = PatchEmbed(img_size, patch_size, dims[0], norm=True, flatten=False)
        grid = self.patch_embed.grid_size
        rates = drop_path_rates(drop_path_rate, depths)
        layers = []
        in_dim, scale = dims[0], 1
        for i in range(num_layers):
            layers.append(SwinTransformerV2Stage(in_dim, dims[i], (grid[0] // scale, grid[1] // scale), depths[i],
                                                 num_heads[i], window_size, i > 0, rates[i],
                                                 pretrained_window_sizes[i]))
            in_dim = dims[i]
            if i > 0:
                scale *= 2
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes)
        # timm's _init_weights, then _init_respostnorm: every block starts as the identity.
        trunc_normal_init(self)
        for stage in self.layers:
            for block in stage.blocks:
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    def forward_features(self, x):
        return self.norm(self.layers(self.patch_embed(x)))

    def forward(self, x):
        return self.head(self.forward_features(x))


def create_imagenet(name, drop_path_rate=0.0, img_size=None):
    spec = dict(VARIANTS[name])
    default_size = spec.pop("img_size")
    return SwinTransformerV2(img_size or default_size, drop_path_rate=drop_path_rate, **spec)


def create(name, drop_path_rate=0.0, img_size=None):
    net = create_imagenet(name, drop_path_rate, img_size)
    net.head = nn.Sequential()
    return net


def features(net, x):
    """The final norm's (B, H/32, W/32, C) map as NCHW."""
    return net.forward_features(x).permute(0, 3, 1, 2).contiguous()


def old_timm_state_dict(net):
    """`net`'s weights in the layout of the original (Microsoft) and pre-2023 timm files: each
    PatchMerging at the end of the stage before (layers.N.downsample -> layers.N-1.downsample),
    the classifier as `head`, and the window buffers (relative_coords_table,
    relative_position_index, attn_mask of shifted blocks) persistent."""
    current = net.state_dict()
    out = collections.OrderedDict()
    for i, stage in enumerate(net.layers):
        prefix = f"layers.{i}."
        for j, block in enumerate(stage.blocks):
            block_prefix = f"{prefix}blocks.{j}."
            if block.attn_mask is not None:
                out[block_prefix + "attn_mask"] = block.attn_mask.clone()
            attn = block_prefix + "attn."
            for key in ("logit_scale", "q_bias", "v_bias"):
                out[attn + key] = current[attn + key]
            out[attn + "relative_coords_table"] = block.attn.relative_coords_table.clone()
            out[attn + "relative_position_index"] = block.attn.relative_position_index.clone()
            for key, value in current.items():
                if key.startswith(block_prefix) and key[len(block_prefix):].split(".")[0] != "attn_mask" \
                        and key not in out:
                    out[key] = value
        following = f"layers.{i + 1}.downsample."
        for key, value in current.items():
            if key.startswith(following):
                out[f"layers.{i}.downsample." + key[len(following):]] = value
    for key, value in current.items():
        if not key.startswith("layers.") and key.startswith(("patch_embed.", "norm.")):
            out[key] = value
    for key, value in current.items():
        if key.startswith("head.fc."):
            out["head." + key[len("head.fc."):]] = value
    # patch_embed first, as in the files
    ordered = collections.OrderedDict((k, v) for k, v in out.items() if k.startswith("patch_embed."))
    ordered.update((k, v) for k, v in out.items() if not k.startswith("patch_embed."))
    return ordered
