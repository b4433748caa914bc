"""Building blocks of the taming-transformers VQGAN, with its exact parameter names.

Reference: Esser et al., "Taming Transformers for High-Resolution Image Synthesis" (2021), and the
diffusionmodules/model.py layout it shares with DDPM. Key names (norm1, conv1, nin_shortcut, q/k/v,
proj_out...) must not change: released checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalize(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm(32, eps=1e-6): taming's ``Normalize`` (tiny models may use fewer groups)."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: norm, swish, conv, twice; 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, groups: int = 32) -> None:
        super().__init__()
        self.norm1 = normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (softmax over keys, scale c**-0.5)."""

    def __init__(self, channels: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = normalize(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        # [B, 1, HW, C]: SDPA picks a fused kernel (flash/memory-efficient on GPU) with the same maths.
        q, k, v = (t(h).reshape(b, 1, c, hh * ww).transpose(-1, -2) for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 conv after an asymmetric (right/bottom) zero pad, exactly as taming does."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResnetBlock, attention, ResnetBlock: the bottleneck of encoder and decoder."""

    def __init__(self, channels: int, dropout: float, groups: int = 32) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, dropout, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))
