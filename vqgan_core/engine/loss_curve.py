"""The loss of a run as a small line plot (an image a graph can show next to the picture it belongs to)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["loss_table", "plot_losses"]


def plot_losses(losses: list[tuple[int, float]], width: int = 384, height: int = 192) -> torch.Tensor:
    """``[(step, loss), ...]`` -> ``[height, width, 3]`` float image in [0, 1]: the curve, its range and last value."""
    im = Image.new("RGB", (width, height), (250, 250, 250))
    d = ImageDraw.Draw(im)
    pts = [(s, v) for s, v in losses if math.isfinite(v)]
    left, right, top, bottom = 8, width - 8, 22, height - 18
    d.rectangle([left, top, right, bottom], outline=(200, 200, 200))
    if not pts:
        d.text((left, 4), "no loss logged yet", fill=(90, 90, 90))
    else:
        s0, s1 = pts[0][0], max(pts[-1][0], pts[0][0] + 1)
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        span = (hi - lo) or 1.0
        xy = [(left + (s - s0) / (s1 - s0) * (right - left), bottom - (v - lo) / span * (bottom - top)) for s, v in pts]
        if len(xy) == 1:
            d.ellipse([xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2], fill=(30, 90, 200))
        else:
            d.line(xy, fill=(30, 90, 200), width=2)
        d.text((left, 4), f"loss {pts[-1][1]:.4f} at step {pts[-1][0]}  (min {lo:.4f}, max {hi:.4f})", fill=(20, 20, 20))
        d.text((left, bottom + 3), f"step {s0}", fill=(90, 90, 90))
        d.text((right - 60, bottom + 3), f"step {pts[-1][0]}", fill=(90, 90, 90))
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)


def loss_table(losses: list[tuple[int, float]]) -> str:
    """``step<TAB>loss`` lines (what a text display node shows, and what a spreadsheet reads)."""
    return "\n".join(f"{s}\t{v:.6f}" for s, v in losses)
