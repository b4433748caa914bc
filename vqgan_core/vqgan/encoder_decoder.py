"""Convolutional encoder and decoder of the VQGAN, with taming's module tree (``down.{i}``, ``up.{i}``, ``mid``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQGANConfig
from .layers import AttnBlock, Downsample, MidBlock, ResnetBlock, Upsample, normalize


class _Level(nn.Module):
    """One resolution level: ``block`` and ``attn`` lists plus an optional ``downsample``/``upsample``."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


class Encoder(nn.Module):
    """Image ``[B, in_channels, H, W]`` -> features ``[B, z_channels, H/f, W/f]``.

    Attention placement follows ``config.resolution``, not the runtime size (as in taming), so the model runs
    on any size divisible by the downsampling factor.
    """

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        n_levels, g = len(cfg.ch_mult), cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        block_out = cfg.ch
        for i in range(n_levels):
            level = _Level()
            block_in, block_out = cfg.ch * in_mult[i], cfg.ch * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout, g))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in, g))
            if i != n_levels - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = MidBlock(block_out, cfg.dropout, g)
        self.norm_out = normalize(block_out, g)
        self.conv_out = nn.Conv2d(block_out, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent ``[B, z_channels, h, w]`` -> image ``[B, out_ch, h*f, w*f]`` (not clamped; images live in [-1, 1]).

    ``up.{i}`` is indexed by level: ``up.{L-1}`` (lowest resolution) runs first, ``up.0`` last.
    """

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        n_levels, g = len(cfg.ch_mult), cfg.norm_groups
        block_in = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (n_levels - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = MidBlock(block_in, cfg.dropout, g)
        levels: list[_Level] = []
        for i in reversed(range(n_levels)):
            level = _Level()
            block_out = cfg.ch * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout, g))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in, g))
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(block_in, g)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
