"""Rank images against CLIP targets: weighted cosine similarity, e.g. to pick the best seed of a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vqgan_core.clip_guide import ClipEnsemble, ClipGuide

__all__ = ["clip_scores"]

Target = tuple[str | torch.Tensor, float]


def clip_scores(guide: ClipGuide | ClipEnsemble | list, targets: Sequence[Target], images01: torch.Tensor) -> torch.Tensor:
    """Weighted cosine similarity x 100 of each image to the targets, averaged over the guides.

    ``score = 100 * sum_g w_g sum_t w_t cos(img, t) / (sum_g w_g * sum_t |w_t|)``, so negative-weight
    targets lower the score and a single positive target gives the plain cosine x 100. Whole images
    are embedded (no cutouts, no augmentation), so the score is deterministic. Call under ``no_grad``.

    Args:
        guide: one CLIP guide, a list of guides / ``(guide, weight)``, or an ensemble.
        targets: ``(text or image01 [N,3,H,W], weight)`` pairs; an image target's embedding is the
            mean over its N images.
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
    tw = torch.tensor([w for _, w in targets], dtype=torch.float32)
    for g, gw in ens.guides:
        img = F.normalize(g.encode_image(images01.to(g.device)).float(), dim=-1).cpu()
        embs = []
        for target, _ in targets:
            e = g.encode_text([target]) if isinstance(target, str) else g.encode_image(target.to(g.device))
            embs.append(F.normalize(e.float().mean(0), dim=-1).cpu())
        sims = img @ torch.stack(embs).T  # [B, T]
        total += gw * (sims * tw).sum(1) / tw.abs().sum().clamp_min(1e-8)
    return 100 * total / max(wsum, 1e-8)
