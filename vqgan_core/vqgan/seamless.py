"""Seamless (tileable) images: the VQGAN sees the image as a torus.

Why: a texture that tiles must continue across its left/right and top/bottom edges. With circular padding
in every convolution the decoder is equivariant to rolling (GroupNorm statistics, nearest upsampling and
the attention blocks already are): decoding a latent rolled by k cells gives the image rolled by k*f
pixels, so whatever latent the optimiser finds decodes to an image without seams. During generation each
step also shows CLIP the image rolled by a random offset, so the content across the edges is judged as
one picture, not as two borders.

The twin shares the original's weights (no extra memory); only its padding differs.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from .layers import Downsample

__all__ = ["is_seamless", "random_roll", "seamless_copy"]


def is_seamless(model: nn.Module) -> bool:
    """True when the model's padded convolutions wrap around (a :func:`seamless_copy`)."""
    return any(isinstance(m, nn.Conv2d) and m.padding_mode == "circular" for m in model.modules())


def seamless_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` sharing its parameters and buffers whose convolutions pad circularly.

    The original keeps its padding. Stride-2 ``Downsample`` convs (taming pads them right/bottom by
    hand) wrap their pad too. The weights are shared objects: ``.to()`` / ``.half()`` on either model
    converts the other's parameters as well (move or convert the original, then make the twin).
    """
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    twin = copy.deepcopy(model, memo=shared)
    for m in twin.modules():
        if isinstance(m, Downsample):
            m.conv.padding_mode = "circular"  # read by Downsample.forward for its hand-made pad
        elif isinstance(m, nn.Conv2d) and (m.padding == "same" or (
                not isinstance(m.padding, str) and any(p > 0 for p in m.padding))):
            m.padding_mode = "circular"
    return twin


def random_roll(img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``[B,C,H,W]`` rolled by a random offset along both axes (device-side draw: no host sync)."""
    _, _, h, w = img.shape
    u = torch.rand(2, generator=generator, device=img.device)
    rows = (torch.arange(h, device=img.device) + (u[0] * h).long()) % h
    cols = (torch.arange(w, device=img.device) + (u[1] * w).long()) % w
    return img.index_select(2, rows).index_select(3, cols)
