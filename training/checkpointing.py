"""Atomic training checkpoints: a folder per step, written under a temporary name and renamed into place.

Layout of ``OUT/checkpoints/step_00001234/``:

- ``weights.safetensors``: the generator, written by ``vqgan_core.save_vqgan`` (config in the metadata), so it
  loads with ``vqgan_core.load_vqgan`` and in the ComfyUI nodes as it is;
- ``ema.safetensors``: EMA generator weights (same format), when EMA is on;
- ``discriminator.safetensors``: the PatchGAN;
- ``state.pt``: optimisers, grad scaler, step, samples seen, RNG states, codebook counters and the training
  config (plain tensors and containers: loads with ``weights_only=True``).

``OUT/checkpoints/latest`` names the newest complete folder. A crash mid-write leaves only a ``.tmp`` folder, and an
interrupted prune only a ``.prune`` folder; :func:`remove_leftovers` deletes both when the next run starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vqgan_core import (
    atomic_save_file,
    atomic_torch_save,
    atomic_write_bytes,
    read_safetensors,
    safe_torch_load,
    save_vqgan,
)

logger = logging.getLogger(__name__)

WEIGHTS, EMA_WEIGHTS, DISC, STATE, LATEST = (
    "weights.safetensors",
    "ema.safetensors",
    "discriminator.safetensors",
    "state.pt",
    "latest",
)
REQUIRED = (WEIGHTS, DISC, STATE)  # what every folder written by save_checkpoint holds (EMA is optional)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, folder not writable); the previous ones are untouched."""


def save_checkpoint(
    out: str | Path,
    step: int,
    model: torch.nn.Module,
    disc: torch.nn.Module,
    state: dict[str, Any],
    ema_model: torch.nn.Module | None = None,
    train_config: dict[str, Any] | None = None,
    keep_last: int = 0,
) -> Path:
    """Write ``OUT/checkpoints/step_{step}`` atomically and point ``latest`` at it; prune old ones."""

    def write(tmp: Path) -> None:
        meta = {"train_step": str(step)}
        if train_config is not None:
            meta["train_config"] = json.dumps(train_config, sort_keys=True)
        save_vqgan(model, tmp / WEIGHTS, extra_metadata=meta)
        if ema_model is not None:
            save_vqgan(ema_model, tmp / EMA_WEIGHTS, extra_metadata={**meta, "ema": "true"})
        disc_sd = {k: v.detach().cpu() for k, v in disc.state_dict().items()}
        atomic_save_file(disc_sd, tmp / DISC, metadata={"format": "pt"})
        atomic_torch_save({**state, "step": step, "train_config": train_config}, tmp / STATE)

    return save_step_folder(out, step, write, keep_last)


def save_step_folder(out: str | Path, step: int, write: Callable[[Path], None], keep_last: int = 0,
                     required: tuple[str, ...] = REQUIRED) -> Path:
    """Fill a temporary folder with ``write(tmp)``, rename it to ``OUT/checkpoints/step_{step}``, point ``latest``
    at it and keep the newest ``keep_last`` (0: all). Any run kind's checkpoints go through here."""
    root = Path(out) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".step_{step:08d}.tmp{os.getpid()}"
    aside = None
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        write(tmp)
        if final.exists():  # re-saving the same step (e.g. a signal right after a periodic save): never delete first
            aside = root / f".{final.name}.old{os.getpid()}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(final, aside)
        os.replace(tmp, final)
        atomic_write_bytes(root / LATEST, final.name + "\n")
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError("basic_ios::clear")
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and aside.is_dir() and not final.exists():
            os.replace(aside, final)  # the step's earlier complete copy goes back where it was
        raise CheckpointWriteError(_write_failure(final, e)) from e
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    if keep_last > 0:
        for old in list_checkpoints(out, required)[:-keep_last]:
            _prune(old)
    logger.info("checkpoint written: %s", final)
    return final


def _write_failure(final: Path, e: BaseException) -> str:
    """One actionable line for a failed checkpoint write (C++ stream errors from torch carry no errno)."""
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
        full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        hint = "disk full?" if full else "is the folder writable?"
    else:
        reason, hint = str(e), "disk full?"
    free = ""
    with contextlib.suppress(OSError):
        free = f" {shutil.disk_usage(final.parent).free / 2**20:.0f} MiB free there."
    return (
        f"could not write checkpoint to {final}: {hint} ({reason}).{free} Earlier checkpoints are untouched; "
        f"free some space and continue with --resume"
    )


