"""Activation recomputation ("gradient checkpointing") for the decoder: large images in little memory.

Why: the backward pass keeps every intermediate activation of the decoder, most of them at full
resolution (GroupNorm, SiLU and conv inputs of each ResnetBlock). Wrapping each ResnetBlock/AttnBlock
keeps only the block inputs and recomputes the inside during backward, trading about one extra
decoder forward per step for several times less activation memory. Weights are frozen and the decoder
draws no random numbers (dropout is off in eval), so the recomputation is exact.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import AttnBlock, ResnetBlock

__all__ = ["Recomputed", "recompute_blocks"]


class Recomputed(nn.Module):
    """Runs ``inner`` under non-reentrant checkpointing (only while gradients are being recorded)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not torch.is_grad_enabled():
            return self.inner(x)
        return checkpoint(self.inner, x, use_reentrant=False, preserve_rng_state=False)


def recompute_blocks(module: nn.Module) -> int:
    """Wrap every ResnetBlock / AttnBlock inside ``module`` (in place; use a private copy); returns how many."""
    n = 0
    for parent in list(module.modules()):
        if isinstance(parent, Recomputed):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, (ResnetBlock, AttnBlock)):
                setattr(parent, name, Recomputed(child))
                n += 1
    return n
