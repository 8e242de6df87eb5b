"""timm's DINOv3 ViTs (vit_small/base/large_patch16_dinov3, timm's Eva class) on plain torch, as
the baseline uses them: timm.create_model('vit_base_patch16_dinov3', img_size=(256, 128),
drop_path_rate=0.2), then `model.head = nn.Sequential()`; it averages every token that
forward_features returns (class, 4 registers and patches, after the final norm).

Written from timm's timm/models/eva.py (EvaAttention, EvaBlock, Eva, _init_weights,
fix_init_weight) and timm/layers (PatchEmbed, Mlp, LayerNorm, RotaryEmbeddingDinoV3,
make_coords_dinov3, apply_rot_embed_cat, rope_rotate_half, global_pool_nlc): the same module
names, registration order, eps (1e-5), rotary layout and init. The rotary periods are a
non-persistent buffer in timm, so they are not in state_dict(). Attention is timm's unfused
arithmetic (torch 1.13 has no F.scaled_dot_product_attention). The pieces shared with the
other reference networks are in timm_layers.py.

`original_state_dict(net)` gives the weights in the layout of the facebookresearch/dinov3
release (storage_tokens, mask_token, rope_embed.periods, ls1/ls2.gamma, a k-masked qkv bias),
which timm's checkpoint filter maps back.
"""
import math

import torch
import torch.nn as nn

from timm_layers import (Mlp, PatchEmbed, attention, drop_path, drop_path_rates, merge_heads, split_qkv,
                         trunc_normal_init)

# name -> (embed_dim, depth, num_heads, num_reg_tokens, default img_size)
VARIANTS = {
    "vit_small_patch16_dinov3": (384, 12, 6, 4, (256, 128)),
    "vit_base_patch16_dinov3": (768, 12, 12, 4, (256, 128)),
    "vit_large_patch16_dinov3": (1024, 24, 16, 4, (256, 128)),
    "dinov3_reduced": (64, 3, 4, 4, (128, 64)),
}
PATCH = 16
EPS = 1e-5
ROPE_TEMPERATURE = 100.0
LAYER_SCALE_INIT = 1e-5
MLP_RATIO = 4.0


def rope_periods(head_dim, temperature=ROPE_TEMPERATURE):
    quarter = head_dim // 4
    exponents = 2.0 * torch.arange(quarter, dtype=torch.float32) / (head_dim // 2)
    return temperature ** exponents


def rope_embed(periods, grid_h, grid_w):
    """(grid_h * grid_w, 2 * head_dim): [sin | cos], each tiled twice (the rotate-half layout)."""
    coords_h = torch.arange(0.5, grid_h, dtype=torch.float32) / float(grid_h)
    coords_w = torch.arange(0.5, grid_w, dtype=torch.float32) / float(grid_w)
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
    coords = 2.0 * coords - 1.0
    coords = coords[:, :, None].to(periods.dtype)
    angles = (2 * math.pi * coords / periods[None, None, :]).flatten(1).tile(2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def rotate_half(x):
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x, embed):
    sin, cos = embed.chunk(2, -1)
    return x * cos + rotate_half(x) * sin


class DinoV3Rope(nn.Module):
    def __init__(self, head_dim):
        super().__init__()
        self.register_buffer("periods", rope_periods(head_dim), persistent=False)

    def get_embed(self, shape):
        return rope_embed(self.periods, shape[0], shape[1])


class EvaAttention(nn.Module):
    def __init__(self, dim, num_heads, num_prefix_tokens):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.num_prefix_tokens = num_prefix_tokens
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope):
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        npt = self.num_prefix_tokens
        q = torch.cat([q[:, :, :npt], apply_rope(q[:, :, npt:], rope)], dim=2).type_as(v)
        k = torch.cat([k[:, :, :npt], apply_rope(k[:, :, npt:], rope)], dim=2).type_as(v)
        return self.proj(merge_heads(attention(q, k, v, scale=self.scale)))


class EvaBlock(nn.Module):
    def __init__(self, dim, num_heads, num_prefix_tokens, drop_path_rate):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = EvaAttention(dim, num_heads, num_prefix_tokens)
        self.gamma_1 = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, int(dim * MLP_RATIO))
        self.gamma_2 = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))
        self.drop_path_rate = drop_path_rate

    def forward(self, x, rope):
        x = x + drop_path(self.gamma_1 * self.attn(self.norm1(x), rope), self.drop_path_rate, self.training)
        x = x + drop_path(self.gamma_2 * self.mlp(self.norm2(x)), self.drop_path_rate, self.training)
        return x


