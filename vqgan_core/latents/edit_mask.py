"""Inpainting: only the latent cells under a mask may change; the rest keeps the starting latent.

Why on the latent grid: each latent cell decodes to an f x f patch (and, through the decoder's
receptive field, blends into its neighbours), so "keep these pixels" means "keep these cells". A cell
is editable when at least half of its pixels are in the mask. The kept cells are restored after every
optimiser step (outside the CUDA graph, in place), so the decoder blends the seam naturally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..media.image_io import load_mask

__all__ = ["keep_cells"]


def keep_cells(mask: torch.Tensor, h: int, w: int, f: int, device: torch.device) -> torch.Tensor:
    """Pixel mask (1 = may change; ``[H, W]``, any size) -> bool ``[1, 1, h, w]``, True for cells to keep."""
    m = load_mask(mask, "an edit mask")
    coverage = F.interpolate(m.clamp(0, 1)[None, None], size=(h, w), mode="area")
    editable = coverage >= 0.5
    if not editable.any():
        raise ValueError(f"the edit mask covers no latent cell: a cell is {f}x{f} pixels and changes only when "
                         "at least half of it is in the mask (white / 1)")
    return (~editable).to(device)
