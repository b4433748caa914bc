"""The typed config of a feed-forward network, stored as JSON in its safetensors metadata."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..util.settings import reject_unknown_keys

__all__ = ["OUTPUTS", "FeedForwardConfig"]

#: what the network predicts per latent cell: a continuous latent snapped to the nearest code, or code logits
OUTPUTS = ("latent", "logits")


@dataclass
class FeedForwardConfig:
    """Architecture of a :class:`~vqgan_core.feedforward.model.FeedForwardNet` and what it was trained for.

    Attributes:
        text_dim: the CLIP text embedding's size (the input).
        noise_dim: extra random inputs for variety (0: one image per text).
        grid: ``(h, w)`` latent cells produced (the image is ``grid * f`` pixels for an f-times VQGAN).
        base: ``(h, w)`` of the first feature map; ``grid / base`` must be a power of two (one upsampling each).
        width: channels of the first feature map (halved per upsampling, at least ``min_width``).
        min_width: the narrowest feature map.
        blocks: residual blocks per resolution.
        latent_channels: the VQGAN's ``embed_dim``; n_embed: its codebook size.
        output: ``latent`` (continuous, snapped to the codebook) or ``logits`` (one score per code).
        vqgan: the VQGAN it was trained with (a name or file name, for messages).
        vqgan_fingerprint: a few numbers of that VQGAN's codebook (loading with another VQGAN is an error).
        clip: the CLIP spec whose text embeddings it reads (``demo``, ``ViT-B-32:openai``).
        extra: free-form provenance (training run, steps, held-out captions).
    """

    text_dim: int = 512
    noise_dim: int = 0
    grid: tuple[int, int] = (16, 16)
    base: tuple[int, int] = (4, 4)
    width: int = 256
    min_width: int = 64
    blocks: int = 1
    latent_channels: int = 256
    n_embed: int = 16384
    output: str = "latent"
    vqgan: str = ""
    vqgan_fingerprint: list[float] = field(default_factory=list)
    clip: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        self.base = (int(self.base[0]), int(self.base[1]))
        for name in ("text_dim", "width", "min_width", "latent_channels", "n_embed"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"feed-forward config: {name} must be positive, got {getattr(self, name)!r}")
        if self.noise_dim < 0 or self.blocks < 0:
            raise ValueError(f"feed-forward config: noise_dim and blocks must be >= 0 "
                             f"(got {self.noise_dim}, {self.blocks})")
        if self.output not in OUTPUTS:
            raise ValueError(f"feed-forward config: unknown output {self.output!r}; valid: {', '.join(OUTPUTS)}")
        self.upsamplings  # noqa: B018 - checks the grid against the base

    @property
    def upsamplings(self) -> int:
        """How many times the base map doubles to reach the grid."""
        (gh, gw), (bh, bw) = self.grid, self.base
        if min(gh, gw, bh, bw) <= 0 or gh % bh or gw % bw or gh // bh != gw // bw:
            raise ValueError(f"feed-forward config: grid {self.grid} must be base {self.base} times one power of two")
        ratio = gh // bh
        if ratio & (ratio - 1):
            raise ValueError(f"feed-forward config: grid {self.grid} / base {self.base} = {ratio}, not a power of two")
        return ratio.bit_length() - 1

    def to_json(self) -> str:
        """The config as JSON (safetensors metadata)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], what: str = "feed-forward config") -> FeedForwardConfig:
        """Build from a dict; an unknown key is an error naming the valid ones."""
        reject_unknown_keys(cls, d, what)
        return cls(**d)

    @classmethod
    def from_json(cls, text: str, what: str = "feed-forward config") -> FeedForwardConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text), what)
