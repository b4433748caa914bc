"""Regional prompts: targets that CLIP checks on one part of the image only (pixray's "spot" prompts).

A region is a mask over the image. Its prompts are scored on the mask's bounding box, with the pixels
outside the mask (inside the box) replaced by mid grey, cut out and augmented like the whole image.
So "a red sky" on the top third pulls only that part towards red sky, while the run's global prompts
keep judging the whole picture. Each region costs one more CLIP pass per guide and step.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..media.image_io import load_image01, load_mask
from .prompts import parse_story
from .targets import TargetBank

__all__ = ["RegionPrompt", "RegionView", "region_banks"]

log = logging.getLogger(__name__)


@dataclass
class RegionPrompt:
    """Prompts for the part of the image where ``mask`` > 0.5.

    ``mask``: ``[H, W]`` (or ``[1, H, W]``, ``[1, 1, H, W]``) in [0, 1], any size (resized to the image).
    ``prompts``: the classic grammar (``text:weight:stop|...``; ``^`` story sets follow the run's
    ``change_prompts_every``). ``image_prompts``: ``(image01 [1,3,H,W], weight, stop)`` tuples.
    """

    mask: torch.Tensor
    prompts: str = ""
    image_prompts: list[tuple[torch.Tensor, float, float]] = field(default_factory=list)


class RegionView:
    """The region's view of a rendered image batch: bounding-box crop, grey outside the (soft) mask."""

    def __init__(self, mask: torch.Tensor, height: int, width: int, device: torch.device) -> None:
        m = load_mask(mask, "a region mask")
        m = F.interpolate(m[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
        inside = (m > 0.5).nonzero()
        if inside.numel() == 0:
            raise ValueError("a region mask selects nothing (no value above 0.5 at the image size "
                             f"{width}x{height}); paint the region white / 1")
        (y0, x0), (y1, x1) = inside.min(0).values.tolist(), (inside.max(0).values + 1).tolist()
        self.box = (y0, y1, x0, x1)
        self.mask = m[y0:y1, x0:x1].to(device).view(1, 1, y1 - y0, x1 - x0)

    def __call__(self, img01: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` -> ``[B,3,h,w]`` crop of the box; outside the mask: 0.5 grey (differentiable)."""
        y0, y1, x0, x1 = self.box
        crop = img01[..., y0:y1, x0:x1]
        m = self.mask.to(crop.dtype)
        return crop * m + 0.5 * (1 - m)


def region_banks(regions: list[RegionPrompt], clip, size: tuple[int, int], device: torch.device, batch: int,  # noqa: ANN001
                 change_prompts_every: int, encode_image_prompt: Callable,
                 fade: int = 0) -> list[tuple[RegionView, TargetBank]]:
    """``(view, TargetBank)`` per region; errors name the region. ``encode_image_prompt(guide, img, size=)``;
    ``fade``: the story crossfade (see ``TargetBank``)."""
    out = []
    for k, r in enumerate(regions, 1):
        try:
            view = RegionView(r.mask, *size, device)
            story = [parse_story(r.prompts, change_prompts_every)] * batch
            y0, y1, x0, x1 = view.box  # a region's image prompts are fitted to the region, as it is seen
            encode = functools.partial(encode_image_prompt, size=(y1 - y0, x1 - x0))
            bank = TargetBank(clip, story, encode, load_image01, r.image_prompts, fade=fade)
        except ValueError as e:
            raise ValueError(f"region {k} of {len(regions)}: {e}") from None
        if "^" in r.prompts and change_prompts_every <= 0:
            log.warning("region %d prompts contain '^' but change_prompts_every is 0: only the first set is used", k)
        out.append((view, bank))
    return out
