"""``GenerationConfig``: every setting of a VQGAN+CLIP run, JSON-serialisable for PNG metadata.

A PNG written by the CLI carries this config (with the resolved seed and model specs), so
``generate --from-png out.png`` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..latents.code_sampling import METHODS
from ..objective.image_losses import parse_image_losses
from ..util.finite import check_finite
from ..views.augment import parse_augments
from ..vqgan.config import reject_unknown_keys

__all__ = ["COMPILE_MODES", "METHODS", "PRECISIONS", "GenerationConfig"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "classic")
COMPILE_MODES = ("off", "blocks", "full")


@dataclass
class GenerationConfig:
    """Settings of one generation run (defaults = the classic nerdyrodent script, except size/steps)."""

    # prompts (classic grammar "text:weight:stop|..."; '^' separates story phrase sets)
    prompts: str = ""
    image_prompts: str = ""  # "path_or_url:weight:stop|..."
    noise_prompts: str = ""  # "seed:weight|..."
    batch_prompts: list[str] | None = None  # one prompt string per batch item (overrides `prompts`)
    change_prompts_every: int = 0  # story mode: next '^' phrase set every N steps (classic -cpe)
    story_fade: int = 0  # story mode: crossfade into each new phrase set over N steps (0 = switch at once)
    region_prompts: list[list[str]] | None = None  # [[mask file, prompts], ...]: prompts for part of the image
    # image and run
    width: int = 256
    height: int = 256
    steps: int = 300
    seed: int | None = None  # None: drawn at random and recorded in the result/PNG
    batch_size: int = 1  # items b use seeds seed+b
    seamless: bool = False  # tileable image: circular padding in the VQGAN, views rolled (vqgan_core.vqgan.seamless)
    # initialisation
    init: str = "random"  # random | image | pixels | gradient | perlin
    init_image: str | None = None  # file or URL for init="image"
    init_weight: float = 0.0  # MSE pull-back to the initial latent
    init_weight_decay: str = "classic"  # classic (1/(2i+1)/2) | linear | none
    edit_mask: str | None = None  # inpainting: mask file (white / opaque = may change; the rest keeps the start)
    # cutouts and augmentation
    cutout_method: str = "latest"  # latest | crops | mixed
    cutn: int = 32
    cut_pow: float = 1.0
    augments: list[str] = field(default_factory=lambda: ["Af", "Pe", "Ji", "Er"])
    aug_noise: float = 0.1  # per-cutout noise U(0, aug_noise) * N(0, 1) (classic 0.1)
    aug_padding: str = "zeros"  # zeros | border | reflection
    # loss
    tv_weight: float = 0.0
    image_losses: dict[str, float] | None = None  # {name: weight}, e.g. {"symmetry": 0.5} (vqgan_core.objective.image_losses)
    clip_weights: list[float] | None = None  # ensemble weights (default 1 each)
    # optimisation
    # z_quantize: the classic continuous latent, snapped to the codebook; codebook_sampling: logits over the
    # codes of every cell, a draw per step (EleutherAI's notebook; vqgan_core.latents.code_sampling)
    method: str = "z_quantize"
    optimizer: str = "adam"
    lr: float = 0.1
    lr_schedule: str = "constant"  # constant | cosine | step | plateau
    clamp_latent: bool = True  # clamp z to the per-channel codebook range after each step
    # speed / numerics
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 | classic (fp32 VQGAN + fp16 CLIP on CUDA)
    channels_last: bool | None = None  # None: on for CUDA and bf16
    compile: str = "off"  # off | blocks (each decoder/CLIP block; ~65 s to compile on 2 cores) | full (~140 s)
    # recompute decoder activations in backward: far less memory, ~1 more decoder forward per step, same image.
    # None: only after a step runs out of GPU memory (the step is retried); False: never (fail instead)
    checkpoint_decoder: bool | None = None
    cuda_graph: bool | None = None  # replay forward+backward as one CUDA graph (None: on for CUDA unless deterministic)
    deterministic: bool = False  # torch deterministic algorithms (CUDA: slower; see docs)
    # cuDNN times its convolution algorithms on the first step and keeps the fastest (None: on for CUDA unless
    # deterministic; the pick can vary between runs, so same-seed images may differ in the last bits on CUDA)
    cudnn_benchmark: bool | None = None
    # reporting
    log_every: int = 10  # fetch the loss (a device sync) every N steps
    save_every: int = 0
    preview_every: int = 0
    # provenance (filled by the CLI; not used by the loop)
    vqgan: str | None = None
    clip: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if isinstance(self.compile, bool) or self.compile is None:  # settings of older versions: a flag
            self.compile = "blocks" if self.compile else "off"
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {self.compile!r}; valid: {', '.join(COMPILE_MODES)}")
        for name in ("lr", "cut_pow", "aug_noise", "tv_weight", "init_weight"):  # NaN/inf: a black image later
            check_finite(getattr(self, name), name)
        for name in ("clip_weights",):
            for w in getattr(self, name) or []:
                check_finite(w, f"{name} entry")
        for name in ("steps", "width", "height", "batch_size", "cutn", "change_prompts_every", "story_fade",
                     "save_every", "preview_every", "log_every"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be a whole number, got {self.seed!r}")
        if self.steps < 0 or self.batch_size < 1 or self.cutn < 1:
            raise ValueError(f"need steps >= 0, batch_size >= 1, cutn >= 1 (got {self.steps}, {self.batch_size}, {self.cutn})")
        for name in ("change_prompts_every", "story_fade", "save_every", "preview_every", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.story_fade and self.change_prompts_every and self.story_fade > self.change_prompts_every:
            raise ValueError(f"story_fade ({self.story_fade}) must be at most change_prompts_every "
                             f"({self.change_prompts_every}): a crossfade ends before the next change")
        if not (self.lr > 0 and self.cut_pow >= 0):
            raise ValueError(f"lr must be positive and cut_pow at least 0, got lr={self.lr}, cut_pow={self.cut_pow}")
        if self.batch_prompts is not None and len(self.batch_prompts) != self.batch_size:
            raise ValueError(f"batch_prompts has {len(self.batch_prompts)} entries but batch_size is {self.batch_size}")
        for r in self.region_prompts or []:
            if not (isinstance(r, (list, tuple)) and len(r) == 2 and all(isinstance(v, str) for v in r)):
                raise ValueError(f"each region prompt is [mask file, prompts], got {r!r}")
        self.image_losses = parse_image_losses(self.image_losses) or None
        if isinstance(self.augments, str):
            self.augments = list(parse_augments(self.augments))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON types only)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Compact JSON for PNG text metadata."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationConfig:
        """Build from a dict; unknown keys are an error naming them (a typo never goes unnoticed)."""
        reject_unknown_keys(cls, d, "generation setting(s)")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> GenerationConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> GenerationConfig:
        """Copy with some fields changed (validated)."""
        return self.from_dict({**self.to_dict(), **changes})
