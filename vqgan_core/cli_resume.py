"""``generate --resume`` / ``--save-latent``: a command-line run that stops and goes on later, exactly.

The file is a ``vqgan_core.latent_io`` latent (the same as ComfyUI's Save / Load VQ Latent): the latent,
the optimiser state, the step count, the seed and the random stream, so a resumed run continues Adam's
moments, the story and the cutouts' random draws. A resumed image's PNG records the file and its hash.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vqgan_core.download import file_sha256
from vqgan_core.latent_io import LatentFile, load_latent, save_latent
from vqgan_core.run_state import run_state

__all__ = ["resume_config", "resume_source", "save_run"]


def resume_source(args: argparse.Namespace, png_meta: dict) -> tuple[str, LatentFile] | tuple[None, None]:
    """``(path, file)`` to resume from: ``--resume``, else the file a ``--from-png`` image was resumed from
    (refused when that file changed since: its image could not be reproduced)."""
    path = args.resume
    if path is None and png_meta.get("resumed_from"):
        path = png_meta["resumed_from"]
        if not Path(path).is_file():
            raise ValueError(f"{args.from_png} was resumed from {path}, which is gone: give --resume with that file")
        if png_meta.get("resumed_sha256") not in (None, file_sha256(path)):
            raise ValueError(f"{args.from_png} was resumed from {path}, which was rewritten since (another "
                             "--save-latent?): give --resume with the file as it was")
    return (path, load_latent(path)) if path else (None, None)


def resume_config(cfg, latent: LatentFile, args: argparse.Namespace, path: str):  # noqa: ANN001, ANN201
    """``cfg`` for going on from ``latent``: its size, batch, seed and method unless given explicitly (size and batch
    must then match; another method starts afresh from the latent's codes)."""
    b, _, h, w = latent.z.shape
    f = latent.downsample_factor
    size = (w * f, h * f)
    if args.size is not None and tuple(args.size) != size:
        raise ValueError(f"{path} holds {size[0]}x{size[1]} images, not --size {args.size[0]} {args.size[1]}: "
                         "leave --size out when resuming")
    if args.batch is not None and args.batch != b:
        raise ValueError(f"{path} holds a batch of {b}, not --batch {args.batch}: leave --batch out when resuming")
    seed = cfg.seed if args.seed is not None or latent.state.get("seed") is None else latent.state["seed"]
    method = cfg.method if getattr(args, "method", None) is not None else latent.state.get("method", cfg.method)
    return cfg.replace(width=size[0], height=size[1], batch_size=b, seed=seed, method=method)


def save_run(path: str | os.PathLike, loop) -> Path:  # noqa: ANN001 - a GenerationLoop
    """Write the loop's latent and run state (what ``--resume`` continues from)."""
    return save_latent(path, LatentFile.of(loop.latent(), loop.vqgan, run_state(loop)))
