"""Projected gradient (PGD) attacks in pixel space, for adversarial training of a guide CLIP.

Why: a CLIP that guides an optimiser is attacked by that optimiser: the generator finds images that score high
without showing what the text says. A model trained on worst-case perturbed images within a small L2 ball is
robust, and the input gradients of robust models point at features a person sees (Santurkar et al. 2019,
"Image synthesis with a single robust classifier"), which is exactly what CLIP guidance follows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _l2(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped to broadcast over [B,C,H,W]."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def pgd_l2(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int,
           g: torch.Generator, step_size: float | None = None) -> torch.Tensor:
    """Images in [0,1] moved within an L2 ball of radius ``eps`` (per image) to INCREASE ``loss_fn``.

    ``loss_fn`` maps an image batch to a scalar (e.g. the contrastive loss with fixed text embeddings); only the
    images receive gradients, model parameters' ``.grad`` are left untouched. Starts from a random point in the
    ball (``g``: reproducible), takes ``steps`` normalised-gradient steps of ``step_size`` (default
    ``2.5 * eps / steps``), projects back onto the ball and the valid pixel range after each.
    """
    if eps <= 0 or steps < 1:
        raise ValueError(f"pgd_l2: eps must be > 0 and steps >= 1, got eps={eps}, steps={steps}")
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    x = x.detach()
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    delta = noise / _l2(noise) * eps * torch.rand(x.shape[0], generator=g, dtype=x.dtype).view(-1, 1, 1, 1)
    for _ in range(steps):
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x + delta), delta)
        with torch.no_grad():
            delta = delta + alpha * grad / _l2(grad)
            delta = delta * (eps / _l2(delta)).clamp(max=1.0)
    return (x + delta.detach()).clamp(0, 1)
