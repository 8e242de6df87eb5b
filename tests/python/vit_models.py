"""timm's vision transformer (vit_tiny/small/base_patch16_224) on plain torch, as reidnet's
vit_* backbones use it: built for ReID's 256x128 input (the position table sized to its patch
grid), optionally with TransReID's overlapping patches (a patch stride below 16), without the
ImageNet head; the feature is the patch tokens after the final norm as an NCHW map, or the class
token as (B, D, 1, 1).

Written from timm's timm/models/vision_transformer.py (Block, VisionTransformer, init_weights,
init_weights_vit_timm) and timm/layers (PatchEmbed, Attention, Mlp, LayerScale, DropPath,
resample_abs_pos_embed): the same module names, registration order, eps (1e-6), GELU and
stochastic-depth schedule, so that state_dict keys, order and shapes are timm's. Attention is
the unfused arithmetic (scale q, q @ k^T, softmax, @ v), as timm runs it without torch 2's SDPA.
The pieces shared with the other reference networks are in timm_layers.py.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_layers import (DropPath, Mlp, PatchEmbed, attention, drop_path_rates, merge_heads, split_qkv,
                         trunc_normal_init)

# reidnet's names -> (embed_dim, depth, num_heads, patch_size, mlp_ratio, default img_size)
VARIANTS = {
    "vit_tiny_patch16": (192, 12, 3, 16, 4.0, (256, 128)),
    "vit_small_patch16": (384, 12, 6, 16, 4.0, (256, 128)),
    "vit_base_patch16": (768, 12, 12, 16, 4.0, (256, 128)),
    "vit_reduced": (64, 3, 4, 16, 4.0, (128, 64)),
}
# timm's names of the same architectures (create accepts either)
TIMM_NAMES = {
    "vit_tiny_patch16_224": "vit_tiny_patch16",
    "vit_small_patch16_224": "vit_small_patch16",
    "vit_base_patch16_224": "vit_base_patch16",
}
EPS = 1e-6


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)  # p = 0: timm's module layout, attention() leaves it out
        self.norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        x = merge_heads(attention(self.q_norm(q), self.k_norm(k), v, scale=self.scale))
        return self.proj_drop(self.proj(self.norm(x)))


class LayerScale(nn.Module):
    def __init__(self, dim, init_values):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, drop_path_rate, init_values=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class VisionTransformer(nn.Module):
    def __init__(self, img_size, patch_size, stride, embed_dim, depth, num_heads, mlp_ratio,
                 drop_path_rate=0.0, num_classes=1000, class_token_feature=False):
        super().__init__()
        self.class_token_feature = class_token_feature
        self.num_prefix_tokens = 1
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim, stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(0.0)
        self.patch_drop = nn.Identity()
        self.norm_pre = nn.Identity()
        rates = drop_path_rates(drop_path_rate, [depth])[0]
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=EPS)
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        # timm's init_weights: the tables, then init_weights_vit_timm on every module (Linear
        # truncated normal, bias 0; the patch conv and the norms keep their construction).
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        trunc_normal_init(self)

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm_pre(self.patch_drop(self.pos_drop(x + self.pos_embed)))
        return self.norm(self.blocks(x))

    def forward_head(self, x):
        return self.head(self.head_drop(self.fc_norm(x[:, 0])))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _architecture(name):
    return VARIANTS[TIMM_NAMES.get(name, name)]


def create_imagenet(name, drop_path_rate=0.0, img_size=None, patch_stride=None, class_token=False):
    """With timm's 1000-class head, as a published file holds it."""
    dim, depth, heads, patch, ratio, default_size = _architecture(name)
    return VisionTransformer(img_size or default_size, patch, patch_stride or patch, dim, depth, heads,
                             ratio, drop_path_rate, 1000, class_token)


def create(name, drop_path_rate=0.0, img_size=None, patch_stride=None, class_token=False):
    """Without a head (no keys), as a ReID model uses it."""
    dim, depth, heads, patch, ratio, default_size = _architecture(name)
    return VisionTransformer(img_size or default_size, patch, patch_stride or patch, dim, depth, heads,
                             ratio, drop_path_rate, 0, class_token)


def features(net, x):
    """The NCHW map reidnet's forward_features returns: the patch tokens (B, D, rows, columns),
    or the class token (B, D, 1, 1), after the final norm."""
    tokens = net.forward_features(x)
    B, _, D = tokens.shape
    if net.class_token_feature:
        return tokens[:, 0].reshape(B, D, 1, 1)
    rows, columns = net.patch_embed.grid_size
    return tokens[:, 1:].transpose(1, 2).reshape(B, D, rows, columns)


def resample_abs_pos_embed(posemb, new_size, num_prefix_tokens=1):
    """timm's resample_abs_pos_embed with old_size=None and its defaults (bicubic, antialias)."""
    num_pos_tokens = posemb.shape[1]
    if new_size[0] * new_size[1] + num_prefix_tokens == num_pos_tokens and new_size[0] == new_size[1]:
        return posemb
    side = int(math.sqrt(num_pos_tokens - num_prefix_tokens))
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    dtype = grid.dtype
    grid = grid.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_size), mode="bicubic", antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid
