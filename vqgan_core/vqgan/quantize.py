"""Vector quantizers with one interface (``codebook``, ``nearest``, ``lookup``), so callers never branch on type.

- :class:`VectorQuantizer`: taming's ``VectorQuantizer2`` (key ``quantize.embedding.weight``), including the
  ``legacy`` beta behaviour every released model was trained with (van den Oord et al. 2017; taming README).
- :class:`GumbelQuantizer`: taming's ``GumbelQuantize`` (keys ``quantize.proj.*``, ``quantize.embed.weight``;
  Jang et al. 2017). In eval mode it tokenises with a deterministic argmax; it samples only in training mode or
  when given an explicit ``torch.Generator`` (taming's eval path is silently stochastic).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from ..util.registry import Registry
from .config import VQGANConfig

QUANTIZERS: Registry[type[nn.Module]] = Registry("quantizer")


def _to_rows(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B*h*w, C] in b-h-w row-major order (taming's flattening)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def nearest_code(
    z: torch.Tensor, codebook: torch.Tensor, codebook_sq: torch.Tensor | None = None, chunk: int | None = None
) -> torch.Tensor:
    """Indices of the nearest codebook rows: ``[B, h, w]`` for a latent ``z`` ``[B, C, h, w]``, or ``[N]`` for rows
    ``[N, C]`` (k-means assignments). The project's one nearest-code search.

    Uses taming's ``|z|^2 + |e|^2 - 2 z.e`` form in float32 whatever the model dtype, so near-ties resolve as in
    the reference. ``codebook_sq``: the rows' squared norms, when the caller keeps them (a loop's every step).
    ``chunk``: rows per distance matrix (bounds memory for many rows against a large codebook).
    """
    rows = z.float() if z.dim() == 2 else _to_rows(z).float()
    e = codebook.float()
    e_sq = e.pow(2).sum(1) if codebook_sq is None else codebook_sq
    parts = [(r.pow(2).sum(1, keepdim=True) + e_sq - 2 * r @ e.t()).argmin(1) for r in rows.split(chunk or len(rows) or 1)]
    idx = parts[0] if len(parts) == 1 else torch.cat(parts)
    return idx if z.dim() == 2 else idx.view(z.shape[0], *z.shape[2:])


def gumbel_noise_like(like: torch.Tensor, generator: torch.Generator | None = None, *,
                      from_uniform: bool = False) -> torch.Tensor:
    """Standard Gumbel noise shaped like ``like`` (its dtype and device): the project's one Gumbel draw.

    ``generator``: the stream (the device's global one when None). Both forms are free of host synchronisation and
    give the same distribution; they consume the generator differently, and each is pinned by the tests:

    - default, ``-log(E)`` with ``E ~ Exp(1)`` from ``exponential_``: ``F.gumbel_softmax``'s draw, so a generator
      seeded like taming's global stream reproduces its samples (the quantizer; the taming golden fixtures pin it);
    - ``from_uniform=True``, ``-log(-log(U))`` with ``U ~ U[0, 1)`` from ``torch.rand``, clamped to the smallest
      normal number (always finite): the draw codebook-sampling runs were made with, so a seed, a ``--from-png``
      reproduction or a resumed latent file gives the same images as before.
    """
    if from_uniform:
        u = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
    return -torch.empty_like(like).exponential_(generator=generator).log()


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Forward value ``z_q``, gradient to ``z`` (Bengio et al. 2013), written as taming writes it."""
    return z + (z_q - z).detach()


class _Quantizer(nn.Module, abc.ABC):
    """Shared interface: a ``codebook`` [n_embed, dim], ``nearest``, ``lookup`` and ``quantize_latent``."""

    n_embed: int
    embed_dim: int
    l2_normalize: bool = False

    @property
    @abc.abstractmethod
    def codebook(self) -> torch.Tensor:
        """``[n_embed, dim]``; each subclass names its parameter as taming does (``embedding`` / ``embed``)."""

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, h, w]`` -> latent ``[B, C, h, w]``."""
        if indices.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"code indices must be an integer tensor, got {indices.dtype}")
        if indices.dim() != 3:
            raise ValueError(f"code indices must have shape [B, h, w], got {list(indices.shape)}")
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= self.n_embed:
            raise ValueError(f"code indices must lie in [0, {self.n_embed - 1}], got range [{lo}, {hi}]")
        return self._embed(indices.long())

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        e = F.normalize(self.codebook, dim=1) if self.l2_normalize else self.codebook
        return F.embedding(idx, e).permute(0, 3, 1, 2).contiguous()

    def quantize_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Snap ``z`` to its nearest codes with a straight-through gradient (the VQGAN+CLIP ``synth`` step)."""
        zn = F.normalize(z, dim=1) if self.l2_normalize else z
        e = F.normalize(self.codebook, dim=1) if self.l2_normalize else self.codebook
        idx = nearest_code(zn, e)
        return straight_through(z, self._embed(idx).to(z.dtype)), idx


