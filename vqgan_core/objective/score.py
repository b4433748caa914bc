"""Rank images against CLIP targets: weighted cosine similarity, e.g. to pick the best seed of a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..clip.guide import ClipEnsemble, ClipGuide
from .regions import RegionView

__all__ = ["clip_scores"]

Target = tuple  # (text or image01 [N,3,H,W], weight) or (..., weight, region mask [H,W] or None)


def clip_scores(guide: ClipGuide | ClipEnsemble | list, targets: Sequence[Target], images01: torch.Tensor) -> torch.Tensor:
    """Weighted cosine similarity x 100 of each image to the targets, averaged over the guides.

    ``score = 100 * sum_g w_g sum_t w_t cos(view_t(img), t) / (sum_g w_g * sum_t |w_t|)``, so negative-weight
    targets lower the score and a single positive target gives the plain cosine x 100. Whole images
    (or, for a regional target, the region's view as the optimiser sees it) are embedded without
    cutouts or augmentation, so the score is deterministic. Call under ``no_grad``.

    Args:
        guide: one CLIP guide, a list of guides / ``(guide, weight)``, or an ensemble.
        targets: ``(text or image01 [N,3,H,W], weight[, region])`` tuples; an image target's embedding
            is the mean over its N images; ``region`` is a mask (see :mod:`vqgan_core.objective.regions`).
        images01: ``[B, 3, H, W]`` in [0, 1].

    Returns:
        ``[B]`` float32 scores on the CPU.

    Raises:
        ValueError: when ``targets`` is empty.
    """
    if not targets:
        raise ValueError("CLIP Score needs at least one target: connect a CLIP Text Prompt or Image Prompt.")
    ens = ClipEnsemble.of(guide)
    total = torch.zeros(images01.shape[0])
    wsum = sum(w for _, w in ens.guides)
    groups: dict[int, tuple[torch.Tensor | None, list[tuple]]] = {}
    for t in targets:
        region = t[2] if len(t) > 2 else None
        groups.setdefault(id(region) if region is not None else 0, (region, []))[1].append(t[:2])
    tw_all = sum(abs(t[1]) for t in targets)
    for g, gw in ens.guides:
        for region, group in groups.values():
            seen = images01 if region is None else RegionView(region, *images01.shape[-2:], images01.device)(images01)
            img = F.normalize(g.encode_image(seen.to(g.device)).float(), dim=-1).cpu()
            embs = []
            for target, _ in group:
                e = g.encode_text([target]) if isinstance(target, str) else g.encode_image(target.to(g.device))
                embs.append(F.normalize(e.float().mean(0), dim=-1).cpu())
            tw = torch.tensor([w for _, w in group], dtype=torch.float32)
            total += gw * ((img @ torch.stack(embs).T) * tw).sum(1) / max(tw_all, 1e-8)
    return 100 * total / max(wsum, 1e-8)
