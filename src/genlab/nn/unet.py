"""A small class-conditional U-Net for 28×28 images, shared by flow matching and diffusion.

    net = UNet(channels=32, channel_mults=(1, 2, 2), n_classes=10, attention=False, dropout=0.0)
    out = net(x, t, y)        # or UNet.from_config(cfg.model.<stage>.unet, n_classes=10)

* ``x``   float ``[B, C, 28, 28]`` (C = ``in_channels``, default 1), any scale (the caller's data space).
* ``t``   float ``[B]`` (or a scalar, broadcast) **in [0, 1]**: continuous time. Flow matching passes its
  ODE time directly; diffusion passes ``step / T``. Internally embedded as ``1000·t`` (DDPM's step scale).
* ``y``   int64 ``[B]`` in ``{0, …, n_classes}``; the value ``n_classes`` (``net.null_class``) is the
  *null* label — the unconditional branch of classifier-free guidance (Ho & Salimans 2022).
  ``y=None`` means "all null". With ``n_classes=0`` the net is unconditional.
* returns float ``[B, C, 28, 28]``: whatever the method regresses (ε for diffusion, a velocity for FM).

Layout (Ho et al. 2020, Appendix B, scaled down for a CPU): sinusoidal time embedding → MLP, plus a
learned class embedding (``n_classes + 1`` rows) added to it; per resolution one residual block
(GroupNorm → SiLU → 3×3 conv, twice; the embedding scales and shifts the second GroupNorm); stride-2 conv down
28→14→7 (one level per entry of ``channel_mults``, at most 3), a middle block at the lowest
resolution (optional self-attention there), then up: a 1×1 conv narrows the features to the next level's width,
×2 nearest upsampling, concatenation with the skip — U-Net's "up-convolution that halves the number of feature
channels" before the concatenation (Ronneberger et al. 2015, §2). A 1×1 conv commutes with nearest upsampling,
so it runs at the low resolution, and the full-resolution block mixes fewer channels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (fewer for the tiny widths of the smoke preset)."""
    return nn.GroupNorm(math.gcd(8, ch), ch)


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017, §3.5; DDPM's time input) of ``scale·t`` ``[B]`` → ``[B, dim]``,
    computed in float32 or in ``t``'s dtype if wider (half precision would blur the phases of ``scale·t``)."""
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32) if t.is_floating_point() else torch.float32
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = scale * t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    """``[B, c_in, H, W]`` + embedding ``[B, E]`` → ``[B, c_out, H, W]``: two convs, the embedding modulating
    the second norm as ``GN(h)·(1 + scale) + shift`` (Nichol & Dhariwal 2021's scale-shift norm; a plain
    added bias before GroupNorm would be normalised away when a group holds one channel)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Sequential(norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * c_out))
        self.norm2 = norm(c_out)
        self.conv2 = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(self.conv1(x)) * (1 + scale) + shift
        return self.skip(x) + self.conv2(h)


class SelfAttention(nn.Module):
    """Single-head self-attention over the H·W positions, residual: ``[B, c, H, W]`` → same."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm, self.qkv, self.out = norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)   # each [B, HW, c]
        a = F.scaled_dot_product_attention(q, k, v)                                             # [B, HW, c]
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, channels: int = 32, channel_mults: tuple[int, ...] = (1, 2, 2), n_classes: int = 10,
                 attention: bool = False, dropout: float = 0.0, in_channels: int = 1):
        super().__init__()
        assert 1 <= len(channel_mults) <= 3, "28×28 inputs allow 1–3 resolutions (28, 14, 7)"
        self.n_classes = self.null_class = n_classes
        emb_dim, chs = 4 * channels, [channels * m for m in channel_mults]
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(n_classes + 1, emb_dim)
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        prev, self.down = channels, nn.ModuleList()
        for ch in chs:
            self.down.append(ResBlock(prev, ch, emb_dim, dropout))
            prev = ch
        self.pool = nn.ModuleList(nn.Conv2d(ch, ch, 3, stride=2, padding=1) for ch in chs[:-1])
        self.mid1, self.mid2 = ResBlock(prev, prev, emb_dim, dropout), ResBlock(prev, prev, emb_dim, dropout)
        self.attn = SelfAttention(prev) if attention else nn.Identity()
        self.up, self.narrow = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(chs))):   # built bottom-up; indexed by level in forward
            if i < len(self.pool):            # into level i from below: narrow to its width first
                self.narrow.insert(0, nn.Conv2d(prev, chs[i], 1) if prev != chs[i] else nn.Identity())
            self.up.insert(0, ResBlock(2 * chs[i], chs[i], emb_dim, dropout))
            prev = chs[i]
        self.out = nn.Sequential(norm(prev), nn.SiLU(), nn.Conv2d(prev, in_channels, 3, padding=1))

    @classmethod
    def from_config(cls, cfg, n_classes: int = 10) -> "UNet":
        """From a ``genlab.config.UNetConfig`` section (``model.<stage>.unet``)."""
        return cls(cfg.channels, tuple(cfg.channel_mults), n_classes, cfg.attention, cfg.dropout)

    def embed(self, t: torch.Tensor, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Time ``[B]`` + class ``[B]`` → embedding ``[B, 4·channels]``."""
        weight = self.inp.weight
        # the time is embedded in at least float32, then fed to the MLP in the weights' dtype
        time_dtype = torch.promote_types(weight.dtype, torch.float32)
        t = torch.as_tensor(t, dtype=time_dtype, device=weight.device).expand(batch)
        if y is None:
            y = torch.full((batch,), self.null_class, dtype=torch.long, device=t.device)
        return self.time_mlp(timestep_embedding(t, self.time_mlp[0].in_features).to(weight.dtype)) + self.class_emb(y)

    #: without gradients (sampling) on a CPU a batch goes through the trunk this many images at a time, so the
    #: activations stay in cache (the output is the same bit for bit; benchmarks/generative_step.py times it)
    eval_chunk: int = 50

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, C, 28, 28]``, t ``[B]`` or scalar in [0, 1], y ``[B]`` (``null_class`` or None: unconditional)
        → ``[B, C, 28, 28]``."""
        emb = self.embed(t, y, x.shape[0])
        if torch.is_grad_enabled() or x.shape[0] <= self.eval_chunk or x.device.type != "cpu":
            return self.trunk(x, emb)
        return torch.cat([self.trunk(*part) for part in zip(x.split(self.eval_chunk), emb.split(self.eval_chunk))])

    def trunk(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h, skips = self.inp(x), []
        for i, block in enumerate(self.down):                 # 28 → 14 → 7
            h = block(h, emb)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for i in reversed(range(len(self.up))):               # 7 → 14 → 28
            if i < len(self.pool):   # narrow, ×2 nearest: [B, chs[i], H, W], the skip's shape
                h = F.interpolate(self.narrow[i](h), scale_factor=2.0, mode="nearest")
            h = self.up[i](torch.cat([h, skips[i]], dim=1), emb)
        return self.out(h)
