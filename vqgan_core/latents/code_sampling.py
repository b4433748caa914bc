"""Codebook sampling: optimise a categorical distribution over the codes of every latent cell.

The EleutherAI notebooks' second VQGAN+CLIP method. Instead of a continuous latent snapped to its nearest
code (``z_quantize``, the classic method), each cell holds logits over all ``K`` codes. A step draws one code
per cell from ``softmax(logits)`` and decodes those codes; the gradient reaches the logits straight through
the softmax (the decoder sees the drawn code, autograd the expected code vector). The image of the run is
that of the most likely codes. Images tend to be made of cleaner, more distinct parts; the price is ``K``
numbers per cell (16384 for f16-16384: 64 MiB of logits per 512² image, about 8 times that during a step
with Adam's state, the gradient and the draw's temporaries; ``vqgan_core.engine.memory_estimate`` counts them).

The draw is Gumbel-max (``argmax(logits + Gumbel noise)``), which is exactly a softmax sample, from the run's
own generator (``quantize.gumbel_noise_like``): seeded, and free of host synchronisation (CUDA-graph safe), unlike
``torch.multinomial``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..vqgan.quantize import gumbel_noise_like, nearest_code

__all__ = ["INIT_CODE_PROBABILITY", "METHODS", "CodeSampler"]

METHODS = ("z_quantize", "codebook_sampling")
INIT_CODE_PROBABILITY = 0.9  # a latent's code starts with this probability (the rest spread over the others)


class CodeSampler:
    """Logits ``[B, K, h, w]`` <-> latents ``[B, C, h, w]`` for one VQGAN's codebook (fp32, on its device)."""

    def __init__(self, vqgan: torch.nn.Module) -> None:
        cb = vqgan.codebook.detach().float()
        if getattr(vqgan.quantize, "l2_normalize", False):  # what the decoder gets for code k
            cb = F.normalize(cb, dim=1)
        self.vectors = cb  # [K, C]
        self.k = cb.shape[0]

    def random_logits(self, batch: int, h: int, w: int, gens: list[torch.Generator]) -> torch.Tensor:
        """Standard-normal logits, one generator per item (the notebook's start: every code about as likely)."""
        if len(gens) != batch:
            raise ValueError(f"need one generator per item: {len(gens)} for a batch of {batch}")
        out = torch.stack([torch.randn(self.k, h, w, generator=g) for g in gens])
        return out.to(self.vectors.device)

    def logits_from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Logits under which each cell's nearest code has probability :data:`INIT_CODE_PROBABILITY`."""
        idx = self.nearest(z)
        p = INIT_CODE_PROBABILITY
        low = torch.log(torch.tensor((1 - p) / max(self.k - 1, 1))).item()
        logits = torch.full((z.shape[0], self.k, *z.shape[-2:]), low, device=self.vectors.device)
        return logits.scatter_(1, idx.unsqueeze(1).to(logits.device), torch.log(torch.tensor(p)).item())

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index ``[B, h, w]`` of the nearest code vector of each cell of ``z``."""
        return nearest_code(z.detach().to(self.vectors.device), self.vectors)

    def latent(self, idx: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, h, w]`` -> their vectors ``[B, C, h, w]``."""
        return self.vectors[idx].permute(0, 3, 1, 2)

    def most_likely(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent, indices)`` of the most likely code of every cell: the run's image."""
        idx = logits.detach().argmax(1)
        return self.latent(idx), idx

    def sample(self, logits: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent, indices)`` of one draw per cell; the latent's gradient flows to ``logits`` through the
        expected code vector ``softmax(logits) @ vectors`` (straight-through)."""
        idx = (logits.detach() + gumbel_noise_like(logits, gen, from_uniform=True)).argmax(1)
        expected = torch.einsum("bkhw,kc->bchw", logits.softmax(1), self.vectors)
        return self.latent(idx) + (expected - expected.detach()), idx
