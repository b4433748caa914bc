"""Helpers for VQ latents and the images they come from: crop to the grid, resize the token grid, and
interpolate between two latents (morph animations)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

__all__ = ["INTERPOLATIONS", "RESIZE_MODES", "crop_to_multiple", "interpolate_latents", "resize_latent"]

log = logging.getLogger(__name__)

RESIZE_MODES = ("nearest", "bilinear")
INTERPOLATIONS = ("linear", "slerp")


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


def interpolate_latents(a: torch.Tensor, b: torch.Tensor, frames: int, mode: str = "linear") -> torch.Tensor:
    """``frames`` latents from ``a`` to ``b`` (both ends included), frame-major: ``[frames * B, C, h, w]``.

    ``slerp`` moves along the great circle between the two (per item, over the flattened latent), keeping
    the norm between theirs: the in-between latents stay as "typical" as the ends, where a straight line
    passes closer to the origin. Decoding snaps each to the nearest codes, so the morph swaps codes cell
    by cell.

    Raises:
        ValueError: different shapes, fewer than 2 frames, or an unknown mode.
    """
    if a.shape != b.shape:
        raise ValueError(f"The two latents differ in shape ({tuple(a.shape)} vs {tuple(b.shape)}): use the same "
                         "size and batch (Resize VQ Latent can match the grids).")
    if frames < 2:
        raise ValueError(f"Interpolation needs at least 2 frames (the two ends), got {frames}")
    if mode not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {mode!r}; valid: {', '.join(INTERPOLATIONS)}")
    a, b = a.float(), b.float()
    t = torch.linspace(0.0, 1.0, frames, device=a.device).view(-1, 1, 1, 1, 1)
    if mode == "linear":
        out = torch.lerp(a.unsqueeze(0), b.unsqueeze(0), t)
    else:
        fa, fb = a.flatten(1), b.flatten(1)
        cos = F.cosine_similarity(fa, fb, dim=1).clamp(-1.0, 1.0)
        omega = torch.acos(cos).view(1, -1, 1, 1, 1)  # [1, B, 1, 1, 1]
        sin = torch.sin(omega)
        wa = torch.where(sin > 1e-6, torch.sin((1 - t) * omega) / sin, 1 - t)  # nearly parallel: straight line
        wb = torch.where(sin > 1e-6, torch.sin(t * omega) / sin, t)
        out = wa * a.unsqueeze(0) + wb * b.unsqueeze(0)
    out[0], out[-1] = a, b  # the ends exactly
    return out.flatten(0, 1)
