"""``generate --resume`` / ``--save-latent``: a command-line run that stops and goes on later, exactly.

The file is a ``vqgan_core.latents.files`` latent (the same as ComfyUI's Save / Load VQ Latent): the latent,
the optimiser state, the step count, the seed and the random stream, so a resumed run continues Adam's
moments, the story and the cutouts' random draws. A resumed image's PNG records the file and its hash.

A ``--save-latent`` file also holds every setting of the run (its ``GenerationConfig``), so ``--resume FILE``
needs no flags repeated: the prompts, cutouts, models... come from the file, the flags given override them, and
without ``--steps`` the run goes on for the steps its plan had left (or, when it had finished, as many again).
Files from ComfyUI's Save VQ Latent hold no settings: then only the seed, size, batch and method come from it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from ..engine.run_state import run_state
from ..hub.download import file_sha256
from ..latents.files import LatentFile, load_latent, save_latent

__all__ = ["resume_config", "resume_file", "resume_settings", "resume_source", "save_run"]

log = logging.getLogger(__name__)


def resume_file(args: argparse.Namespace) -> LatentFile | None:
    """The ``--resume`` file (None without the flag), read once per command."""
    path = getattr(args, "resume", None)
    if not path:
        return None
    if getattr(args, "_resume_file", None) is None:
        args._resume_file = load_latent(path)
    return args._resume_file


def resume_settings(args: argparse.Namespace, explicit: set[str]) -> dict[str, Any]:
    """The settings stored in the ``--resume`` file ({} without the flag or for a file without settings), with
    ``steps`` set to what the saved run had left of its plan unless ``--steps`` is in ``explicit``."""
    latent = resume_file(args)
    if latent is None or not latent.settings:
        return {}
    stored = dict(latent.settings["config"])
    if stored.get("checkpoint_decoder") is False:  # as for --from-png: the same image, and no failure on OOM
        stored["checkpoint_decoder"] = None
    if "steps" not in explicit:
        done, planned = latent.state.get("steps"), latent.settings.get("planned_steps")
        if isinstance(planned, int) and isinstance(done, int) and planned > done:
            stored["steps"] = planned - done
            log.info("%s stopped at step %d of %d: running the %d steps left (--steps to choose)", args.resume,
                     done, planned, planned - done)
        elif isinstance(stored.get("steps"), int):
            log.info("%s finished its run at step %s: running %d more steps, as many as it ran (--steps to choose)",
                     args.resume, done, stored["steps"])
    return stored


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
    if path is None:
        return None, None
    return path, (resume_file(args) if path == args.resume else load_latent(path))


def resume_config(cfg, latent: LatentFile, args: argparse.Namespace, path: str):  # noqa: ANN001, ANN201
    """``cfg`` for going on from ``latent``: its size, batch, seed and method unless given explicitly (size and batch
    must then match; another method starts afresh from the latent's codes)."""
    b, _, h, w = latent.z.shape
    f = latent.downsample_factor
    size = (w * f, h * f)
    if args.size is not None and tuple(args.size) != size:
        raise ValueError(f"{path} holds {size[0]}x{size[1]} images, not --size {args.size[0]} {args.size[1]}: "
                         "leave --size out when resuming")
    if args.batch_size is not None and args.batch_size != b:
        raise ValueError(f"{path} holds a batch of {b}, not --batch {args.batch_size}: leave --batch out when resuming")
    seed = cfg.seed if args.seed is not None or latent.state.get("seed") is None else latent.state["seed"]
    method = cfg.method if getattr(args, "method", None) is not None else latent.state.get("method", cfg.method)
    return cfg.replace(width=size[0], height=size[1], batch_size=b, seed=seed, method=method)


def save_run(path: str | os.PathLike, loop, planned_steps: int | None = None) -> Path:  # noqa: ANN001 - a GenerationLoop
    """Write the loop's latent, run state and settings (what ``--resume`` continues from); ``planned_steps``: the
    steps the whole run planned (a resumed run's included), so a run stopped early goes on to its end."""
    settings = {"config": loop.config.to_dict(), "planned_steps": planned_steps if planned_steps is not None
                else loop.config.steps}
    return save_latent(path, LatentFile.of(loop.latent(), loop.vqgan, run_state(loop), settings))
