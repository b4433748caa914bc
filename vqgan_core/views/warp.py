"""The one image warp: bilinear resampling of a batch at the source point of every output pixel.

Users: the cutout augmentations (``views.augment``: fused affine / perspective maps), the animation's per-frame
motion (``animation.animate``, ``wrap`` for tileable frames) and the CLIP trainer's augmentation
(``training.clip_data``).

Why not kornia's warps: ``warp_affine`` / ``warp_perspective`` take the forward (source -> output) map and invert
it on every call, where the augmentations build the inverse map in closed form; kornia's inverse-pixel-map warp
(``homography_warp(..., normalized_coordinates=False)``) feeds pixel coordinates to ``grid_sample`` unnormalised in
the releases our ``kornia>=0.7.2`` allows (0.7.2 to 0.9.0rc1); and no kornia warp has a ``wrap`` (torus) padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["WARP_PADDINGS", "warp"]

WARP_PADDINGS = ("zeros", "border", "reflection", "wrap")


def warp(x: torch.Tensor, inv: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Resample ``x`` ``[n, c, H, W]`` at ``inv @ (u, v, 1)`` of every output pixel ``(u, v)`` (bilinear).

    ``inv``: ``[n, 3, 3]`` maps from output pixels to source pixels, pixel centres at whole
    numbers (a perspective map is divided by its third coordinate). ``padding``: what the source shows outside
    itself, ``grid_sample``'s ``zeros`` / ``border`` / ``reflection``, or ``wrap``: the source is a tile, sampled
    at its coordinates modulo its size (whatever leaves one edge comes in at the other).
    """
    if padding not in WARP_PADDINGS:
        raise ValueError(f"unknown warp padding {padding!r}; valid: {', '.join(WARP_PADDINGS)}")
    n, _, hh, ww = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(hh, device=x.device, dtype=inv.dtype), torch.arange(ww, device=x.device, dtype=inv.dtype), indexing="ij"
    )
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)  # [1,HW,3]
    src = pts @ inv.transpose(1, 2)  # [n,HW,3]
    src = src[..., :2] / src[..., 2:].clamp_min(1e-8)
    if padding == "wrap":  # sample the image padded by one wrapped pixel (the seam's neighbours) at (s mod size) + 1
        sx, sy = torch.remainder(src[..., 0], ww), torch.remainder(src[..., 1], hh)
        gx, gy = (sx + 1) / (ww + 1) * 2 - 1, (sy + 1) / (hh + 1) * 2 - 1
        x, padding = F.pad(x, (1, 1, 1, 1), mode="circular"), "border"
    else:
        gx = src[..., 0] * (2 / max(ww - 1, 1)) - 1
        gy = src[..., 1] * (2 / max(hh - 1, 1)) - 1
    grid = torch.stack([gx, gy], -1).view(n, hh, ww, 2).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)
