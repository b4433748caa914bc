"""What the parts of a composed run learn when it starts (:class:`RunInfo`) and at every step (:class:`StepContext`).

Why two objects: a loss term is built by the user before any run exists (a graph node, a script), so what it
needs from the run (device, image size, batch, seed, the start latent, the precision) arrives once, at
``bind``; what changes per step (the step number, the random stream, the latent being optimised) arrives with
each call. Nothing is global: two runs with the same parts and seed draw the same numbers.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

__all__ = ["RunInfo", "StepContext", "restore_stream", "stream_seed"]

log = logging.getLogger(__name__)


def stream_seed(seed: int, stream: int) -> int:
    """An independent generator seed per random stream of a run, inside torch's 64-bit seed range."""
    return (int(seed) * 7919 + stream) % 2**64


def restore_stream(gen: torch.Generator, device_type: str | None, state: torch.Tensor) -> bool:
    """Go on with a saved random stream when it is of ``gen``'s device type and this torch's layout; else the
    generator keeps drawing from its own seed (with a warning). Returns whether it was restored."""
    if device_type != gen.device.type:
        log.warning("the saved random stream is for %s, this run is on %s: it draws from its own seed", device_type,
                    gen.device.type)
        return False
    try:
        gen.set_state(state)
    except RuntimeError as e:  # another torch version's generator layout
        log.warning("the saved random stream does not fit this torch (%s): it draws from its own seed", e)
        return False
    return True


@dataclass
class RunInfo:
    """A run as its loss terms see it when it starts.

    Attributes:
        vqgan: the VQGAN being decoded (terms may encode images with it, e.g. an init-image target).
        device: where the run computes.
        height, width: image size in pixels; batch: images per step.
        seed: the run's seed (terms derive their own streams with :func:`stream_seed`).
        start_latent: ``[B, C, h, w]`` latent the run starts from (a copy).
        planned_steps: steps of the whole planned run (schedules and decays span it).
        seamless: whether the image tiles (views roll across its edges, TV is circular).
        low_dtype: bf16/fp16 when the run computes in low precision, else None.
        cast_cache: autocast's weight-cast cache (off while a CUDA graph is captured).
        start_step: the step of the whole run its first step has (a continued run's terms start there).
    """

    vqgan: torch.nn.Module
    device: torch.device
    height: int
    width: int
    batch: int
    seed: int
    start_latent: torch.Tensor
    planned_steps: int
    seamless: bool = False
    low_dtype: torch.dtype | None = None
    cast_cache: bool = True
    start_step: int = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's autocast (a no-op in fp32). CUDA graph capture needs the cast cache off."""
        if self.low_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.low_dtype, cache_enabled=self.cast_cache)


@dataclass
class StepContext:
    """One step as a loss term sees it.

    Attributes:
        step: the step of the whole run (chained parts count on; story phrase sets and decays follow it).
        gen: the run's random stream (cutouts, augmentations, rolls): draw from nothing else.
        z: the optimised tensor (a latent, or logits for codebook sampling).
        z_q: the latent the decoder saw this step.
        latent: the run's latent as a differentiable tensor (``z`` itself for z+quantize; for codebook
            sampling the drawn latent, its gradient through the expected code): what a pull-back compares.
        run: the run's :class:`RunInfo`.
    """

    step: int
    gen: torch.Generator
    z: torch.Tensor
    z_q: torch.Tensor
    latent: torch.Tensor
    run: RunInfo