def _prune(path: Path) -> None:
    """Delete an old checkpoint: renamed to a dot-name first, so a kill mid-delete never leaves a half folder
    that looks like a checkpoint (the next start removes the ``.prune`` folder)."""
    doomed = path.with_name(f".{path.name}.prune{os.getpid()}")
    try:
        os.replace(path, doomed)
    except OSError:
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


def is_complete(path: str | Path, required: tuple[str, ...] = REQUIRED) -> bool:
    """A folder holding every file its run kind writes (not a half-pruned or hand-damaged one)."""
    p = Path(path)
    return p.is_dir() and all((p / name).is_file() for name in required)


def list_checkpoints(out: str | Path, required: tuple[str, ...] = REQUIRED) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if is_complete(p, required))


def resume_candidates(out: str | Path, required: tuple[str, ...] = REQUIRED) -> list[Path]:
    """Complete checkpoints to resume from, best first: the one ``latest`` names, then the others newest first."""
    root = Path(out) / "checkpoints"
    found = list_checkpoints(out, required)[::-1]
    latest = root / LATEST
    if latest.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            cand = root / latest.read_text(encoding="utf-8").strip()
            if cand in found:
                found.remove(cand)
                found.insert(0, cand)
    return found


def find_latest(out: str | Path, required: tuple[str, ...] = REQUIRED) -> Path | None:
    """Newest complete checkpoint folder of a run, or None."""
    found = resume_candidates(out, required)
    return found[0] if found else None


def remove_leftovers(out: str | Path, required: tuple[str, ...] = REQUIRED) -> list[str]:
    """Delete what a killed run left in ``OUT/checkpoints``; never a complete checkpoint. Returns what went.

    Unfinished writes (``.step_*.tmp*``), interrupted prunes (``.step_*.prune*``), half-written ``latest``
    pointers and ``step_*`` folders missing a file go; an aside copy (``.step_*.old*``) whose step folder is
    gone is the only complete copy of that step and is put back. Call only while holding the run lock.
    """
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    gone: list[str] = []
    for p in sorted(root.glob(".step_*.old*")):
        final = root / p.name[1:].split(".old")[0]
        if is_complete(p, required) and not final.exists():
            os.replace(p, final)
            logger.warning("restored %s from its aside copy %s (a re-save was interrupted)", final, p.name)
        else:
            shutil.rmtree(p, ignore_errors=True)
            gone.append(f"{p.name} (aside copy of a re-saved step)")
    for pattern, why in ((".step_*.tmp*", "unfinished checkpoint write"), (".step_*.prune*", "interrupted prune")):
        for p in sorted(root.glob(pattern)):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            gone.append(f"{p.name} ({why})")
    for p in sorted(root.glob(f".{LATEST}.*.tmp")):
        p.unlink(missing_ok=True)
        gone.append(f"{p.name} (unfinished '{LATEST}' pointer)")
    for p in sorted(root.glob("step_*")):
        if p.is_dir() and not is_complete(p, required):
            missing = [n for n in required if not (p / n).is_file()]
            shutil.rmtree(p, ignore_errors=True)
            gone.append(f"{p.name} (incomplete: no {', '.join(missing)})")
    if gone:
        logger.warning("removed leftovers of an interrupted run in %s: %s", root, "; ".join(gone))
    return gone


def is_checkpoint_dir(path: str | Path) -> bool:
    """A folder written by :func:`save_checkpoint`."""
    p = Path(path)
    return p.is_dir() and (p / WEIGHTS).is_file()


def load_state(ckpt: str | Path) -> dict[str, Any]:
    """``state.pt`` of a checkpoint folder (``weights_only=True``)."""
    path = Path(ckpt) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt} is not a training checkpoint folder (no {STATE})")
    return safe_torch_load(path)


def load_disc_weights(ckpt: str | Path) -> dict[str, torch.Tensor] | None:
    """Discriminator state of a checkpoint folder, or None if it has none."""
    path = Path(ckpt) / DISC
    return read_safetensors(path)[0] if path.is_file() else None
