"""Cutout methods: how the generated image is shown to CLIP, vectorised over batch and cutouts.

* ``latest`` (nerdyrodent's default): every cutout is the whole image, ``(avgpool + maxpool) / 2`` to
  CLIP's input size; variety comes only from the augmentations. The pooled image is computed once per
  image and expanded (the classic code pooled the same image ``cutn`` times). ``cut_pow`` is unused.
* ``crops`` (the classic "original"): random square crops with side ``U^cut_pow`` between
  ``min(cut_size, side)`` and the short side, area-resampled with ``roi_align`` in one call for all crops.
* ``mixed``: half ``latest``, half ``crops`` (whole-image composition plus detail).

Output order is item-major: ``[B * cutn, 3, S, S]`` reshapes to ``[B, cutn, ...]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..util.registry import Registry
from .augment import Augmenter

__all__ = ["CUTOUTS", "Cutouts", "crop_cutouts", "cutout_names", "pooled_cutouts"]

CUTOUTS: Registry = Registry("cutout method")


@CUTOUTS.register("latest")
def pooled_cutouts(img: torch.Tensor, cutn: int, size: int, cut_pow: float, gen: torch.Generator) -> torch.Tensor:
    """``cutn`` copies of the avg/max-pooled whole image per item."""
    pooled = (F.adaptive_avg_pool2d(img, size) + F.adaptive_max_pool2d(img, size)) / 2
    return pooled.repeat_interleave(cutn, dim=0)


@CUTOUTS.register("crops")
def crop_cutouts(img: torch.Tensor, cutn: int, size: int, cut_pow: float, gen: torch.Generator) -> torch.Tensor:
    """Random square crops (side distribution shaped by ``cut_pow``), resampled to ``size``."""
    from torchvision.ops import roi_align

    b, _, hh, ww = img.shape
    dev = img.device
    max_size = float(min(hh, ww))
    min_size = float(min(hh, ww, size))
    n = b * cutn
    side = torch.rand(n, generator=gen, device=dev).pow(cut_pow) * (max_size - min_size) + min_size
    x0 = torch.rand(n, generator=gen, device=dev) * (ww - side)
    y0 = torch.rand(n, generator=gen, device=dev) * (hh - side)
    owner = torch.arange(b, device=dev, dtype=side.dtype).repeat_interleave(cutn)
    boxes = torch.stack([owner, x0, y0, x0 + side, y0 + side], 1).to(img.dtype)
    return roi_align(img, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


@CUTOUTS.register("mixed")
def mixed_cutouts(img: torch.Tensor, cutn: int, size: int, cut_pow: float, gen: torch.Generator) -> torch.Tensor:
    """Half pooled whole-image cutouts, half random crops (per item)."""
    n_pool = cutn // 2
    pooled = pooled_cutouts(img, n_pool, size, cut_pow, gen).unflatten(0, (img.shape[0], n_pool))
    crops = crop_cutouts(img, cutn - n_pool, size, cut_pow, gen).unflatten(0, (img.shape[0], cutn - n_pool))
    return torch.cat([pooled, crops], 1).flatten(0, 1)


def cutout_names() -> list[str]:
    """Valid cutout method names."""
    return CUTOUTS.names()


class Cutouts:
    """A cutout method plus augmentations: image batch in [0,1] -> augmented CLIP-sized cutouts.

    Args:
        method: registered cutout method (``latest``, ``crops``, ``mixed``).
        cutn: cutouts per image.
        cut_pow: crop-size exponent (``crops``/``mixed``).
        augmenter: augmentations applied to all cutouts at once (``None`` = no augmentation).
    """

    def __init__(self, method: str = "latest", cutn: int = 32, cut_pow: float = 1.0, augmenter: Augmenter | None = None):
        self.fn: Callable = CUTOUTS.get(method)
        if cutn < 1:
            raise ValueError(f"cutn must be >= 1, got {cutn}")
        self.method, self.cutn, self.cut_pow, self.augmenter = method, cutn, cut_pow, augmenter

    def __call__(self, img01: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
        """``[B,3,H,W]`` -> ``[B*cutn,3,size,size]``; every random draw comes from ``gen``.

        Shape:
            img01: [B, 3, H, W] -> [B * cutn, 3, size, size]
        """
        x = self.fn(img01, self.cutn, size, self.cut_pow, gen)
        if self.augmenter is not None:
            x = self.augmenter(x, gen)
        return x
