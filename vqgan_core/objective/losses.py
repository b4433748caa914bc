"""Losses of CLIP-guided latent optimisation (spherical distance, TV, init pull-back).

The spherical distance and the ``stop`` rule follow the classic VQGAN+CLIP notebook: the loss value
is the signed distance, but its gradient is cut where the distance is already below ``stop``
(``replace_grad(d, max(d, stop))``). Everything is vectorised over batch items, cutouts and prompts
so one step needs no Python loop over prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "ClampWithGrad",
    "clamp_with_grad",
    "init_weight_factor",
    "prompt_loss",
    "spherical_dist",
    "tv_loss",
]


def spherical_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance ``2 * arcsin(|a^ - b^| / 2)^2`` of L2-normalised vectors.

    Shape:
        a: [..., D], b: [..., D] (broadcast) -> [...].
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    return (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def prompt_loss(
    image_embeds: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    stops: torch.Tensor,
) -> torch.Tensor:
    """Classic weighted prompt loss for a batch of images, one value per batch item.

    Each target column ``p`` contributes ``|w[b,p]| * mean_cutouts(s_p * d)`` with ``s_p = sign(w)``;
    the gradient is zero where ``s_p * d < stop[p]``. A weight of 0 removes a target from an item,
    which is how several prompt lists share one batched step.

    Args:
        image_embeds: [B, N, D] CLIP embeddings of N cutouts per item.
        targets: [P, D] target embeddings.
        weights: [B, P] per-item weights (0 = not used by this item).
        stops: [P] stop values (``-inf`` = never stop).

    Returns:
        [B] loss per item.
    """
    d = spherical_dist(image_embeds.unsqueeze(2), targets.view(1, 1, *targets.shape))  # [B,N,P]
    d = d * torch.sign(weights).unsqueeze(1)
    d_back = torch.maximum(d, stops.to(d.dtype).view(1, 1, -1))
    d = d_back + (d - d_back).detach()  # value of d, gradient of max(d, stop)
    return (d.mean(1) * weights.abs()).sum(1)


def tv_loss(img: torch.Tensor, circular: bool = False) -> torch.Tensor:
    """Total-variation smoothness penalty per item (mean squared neighbour difference).

    ``circular``: the last column / row also neighbours the first (a tileable image is smooth across its
    edges too).

    Shape:
        img: [B, C, H, W] -> [B].
    """
    if circular:
        dx = (img.roll(-1, -1) - img).pow(2).flatten(1).mean(1)
        dy = (img.roll(-1, -2) - img).pow(2).flatten(1).mean(1)
        return dx + dy
    dx = (img[..., :, 1:] - img[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (img[..., 1:, :] - img[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy


def init_weight_factor(step: int, total: int, decay: str) -> float:
    """Multiplier of the init-image pull-back at ``step``.

    ``classic``: ``1 / (2 * step + 1) / 2`` as the classic ``-iw`` (there it pulled towards zero, a
    bug; here it pulls towards the initial latent). ``linear``: 1 -> 0 over the run. ``none``: constant.
    """
    if decay == "classic":
        return 1.0 / (2 * step + 1) / 2
    if decay == "linear":
        return max(0.0, 1.0 - step / max(total, 1))
    if decay == "none":
        return 1.0
    raise ValueError(f"unknown init_weight_decay {decay!r}; valid: classic, linear, none")


class ClampWithGrad(torch.autograd.Function):
    """Clamp whose gradient still flows when it would move the value back into range (classic)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:  # noqa: D102
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: D102
        (x,) = ctx.saved_tensors
        return g * (g * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def clamp_with_grad(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Apply :class:`ClampWithGrad`."""
    return ClampWithGrad.apply(x, lo, hi)