@QUANTIZERS.register("vq")
class VectorQuantizer(_Quantizer):
    """Nearest-neighbour VQ with codebook and commitment losses (taming VectorQuantizer2, ``sane_index_shape``)."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25, legacy: bool = True, l2_normalize: bool = False) -> None:
        super().__init__()
        self.n_embed, self.embed_dim, self.beta, self.legacy = n_embed, embed_dim, beta, legacy
        self.l2_normalize = l2_normalize
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize ``h`` [B, C, h, w] -> (straight-through z_q, loss, indices [B, h, w]).

        legacy=True: ``mean((sg[z_q]-z)^2) + beta*mean((z_q-sg[z])^2)`` (commitment weight 1, codebook weight beta);
        legacy=False: the VQ-VAE weighting. The forward value is the same, only gradients differ.
        """
        z = F.normalize(h, dim=1) if self.l2_normalize else h
        e = F.normalize(self.embedding.weight, dim=1) if self.l2_normalize else self.embedding.weight
        idx = nearest_code(z, e)
        z_q = F.embedding(idx, e).permute(0, 3, 1, 2).to(z.dtype)
        commit = torch.mean((z_q.detach() - z) ** 2)
        codebook = torch.mean((z_q - z.detach()) ** 2)
        loss = commit + self.beta * codebook if self.legacy else self.beta * commit + codebook
        return straight_through(z, z_q), loss, idx


@QUANTIZERS.register("gumbel")
class GumbelQuantizer(_Quantizer):
    """Gumbel-softmax quantizer: ``proj`` gives logits over codes, ``embed`` holds the codebook.

    Training mode samples ``argmax(logits + g)`` with a hard straight-through one-hot (taming). Eval mode is the
    deterministic ``argmax(logits)`` unless a ``generator`` (or explicit ``gumbel_noise``) asks for a sample.
    """

    def __init__(self, n_embed: int, embed_dim: int, kl_weight: float = 5e-4, temperature: float = 1.0) -> None:
        super().__init__()
        self.n_embed, self.embed_dim, self.kl_weight, self.temperature = n_embed, embed_dim, kl_weight, temperature
        self.proj = nn.Conv2d(embed_dim, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embed.weight

    def kl_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """``kl_weight * mean_pos(sum_n q log(q n + 1e-10))``: KL to a uniform prior over codes."""
        qy = F.softmax(logits.float(), dim=1)
        return self.kl_weight * torch.sum(qy * torch.log(qy * self.n_embed + 1e-10), dim=1).mean()

    def forward(
        self,
        h: torch.Tensor,
        generator: torch.Generator | None = None,
        gumbel_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize ``h`` -> (z_q, KL loss, indices [B, h, w])."""
        logits = self.proj(h)
        loss = self.kl_loss(logits)
        if gumbel_noise is None and (self.training or generator is not None):
            gumbel_noise = gumbel_noise_like(logits, generator)
        if gumbel_noise is None:
            idx = logits.argmax(1)
            return self.lookup(idx).to(h.dtype), loss, idx
        y_soft = F.softmax((logits + gumbel_noise) / self.temperature, dim=1)
        idx = y_soft.argmax(1)
        y_hard = F.one_hot(idx, self.n_embed).permute(0, 3, 1, 2).to(y_soft.dtype)
        one_hot = y_hard - y_soft.detach() + y_soft
        z_q = torch.einsum("bnhw,nd->bdhw", one_hot, self.embed.weight.to(one_hot.dtype))
        return z_q.to(h.dtype), loss, idx


def build_quantizer(cfg: VQGANConfig) -> nn.Module:
    """The quantizer named by ``cfg.quantizer`` (registry lookup: unknown names list the valid ones)."""
    cls = QUANTIZERS.get(cfg.quantizer)
    if cls is GumbelQuantizer:
        return GumbelQuantizer(cfg.n_embed, cfg.embed_dim, cfg.kl_weight, cfg.temperature)
    return cls(cfg.n_embed, cfg.embed_dim, cfg.beta, cfg.legacy, cfg.l2_normalize)
