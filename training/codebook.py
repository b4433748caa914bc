"""Codebook utilisation: usage/perplexity counters, k-means init from data and dead-code restart.

Large taming codebooks collapse to a few percent usage (TAMING.md section 8). Two standard remedies, each behind
a flag: data-dependent k-means initialisation (as VQGAN-LC / vector-quantize-pytorch ``kmeans_init`` do) and
re-seeding codes that went unused with current encoder outputs (Jukebox; vector-quantize-pytorch
``threshold_ema_dead_code``). The l2-normalised low-dimensional lookup (ViT-VQGAN, LlamaGen) is a model option:
``model.l2_normalize: true`` with a small ``model.embed_dim``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vqgan_core import nearest_code

logger = logging.getLogger(__name__)


class CodeUsage:
    """Counts code hits on the device (no host sync) over a window of steps."""

    def __init__(self, n_embed: int, device: torch.device | str = "cpu") -> None:
        self.counts = torch.zeros(n_embed, dtype=torch.float64, device=device)

    def update(self, indices: torch.Tensor) -> None:
        """Add the hits of an index tensor of any shape."""
        self.counts += torch.bincount(indices.reshape(-1), minlength=self.counts.numel()).to(self.counts.dtype)

    def stats(self, counts: torch.Tensor | None = None) -> dict[str, float]:
        """Fraction of codes used and the perplexity ``exp(H(p))`` of the hit distribution."""
        c = self.counts if counts is None else counts
        total = c.sum()
        if total <= 0:
            return {"usage": 0.0, "perplexity": 0.0}
        p = c / total
        ent = -(p[p > 0] * p[p > 0].log()).sum()
        return {"usage": float((c > 0).double().mean()), "perplexity": float(ent.exp())}

    def reset(self) -> None:
        """Start a new window."""
        self.counts.zero_()


def _rows(h: torch.Tensor) -> torch.Tensor:
    return h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).float()


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator, spherical: bool = False) -> torch.Tensor:
    """Lloyd's k-means on rows of ``x`` ``[N,D]`` -> ``[k,D]``; empty clusters are re-seeded from the data."""
    n = x.shape[0]
    dev = x.device
    pick = (
        torch.randint(n, (k,), generator=generator, device="cpu").to(dev)
        if n < k
        else torch.randperm(n, generator=generator, device="cpu")[:k].to(dev)
    )
    c = x[pick].clone()
    if n < k:  # fewer points than codes: jitter the duplicates apart
        c += 1e-3 * x.std() * torch.randn(c.shape, generator=generator).to(dev)
    for _ in range(iters):
        a = nearest_code(x, c, chunk=8192)  # chunked: bounds the [rows, k] distance matrix
        sums = torch.zeros_like(c).index_add_(0, a, x)
        cnt = torch.bincount(a, minlength=k).to(x.dtype)
        empty = cnt == 0
        c = torch.where(empty[:, None], c, sums / cnt.clamp(min=1)[:, None])
        if empty.any():
            c[empty] = x[torch.randint(n, (int(empty.sum()),), generator=generator).to(dev)]
        if spherical:
            c = F.normalize(c, dim=1)
    return c


@torch.no_grad()
def kmeans_init(
    model: torch.nn.Module,
    batches: list[torch.Tensor],
    iters: int,
    generator: torch.Generator,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> None:
    """Set the VQ codebook to k-means centroids of encoder outputs ``encode_to_prequant(x)`` over ``batches``.

    ``autocast`` wraps only the encoder: the k-means distances run in float32 (bf16 would mis-assign points).
    """
    if model.config.quantizer != "vq":
        raise ValueError(f"codebook.kmeans_init needs the 'vq' quantizer, model has {model.config.quantizer!r}")
    feats = []
    for x in batches:
        with autocast():
            h = model.encode_to_prequant(x)
        feats.append(_rows(h))
    rows = torch.cat(feats)
    spherical = bool(model.config.l2_normalize)
    if spherical:
        rows = F.normalize(rows, dim=1)
    cb = model.quantize.codebook
    c = kmeans(rows, cb.shape[0], iters, generator, spherical)
    cb.data.copy_(c.to(cb.dtype))
    logger.info(
        "k-means codebook init: %d codes from %d encoder vectors, %d iterations", cb.shape[0], rows.shape[0], iters
    )


@torch.no_grad()
def restart_dead_codes(
    codebook: torch.nn.Parameter,
    counts: torch.Tensor,
    h: torch.Tensor,
    threshold: float,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer | None = None,
) -> int:
    """Replace codes hit fewer than ``threshold`` times by random encoder vectors from ``h`` ``[B,C,h,w]``.

    Their Adam moments are zeroed too, so stale momentum does not drag the new codes away at once.
    Returns the number of restarted codes.
    """
    dead = counts < threshold
    n = int(dead.sum())
    if n == 0:
        return 0
    rows = _rows(h)
    pick = torch.randint(rows.shape[0], (n,), generator=generator).to(rows.device)
    codebook.data[dead] = rows[pick].to(codebook.dtype)
    if optimizer is not None:
        st = optimizer.state.get(codebook, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                st[key][dead] = 0
    return n
