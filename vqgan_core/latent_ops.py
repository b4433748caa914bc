"""Shape helpers for VQ latents and the images they come from: crop to the grid, resize the token grid."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

__all__ = ["RESIZE_MODES", "crop_to_multiple", "resize_latent"]

log = logging.getLogger(__name__)

RESIZE_MODES = ("nearest", "bilinear")


def crop_to_multiple(x: torch.Tensor, f: int) -> torch.Tensor:
    """Centre-crop ``[B, C, H, W]`` so H and W are multiples of the downsampling factor ``f``.

    The encoder needs whole tokens; cropping (not resizing) keeps the pixels as they are.

    Raises:
        ValueError: when the image is smaller than one token.
    """
    h, w = x.shape[-2:]
    nh, nw = (h // f) * f, (w // f) * f
    if nh == 0 or nw == 0:
        raise ValueError(f"The image is {w}x{h} pixels but this VQGAN needs at least {f}x{f} "
                         f"(its downsampling factor is {f}).")
    if (nh, nw) != (h, w):
        log.warning("Cropping image from %dx%d to %dx%d (multiple of f=%d)", w, h, nw, nh, f)
        top, left = (h - nh) // 2, (w - nw) // 2
        x = x[..., top:top + nh, left:left + nw]
    return x


def resize_latent(z: torch.Tensor, scale: float, mode: str = "nearest") -> torch.Tensor:
    """Scale the token grid of ``[B, C, h, w]`` by ``scale`` (at least 1x1), as float32.

    ``nearest`` keeps every token a codebook vector (coarse-to-fine keeps the codes); ``bilinear``
    blends neighbours, which the next quantisation snaps back to codes.

    Raises:
        ValueError: unknown mode (lists the valid ones).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"Unknown resize mode '{mode}'. Choose one of: {', '.join(RESIZE_MODES)}.")
    h, w = z.shape[-2:]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(z.float(), size=(nh, nw), mode=mode, **kwargs)
