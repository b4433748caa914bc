"""The feed-forward network: a CLIP text embedding (plus optional noise) -> a VQGAN latent grid.

Shape of the network (small on purpose: the demo one ships beside the demo models): an MLP turns the
normalised embedding into a conditioning vector and a ``base``-sized feature map, which residual blocks
(FiLM-conditioned on that vector) refine and nearest-upsample to the latent ``grid``. The head predicts a
continuous latent (snapped to the nearest code with a straight-through gradient, as the optimiser's
z+quantize does) or one logit per code (a softmax mixture of codes while training, the best code after).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FeedForwardConfig

__all__ = ["FeedForwardNet", "effective_codebook"]


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if ch % g == 0 and ch // g >= 4:
            return g
    return 1


class _Block(nn.Module):
    """Residual conv block whose first normalisation is scaled and shifted by the text (FiLM)."""

    def __init__(self, ch: int, cond: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(_groups(ch), ch), nn.GroupNorm(_groups(ch), ch)
        self.film = nn.Linear(cond, 2 * ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        nn.init.zeros_(self.conv2.weight)  # a new block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(c)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(self.norm1(x) * (1 + scale) + shift))
        return x + self.conv2(F.silu(self.norm2(h)))


def effective_codebook(vqgan: nn.Module) -> torch.Tensor:
    """``[K, C]`` code vectors as the decoder receives them (normalised for a cosine-lookup VQGAN)."""
    k = vqgan.codebook.shape[0]
    idx = torch.arange(k, device=vqgan.codebook.device).view(1, 1, k)
    return vqgan.indices_to_latent(idx)[0, :, 0].T.float()


class FeedForwardNet(nn.Module):
    """Text embedding ``[B, text_dim]`` (+ noise ``[B, noise_dim]``) -> raw output ``[B, C or K, h, w]``."""

    def __init__(self, config: FeedForwardConfig) -> None:
        super().__init__()
        self.config = c = config
        cond_in = c.text_dim + c.noise_dim
        self.cond = nn.Sequential(nn.Linear(cond_in, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.to_map = nn.Linear(c.width, c.width * c.base[0] * c.base[1])
        widths = [max(c.width >> i, c.min_width) for i in range(c.upsamplings + 1)]
        self.stages = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, ch in enumerate(widths):
            self.stages.append(nn.ModuleList(_Block(ch, c.width) for _ in range(c.blocks)))
            if i + 1 < len(widths):
                self.ups.append(nn.Conv2d(ch, widths[i + 1], 3, padding=1))
        last = widths[-1]
        out = c.latent_channels if c.output == "latent" else c.n_embed
        self.head = nn.Sequential(nn.GroupNorm(_groups(last), last), nn.SiLU(), nn.Conv2d(last, out, 3, padding=1))

    def forward(self, text: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        c = self.config
        if text.dim() != 2 or text.shape[1] != c.text_dim:
            raise ValueError(f"expected text embeddings [B, {c.text_dim}] (CLIP {c.clip or '?'}), "
                             f"got {list(text.shape)}")
        x = F.normalize(text.float(), dim=-1)  # CLIP embeddings differ in norm; only the direction matters
        if c.noise_dim:
            if noise is None:
                noise = torch.zeros(x.shape[0], c.noise_dim, device=x.device)
            x = torch.cat([x, noise.to(x)], 1)
        cond = self.cond(x)
        h = self.to_map(F.silu(cond)).view(x.shape[0], c.width, *c.base)
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                h = block(h, cond)
            if i < len(self.ups):
                h = self.ups[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.head(h)

    def noise(self, batch: int, generator: torch.Generator | None, device: torch.device | None = None) -> torch.Tensor:
        """Standard normal inputs for ``batch`` images from ``generator`` (empty without ``noise_dim``)."""
        dev = device or next(self.parameters()).device
        gen_dev = generator.device if generator is not None else dev
        return torch.randn(batch, self.config.noise_dim, generator=generator, device=gen_dev).to(dev)

    def to_latent(self, raw: torch.Tensor, vqgan: nn.Module, tau: float = 1.0) -> torch.Tensor:
        """The decoder's latent ``[B, C, h, w]`` from :meth:`forward`'s output, differentiable (straight-through).

        ``latent`` output: snapped to the nearest code. ``logits``: the best code, with the gradient of the
        softmax(``logits / tau``) mixture of codes.
        """
        if self.config.output == "latent":
            return vqgan.quantize_latent(raw)[0]
        cb = effective_codebook(vqgan).to(raw.device)
        probs = torch.softmax(raw.float() / tau, dim=1)
        soft = torch.einsum("bkhw,kc->bchw", probs, cb)
        hard = cb[raw.argmax(1)].permute(0, 3, 1, 2)
        return soft + (hard - soft).detach()

    @torch.no_grad()
    def start_latent(self, raw: torch.Tensor, vqgan: nn.Module) -> torch.Tensor:
        """A latent for the optimiser to start from: the chosen codes' vectors (what the decoder shows).

        Why not the continuous prediction: with a cosine-lookup VQGAN only its direction counts, so training lets
        its norm grow (the demo's: ~1000x the codes'); the optimiser's steps and its clamp to the codebook's range
        assume code-sized latents and would scramble it in the first step.
        """
        return self.to_latent(raw, vqgan).detach().float()
