"""Custom ComfyUI socket types of the pack and the Python values that travel on them.

Values are passed by reference and cached by ComfyUI, so every node treats its inputs as read-only
and returns new objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from comfy_api.latest import io

VQGANModel = io.Custom("VQGAN_MODEL")
"""A loaded ``vqgan_core.VQGAN`` (built outside inference mode; in ComfyUI's memory manager: nodes call ``memory.use``)."""

ClipGuide = io.Custom("VQCLIP_GUIDE")
"""One CLIP model or an ensemble of several (``vqgan_core.clip.guide``)."""

VQLatent = io.Custom("VQ_LATENT")
"""A :class:`Latent`: continuous VQ latent plus the model that decodes it."""

VQCodes = io.Custom("VQ_CODES")
"""Code indices ``[B, h, w]`` int64 (a :class:`Codes`)."""

ClipTargets = io.Custom("VQCLIP_TARGETS")
"""A :class:`Targets`: text and image prompts with weights and stops."""

VQLoss = io.Custom("VQCLIP_LOSS")
"""A :class:`LossRecipe`: builds the ``vqgan_core.engine`` loss term(s) of one run."""

VQOptimizer = io.Custom("VQCLIP_OPTIMIZER")
"""A ``vqgan_core.engine.OptimizerSpec`` (name, learning rate, schedule)."""

FeedForwardModel = io.Custom("VQGAN_FEED_FORWARD")
"""A loaded ``vqgan_core.FeedForwardNet``: CLIP text embedding -> VQGAN latent in one pass (built outside inference
mode, in ComfyUI's memory manager like the VQGAN)."""


@dataclass(frozen=True)
class LossRecipe:
    """What travels on a VQCLIP_LOSS socket: a builder of fresh loss terms, since a term binds to one run at a
    time and ComfyUI hands one cached output to every node downstream. ``label`` says what it is (readout)."""

    build: Callable[[], Any]
    label: str
    guides: tuple = ()  # the CLIP guides it uses (memory management: loaded before the run)
    views: int = 0  # CLIP passes per step (memory estimate)
    cutn: int = 0  # the largest cutout count of its CLIP terms


@dataclass(frozen=True)
class Latent:
    """What travels on a VQ_LATENT socket.

    Attributes:
        z: continuous latent [B, C, h, w] (what the optimiser moves; quantised on decode).
        model: the VQGAN whose codebook/decoder the latent belongs to.
        state: optional engine state for continuing a run (e.g. optimiser moments, step count).
    """

    z: torch.Tensor
    model: Any
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        """Number of images in the latent."""
        return int(self.z.shape[0])

    def pixel_size(self) -> tuple[int, int]:
        """(width, height) in pixels of the decoded image."""
        f = int(self.model.downsample_factor)
        return int(self.z.shape[-1]) * f, int(self.z.shape[-2]) * f


@dataclass(frozen=True)
class Codes:
    """Code indices of a VQ latent: ``indices`` [B, h, w] int64 plus the model they index into."""

    indices: torch.Tensor
    model: Any


@dataclass(frozen=True)
class Target:
    """One CLIP target before it is embedded.

    Text prompts stay text until the optimiser embeds them with its guide, so one CLIP Text
    Prompt node can feed several guides. ``text`` uses the engine's prompt grammar
    (``a:1|b:-0.5:0.1``); ``image`` is [B,3,H,W] in [0,1]; ``seed`` draws a noise prompt (a random
    CLIP direction, the classic ``-nps``).
    """

    kind: str  # "text" | "image" | "noise"
    text: str = ""
    image: torch.Tensor | None = None
    seed: int = 0
    phase: int | None = None  # story mode: the '^'-separated phrase set of its text prompt; None = every set
    phases: int = 1  # how many phrase sets its text prompt has (each prompt's story cycles on its own)
    weight: float = 1.0
    stop: float = float("-inf")
    region: torch.Tensor | None = None  # [H, W] mask (> 0.5 = the region) for a regional target; None = whole image


@dataclass(frozen=True)
class Targets:
    """An ordered collection of targets (what travels on VQCLIP_TARGETS)."""

    items: tuple[Target, ...] = ()
    pace: tuple[int, int] = (0, 0)  # story mode: (steps per '^' phrase set, crossfade steps); 0 = no story

    def __add__(self, other: Targets) -> Targets:
        """Concatenate two target sets (Combine Targets); a story pace set on either is kept."""
        pace = tuple(max(a, b) for a, b in zip(self.pace, other.pace, strict=True))
        return Targets(self.items + other.items, pace)

    def describe(self) -> str:
        """One line per target, for previews and errors."""
        lines = []
        for t in self.items:
            if t.kind == "image":
                what = f"image {tuple(t.image.shape)}"
            else:
                what = f"seed {t.seed}" if t.kind == "noise" else t.text
            where = "" if t.region is None else f", region mask {tuple(t.region.shape)}"
            where += "" if t.phase is None else f", phrase set {t.phase + 1}"
            lines.append(f"{t.kind}: {what} (weight {t.weight:g}, stop {t.stop:g}{where})")
        return "\n".join(lines)


# Tooltips of the pack's sockets (one wording everywhere a socket of that type appears).
VQGAN_TIP = "The VQGAN that encodes and decodes (Load VQGAN, or VQGAN Seamless for tiles)."
GUIDE_TIP = "The CLIP model that judges the image (Load CLIP Guide, or Combine CLIP Guides for an ensemble)."
LATENT_TIP = "A VQ latent: Random VQ Latent, VQGAN Encode, Load VQ Latent or an optimising node's output."
FEED_FORWARD_TIP = "A feed-forward text-to-latent model (Load Feed-Forward Model), trained for one VQGAN and CLIP."
TARGETS_TIP = "What the image should show: CLIP Text / Image / Noise Prompt, Combine Targets, Region Targets."
