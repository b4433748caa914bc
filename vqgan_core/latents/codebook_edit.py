"""Token-level edits of a VQ latent: pick a region of tokens and set it to chosen codebook entries.

Pure tensor maths shared by front ends (the ComfyUI Codebook nodes); latents are ``[B, C, h, w]`` in
codebook space, regions are boolean ``[B, h, w]`` token masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..media.image_io import load_mask

__all__ = ["FILL_PATTERNS", "code_colors", "edit_region", "mask_region", "pick_codes", "rect_region"]

FILL_PATTERNS = ("tile", "random")


def code_colors(indices: torch.Tensor) -> torch.Tensor:
    """False-colour ``[B, h, w]`` codes as ``[B, 3, h, w]`` in [0, 1].

    A fixed hash per channel, so equal codes always share a colour across images and runs.
    """
    idx = indices.long()
    r = (idx * 97 % 256).float() / 255
    g = (idx * 57 % 256).float() / 255
    b = (idx * 23 % 256).float() / 255
    return torch.stack([r, g, b], dim=1)


def mask_region(mask: torch.Tensor, batch: int, h: int, w: int) -> torch.Tensor:
    """Boolean ``[batch, h, w]`` token mask from a pixel mask ``[H, W]`` or ``[N, H, W]`` (any size).

    The mask is area-averaged onto the token grid and thresholded at 0.5, so a token is selected
    when most of its pixels are; a single mask applies to the whole batch.
    """
    m = mask.detach().float() if mask.ndim == 3 else load_mask(mask, "a token-region mask").unsqueeze(0)
    m = F.interpolate(m.unsqueeze(1), size=(h, w), mode="area")[:, 0] > 0.5
    return m.expand(batch, h, w) if m.shape[0] == 1 else m[:batch]


def rect_region(batch: int, h: int, w: int, factor: int, x: int, y: int, width: int, height: int) -> torch.Tensor:
    """Boolean ``[batch, h, w]`` token mask of every token touched by a pixel rectangle.

    Args:
        batch, h, w: latent batch size and token grid.
        factor: the VQGAN's downsampling factor (pixels per token side).
        x, y, width, height: the rectangle in pixels; parts outside the image are ignored.
    """
    x0, y0 = x // factor, y // factor
    x1, y1 = -(-(x + width) // factor), -(-(y + height) // factor)
    m = torch.zeros(batch, h, w, dtype=torch.bool)
    m[:, max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = True
    return m


def pick_codes(codes: Sequence[int], count: int, pattern: str, seed: int = 0) -> torch.Tensor:
    """``count`` code indices from ``codes``: repeated in order (``tile``) or drawn per token (``random``).

    ``random`` uses its own generator seeded with ``seed``, so the same seed gives the same fill.

    Raises:
        ValueError: unknown pattern (lists the valid ones) or no codes.
    """
    if pattern not in FILL_PATTERNS:
        raise ValueError(f"Unknown fill pattern '{pattern}'. Choose one of: {', '.join(FILL_PATTERNS)}.")
    if not codes:
        raise ValueError("Give at least one code index to fill with.")
    chosen = torch.tensor(list(codes), dtype=torch.long)
    if pattern == "tile":
        return chosen.repeat(-(-count // len(chosen)))[:count]
    gen = torch.Generator().manual_seed(int(seed))
    return chosen[torch.randint(len(chosen), (count,), generator=gen)]


def edit_region(z: torch.Tensor, codebook: torch.Tensor, region: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """A new latent with the tokens in ``region`` set to the codebook vectors of ``picks``.

    Args:
        z: ``[B, C, h, w]`` latent (not modified).
        codebook: ``[n_embed, C]``.
        region: boolean ``[B, h, w]``; tokens are filled in row-major order.
        picks: ``[region.sum()]`` code indices.
    """
    cb = codebook.detach().to(z.device, z.dtype)
    out = z.clone().movedim(1, -1)  # [B,h,w,C]
    out[region.to(z.device)] = cb[picks.to(z.device)]
    return out.movedim(-1, 1).contiguous()