class Eva(nn.Module):
    def __init__(self, dim, depth, num_heads, num_reg_tokens, drop_path_rate=0.0, num_classes=1000):
        super().__init__()
        self.num_prefix_tokens = 1 + num_reg_tokens
        self.patch_embed = PatchEmbed(None, PATCH, dim, flatten=False)  # NHWC, any multiple of 16
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.reg_token = nn.Parameter(torch.empty(1, num_reg_tokens, dim))
        self.rope = DinoV3Rope(dim // num_heads)
        rates = drop_path_rates(drop_path_rate, [depth])[0]
        self.blocks = nn.ModuleList([EvaBlock(dim, num_heads, self.num_prefix_tokens, r) for r in rates])
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self):
        trunc_normal_init(self)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.reg_token, std=0.02)
        with torch.no_grad():
            for layer_id, block in enumerate(self.blocks):
                scale = math.sqrt(2.0 * (layer_id + 1))
                block.attn.proj.weight.div_(scale)
                block.mlp.fc2.weight.div_(scale)
            self.head.weight.mul_(0.001)
            self.head.bias.mul_(0.001)

    def forward_features(self, x):
        x = self.patch_embed(x)
        b, h, w, c = x.shape
        x = x.view(b, -1, c)
        rope = self.rope.get_embed((h, w))
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.reg_token.expand(b, -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)

    def forward(self, x):
        x = self.forward_features(x)
        return self.head(x[:, self.num_prefix_tokens:].mean(dim=1))  # timm's 'avg': patch tokens only


def create_imagenet(name, drop_path_rate=0.0, img_size=None):
    """img_size only fixes timm's nominal grid: any size of multiples of 16 runs (dynamic_img_size)."""
    dim, depth, heads, regs, default_size = VARIANTS[name]
    size = tuple(img_size) if img_size is not None else default_size
    assert size[0] % PATCH == 0 and size[1] % PATCH == 0, size
    return Eva(dim, depth, heads, regs, drop_path_rate)


def create(name, drop_path_rate=0.0, img_size=None):
    net = create_imagenet(name, drop_path_rate, img_size)
    net.head = nn.Sequential()
    return net


def features(net, x, class_token=False):
    """(B, D, 1, T) of all tokens, or the class token as (B, D, 1, 1)."""
    tokens = net.forward_features(x)
    if class_token:
        return tokens[:, 0, :, None, None]
    return tokens.transpose(1, 2).unsqueeze(2)


def original_state_dict(net):
    """net's weights as the facebookresearch/dinov3 release lays them out: its key names and
    order, the pretraining-only mask_token, the periods it stores (rounded to bfloat16, as in
    the published files), and a qkv bias (zero, as in the distilled B and L files) with its
    mask that zeroes the k part."""
    sd = net.state_dict()
    dim = sd["cls_token"].shape[-1]
    out = {
        "cls_token": sd["cls_token"],
        "storage_tokens": sd["reg_token"],
        "mask_token": torch.zeros(1, dim),
        "patch_embed.proj.weight": sd["patch_embed.proj.weight"],
        "patch_embed.proj.bias": sd["patch_embed.proj.bias"],
        "rope_embed.periods": net.rope.periods.to(torch.bfloat16).float(),
    }
    for i in range(len(net.blocks)):
        p = f"blocks.{i}."
        mask = torch.ones(3 * dim)
        mask[dim:2 * dim] = 0
        out.update({
            p + "norm1.weight": sd[p + "norm1.weight"],
            p + "norm1.bias": sd[p + "norm1.bias"],
            p + "attn.qkv.weight": sd[p + "attn.qkv.weight"],
            p + "attn.qkv.bias": torch.zeros(3 * dim),
            p + "attn.qkv.bias_mask": mask,
            p + "attn.proj.weight": sd[p + "attn.proj.weight"],
            p + "attn.proj.bias": sd[p + "attn.proj.bias"],
            p + "ls1.gamma": sd[p + "gamma_1"],
            p + "norm2.weight": sd[p + "norm2.weight"],
            p + "norm2.bias": sd[p + "norm2.bias"],
            p + "mlp.fc1.weight": sd[p + "mlp.fc1.weight"],
            p + "mlp.fc1.bias": sd[p + "mlp.fc1.bias"],
            p + "mlp.fc2.weight": sd[p + "mlp.fc2.weight"],
            p + "mlp.fc2.bias": sd[p + "mlp.fc2.bias"],
            p + "ls2.gamma": sd[p + "gamma_2"],
        })
    out["norm.weight"] = sd["norm.weight"]
    out["norm.bias"] = sd["norm.bias"]
    return out
