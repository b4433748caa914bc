"""One-pass generation: prompts -> CLIP text embedding -> feed-forward network -> start latent."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..objective.prompts import PromptSyntaxError, parse_prompt_set
from .io import FeedForwardError, check_pair
from .model import FeedForwardNet

__all__ = ["decode01", "feed_forward_latent", "pick_guide", "prompt_embedding"]


def prompt_embedding(guide, prompt: str) -> torch.Tensor:
    """``[D]`` embedding of a prompt in the classic grammar: weighted sum of its texts' unit embeddings.

    ``"a red circle:1|blur:-0.5"`` moves towards the first text and away from the second, as the CLIP loss does.
    """
    ps = parse_prompt_set(prompt)
    if not ps.texts:
        raise PromptSyntaxError(f"the feed-forward model needs a text prompt, got {prompt!r}")
    emb = F.normalize(guide.encode_text([t.text for t in ps.texts]), dim=-1)
    w = torch.tensor([t.weight for t in ps.texts], device=emb.device, dtype=emb.dtype)
    out = (w[:, None] * emb).sum(0)
    if float(out.norm()) < 1e-6:
        raise PromptSyntaxError(f"the prompt's weights cancel out: {prompt!r}")
    return out


@torch.no_grad()
def feed_forward_latent(net: FeedForwardNet, vqgan: nn.Module, guide, prompts: Sequence[str], seed: int = 0,
                        check: bool = True) -> torch.Tensor:
    """Start latents ``[len(prompts), C, h, w]`` for ``prompts`` (one per image; item b's noise from ``seed + b``)."""
    if check:
        check_pair(net.config, vqgan, guide.spec, guide.embed_dim())
    dev = next(net.parameters()).device
    text = torch.stack([prompt_embedding(guide, p) for p in prompts]).to(dev)
    noise = torch.cat([net.noise(1, torch.Generator().manual_seed((int(seed) + b) % 2**64), dev)
                       for b in range(len(prompts))])
    raw = net(text, noise)
    return net.start_latent(raw, vqgan).to(vqgan.codebook.device)


def pick_guide(net: FeedForwardNet, guides: Sequence) -> object:
    """The guide whose text embeddings the network reads: the one it was trained with, else the first that fits."""
    c = net.config
    for g in guides:
        if g.spec == c.clip:
            return g
    for g in guides:
        if g.embed_dim() == c.text_dim:
            return g
    raise FeedForwardError(f"the feed-forward model reads {c.text_dim}-d text embeddings of CLIP {c.clip or '?'}; "
                           f"none of the run's CLIP models ({', '.join(g.spec for g in guides)}) gives them")


def decode01(vqgan: nn.Module, z_q: torch.Tensor) -> torch.Tensor:
    """Decoded image in [0, 1], clamped with the gradient passing through (as the optimiser's step renders it)."""
    from ..objective.losses import clamp_with_grad

    return clamp_with_grad(vqgan.decode(z_q).float().add(1).div(2), 0.0, 1.0)
