"""Validation metrics: PSNR, SSIM, L1, codebook usage/perplexity, and rFID when Inception weights are given.

rFID uses torchvision's Inception-v3 (pool features, 2048-d) loaded from a user-provided weights file; nothing is
downloaded. It is not bit-identical to pytorch-fid's TF-ported Inception, so compare rFIDs from this tool only
with each other. With few validation images it is biased upwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

import kornia.metrics
import torch
import torch.nn.functional as F

from vqgan_core import read_state_dict

from .codebook import CodeUsage

logger = logging.getLogger(__name__)


class InceptionFeatures(torch.nn.Module):
    """torchvision Inception-v3 up to the 2048-d average pool, for images in [-1,1]."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        from torchvision.models.inception import Inception3

        net = Inception3(aux_logits=True, transform_input=False, init_weights=False)
        sd = read_state_dict(weights)
        missing, unexpected = net.load_state_dict(sd, strict=False)
        if missing:
            raise ValueError(f"{weights}: not torchvision inception_v3 weights (missing e.g. {missing[:3]})")
        net.fc = torch.nn.Identity()
        net.AuxLogits = None
        net.aux_logits = False
        self.net = net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] -> ``[B,2048]`` (float64)."""
        x = F.interpolate(x.float().clamp(-1, 1), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between two feature sets ``[N,D]`` (float64): ``|mu_a-mu_b|^2 + tr(Sa + Sb - 2 (Sa Sb)^1/2)``."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.t()), torch.cov(b.t())
    eig = torch.linalg.eigvals(sa @ sb).real.clamp(min=0)
    return float((mu_a - mu_b).pow(2).sum() + sa.trace() + sb.trace() - 2 * eig.sqrt().sum())


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    to_input: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], AbstractContextManager],
    inception: InceptionFeatures | None = None,
) -> dict[str, float]:
    """Reconstruct every validation batch and average the metrics per image.

    Args:
        model: the VQGAN (put in eval mode here, restored afterwards).
        batches: uint8 image batches from the validation loader.
        to_input: uint8 batch -> model input on the right device in [-1,1].
        autocast: context factory for the mixed-precision forward.
        inception: feature net for rFID, or None to skip it.
    """
    was_training = model.training
    model.eval()
    usage = CodeUsage(model.config.n_embed, device=next(model.parameters()).device)
    sums = {"psnr": 0.0, "ssim": 0.0, "l1": 0.0}
    n = 0
    feats_real, feats_fake = [], []
    try:
        for raw in batches:
            x = to_input(raw)
            with autocast():
                xrec, _, idx = model(x)
            xrec = xrec.float().clamp(-1, 1)
            usage.update(idx)
            a, b = (x.float() + 1) / 2, (xrec + 1) / 2
            mse = (a - b).pow(2).flatten(1).mean(1).clamp(min=1e-10)
            sums["psnr"] += float((10 * torch.log10(1.0 / mse)).sum())
            sums["ssim"] += float(kornia.metrics.ssim(a, b, 11).flatten(1).mean(1).sum())
            sums["l1"] += float((x.float() - xrec).abs().flatten(1).mean(1).sum())
            n += x.shape[0]
            if inception is not None:
                feats_real.append(inception(x).cpu())
                feats_fake.append(inception(xrec).cpu())
    finally:
        model.train(was_training)
    if n == 0:
        return {}
    out = {k: v / n for k, v in sums.items()}
    out.update({f"codebook_{k}": v for k, v in usage.stats().items()})
    if inception is not None and n >= 2:
        out["rfid"] = frechet_distance(torch.cat(feats_real), torch.cat(feats_fake))
    out["images"] = float(n)
    return out
