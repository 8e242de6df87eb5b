"""timm's building blocks shared by the reference networks, written from timm/layers and
timm/models (vision_transformer.py, swin_transformer.py, swin_transformer_v2.py, eva.py,
convnext.py).

Module names, registration order and arithmetic follow timm, so that the networks built from
these pieces have timm's state_dict keys and timm's numbers. Attention is the unfused
arithmetic (torch 1.13 has no F.scaled_dot_product_attention).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


# --- stochastic depth and init --------------------------------------------------------------

def drop_path(x, rate, training):
    """timm's drop_path: zero whole samples with probability `rate`, scale the rest by 1 / keep."""
    if rate == 0.0 or not training:
        return x
    keep = 1 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        return drop_path(x, self.rate, self.training)


def drop_path_rates(rate, depths):
    """timm's stochastic-depth schedule: linspace(0, rate) over all blocks, split per stage."""
    return [r.tolist() for r in torch.linspace(0, rate, sum(depths)).split(list(depths))]


def trunc_normal_init(net, types=(nn.Linear,)):
    """timm's init_weights_vit_timm (and ConvNeXt's _init_weights with types=(Conv2d, Linear)):
    each such module, in modules() order, gets a truncated normal weight (std 0.02), zero bias."""
    for module in net.modules():
        if isinstance(module, types):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# --- layers ---------------------------------------------------------------------------------

class Mlp(nn.Module):
    """timm's Mlp: fc1, GELU, fc2 (drop1, norm and drop2 are parameterless identities here)."""

    def __init__(self, channels, hidden):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, channels)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class PatchEmbed(nn.Module):
    """timm's PatchEmbed: Conv2d(3, D, patch_size, stride) (stride = patch_size by default), its
    map flattened to tokens (B, h * w, D) or kept channels-last (B, h, w, D) (output_fmt NHWC),
    then a LayerNorm (norm=True) or nothing. With img_size the input must be that size; with
    img_size=None any multiple of the patch (timm's dynamic_img_size)."""

    def __init__(self, img_size, patch_size, embed_dim, stride=None, norm=False, flatten=True):
        super().__init__()
        stride = stride or patch_size
        self.patch_size = patch_size
        self.img_size = tuple(img_size) if img_size is not None else None
        if self.img_size is not None:
            self.grid_size = tuple((s - patch_size) // stride + 1 for s in self.img_size)
            self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = flatten
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=stride)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x):
        if self.img_size is not None:
            assert tuple(x.shape[-2:]) == self.img_size, (tuple(x.shape[-2:]), self.img_size)
        else:
            assert x.shape[-2] % self.patch_size == 0 and x.shape[-1] % self.patch_size == 0, x.shape
        x = self.proj(x)
        x = x.flatten(2).transpose(1, 2) if self.flatten else x.permute(0, 2, 3, 1)
        return self.norm(x)


class AvgPoolNHWC(nn.Module):
    def forward(self, x):
        return x.mean((1, 2))


class ClassifierHead(nn.Module):
    """timm's ClassifierHead(pool 'avg', input_fmt NHWC): only `fc` has weights."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.global_pool = AvgPoolNHWC()
        self.drop = nn.Dropout(0.0)
        self.fc = nn.Linear(channels, num_classes)
        self.flatten = nn.Identity()

    def forward(self, x):
        return self.flatten(self.fc(self.drop(self.global_pool(x))))


# --- attention ------------------------------------------------------------------------------

def split_qkv(qkv, num_heads):
    """(B, N, 3 * C) -> q, k, v, each (B, heads, N, C / heads)."""
    b, n, _ = qkv.shape
    return qkv.reshape(b, n, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(x):
    """(B, heads, N, d) -> (B, N, heads * d)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def attention(q, k, v, bias=None, scale=None, mask=None):
    """softmax((q * scale) @ k^T + bias + mask) @ v, timm's unfused arithmetic (q scaled first,
    the additive terms added in that order); scale defaults to head_dim ** -0.5. Attention
    dropout (p = 0 in these networks) is the identity and left out."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    if mask is not None:
        attn = attn + mask
    return attn.softmax(dim=-1) @ v


# --- Swin windows ---------------------------------------------------------------------------

def window_partition(x, window):
    """(B, H, W, C) -> (B * windows, wh, ww, C), windows row-major within each sample."""
    b, h, w, c = x.shape
    x = x.view(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window[0], window[1], c)


def window_reverse(windows, window, h, w):
    """window_partition's inverse: (B * windows, wh, ww, C) -> (B, h, w, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window[0], w // window[1], window[0], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, c)


def relative_position_index(window):
    """(wh * ww, wh * ww): index of each pair's relative offset in the (2wh-1) x (2ww-1) table."""
    grid = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij"))
    flat = grid.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window[0] - 1
    rel[:, :, 1] += window[1] - 1
    rel[:, :, 0] *= 2 * window[1] - 1
    return rel.sum(-1)


def calc_window_shift(resolution, window, shift):
    """timm's _calc_window_shift: an axis no longer than the window is one window, unshifted."""
    window = tuple(r if r <= w else w for r, w in zip(resolution, window))
    shift = tuple(0 if r <= w else s for r, w, s in zip(resolution, window, shift))
    return window, shift


def shift_mask(size, window, shift):
    """timm's get_attn_mask for a (size[0], size[1]) map: (windows, area, area), -100 between
    tokens that the cyclic shift brought together from different regions, else 0; None without
    a shift. Swin v1 passes its map padded to whole windows, v2 its input resolution."""
    if not any(shift):
        return None
    img = torch.zeros((1, size[0], size[1], 1))
    count = 0
    for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            img[:, hs[0]:hs[1], ws[0]:ws[1], :] = count
            count += 1
    windows = window_partition(img, window).view(-1, window[0] * window[1])
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def window_attention(x, attn, window, shift, mask):
    """The Swin blocks' _attn on a (B, H, W, C) map: cyclic shift, zero padding to whole
    windows, `attn(windows, mask=mask)`, then the windows merged, cropped and shifted back."""
    b, h, w, c = x.shape
    has_shift = any(shift)
    if has_shift:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    pad_h = (window[0] - h % window[0]) % window[0]
    pad_w = (window[1] - w % window[1]) % window[1]
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    _, hp, wp, _ = x.shape
    windows = window_partition(x, window).view(-1, window[0] * window[1], c)
    windows = attn(windows, mask=mask).view(-1, window[0], window[1], c)
    x = window_reverse(windows, window, hp, wp)[:, :h, :w, :].contiguous()
    if has_shift:
        x = torch.roll(x, shifts=shift, dims=(1, 2))
    return x


def merge_2x2(x):
    """PatchMerging's gather: (B, H, W, C) -> (B, H/2, W/2, 4C), timm's channel order."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
