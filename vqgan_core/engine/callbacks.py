"""What the generation loop reports: the per-step callbacks it calls and the result it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import GenerationConfig

__all__ = ["GenerationCallbacks", "GenerationResult"]


@dataclass
class GenerationCallbacks:
    """Hooks called by the loop (all optional).

    progress(step, total, loss): after every step; ``loss`` is a float on logging steps, else None.
    preview(step, images) / save(step, images): every ``preview_every`` / ``save_every`` steps with
    ``[B,3,H,W]`` CPU images in [0,1] (the image the step was computed on; step 0 = the start).
    should_stop(): checked before every step; True ends the run early (result.interrupted).
    free_memory(): called once, the first time a step runs out of GPU memory: the host (ComfyUI)
    unloads the models it holds, and the step is retried as it was before decoder checkpointing is
    considered.
    """

    progress: Callable[[int, int, float | None], None] | None = None
    preview: Callable[[int, torch.Tensor], None] | None = None
    save: Callable[[int, torch.Tensor], None] | None = None
    should_stop: Callable[[], bool] | None = None
    free_memory: Callable[[], None] | None = None


@dataclass
class GenerationResult:
    """Output of a run: images, the latent to continue from, and what was done."""

    images: torch.Tensor  # [B,3,H,W] float32 CPU in [0,1]
    latent: torch.Tensor  # [B,C,h,w] float32 (continuous z; pass as init_latent to continue)
    indices: torch.Tensor  # [B,h,w] int64 codebook indices of the final image
    config: GenerationConfig  # with the seed actually used
    losses: list[tuple[int, float]] = field(default_factory=list)
    steps_done: int = 0
    interrupted: bool = False
