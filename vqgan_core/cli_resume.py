"""``generate --resume`` / ``--save-latent``: a command-line run that stops and goes on later, exactly.

The file is a ``vqgan_core.latent_io`` latent (the same as ComfyUI's Save / Load VQ Latent): the latent,
the optimiser state and the step count, so a resumed run continues Adam's moments and the story.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vqgan_core.latent_io import LatentFile, load_latent, save_latent
from vqgan_core.run_state import run_state

__all__ = ["load_resume", "save_run"]


def load_resume(path: str | os.PathLike, vqgan: torch.nn.Module) -> LatentFile:
    """Read ``path`` and check it was made with this VQGAN (else a ValueError naming both)."""
    f = load_latent(path)
    have = (tuple(vqgan.codebook.shape), int(vqgan.downsample_factor))
    if (f.codebook_shape, f.downsample_factor) != have:
        raise ValueError(f"{path} was saved with a VQGAN with codebook {f.codebook_shape} and factor "
                         f"{f.downsample_factor}, but --vqgan has codebook {have[0]} and factor {have[1]}: "
                         "give the VQGAN it was made with")
    return f


def save_run(path: str | os.PathLike, loop) -> Path:  # noqa: ANN001 - a GenerationLoop
    """Write the loop's latent and run state (what ``--resume`` continues from)."""
    vq = loop.vqgan
    return save_latent(path, LatentFile(loop.z.detach(), tuple(vq.codebook.shape), int(vq.downsample_factor),
                                        run_state(loop)))
