"""Atomic training checkpoints: a folder per step, written under a temporary name and renamed into place.

Layout of ``OUT/checkpoints/step_00001234/``:

- ``weights.safetensors``: the generator, written by ``vqgan_core.save_vqgan`` (config in the metadata), so it
  loads with ``vqgan_core.load_vqgan`` and in the ComfyUI nodes as it is;
- ``ema.safetensors``: EMA generator weights (same format), when EMA is on;
- ``discriminator.safetensors``: the PatchGAN;
- ``state.pt``: optimisers, grad scaler, step, samples seen, RNG states, codebook counters and the training
  config (plain tensors and containers: loads with ``weights_only=True``).

``OUT/checkpoints/latest`` names the newest complete folder. A crash mid-write leaves only a ``.tmp`` folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vqgan_core import save_vqgan
from vqgan_core.checkpoint import read_safetensors, safe_torch_load
from vqgan_core.io_utils import atomic_save_file, atomic_torch_save, atomic_write

logger = logging.getLogger(__name__)

WEIGHTS, EMA_WEIGHTS, DISC, STATE, LATEST = (
    "weights.safetensors",
    "ema.safetensors",
    "discriminator.safetensors",
    "state.pt",
    "latest",
)


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
    root = Path(out) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".step_{step:08d}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    meta = {"train_step": str(step)}
    if train_config is not None:
        meta["train_config"] = json.dumps(train_config, sort_keys=True)
    save_vqgan(model, tmp / WEIGHTS, extra_metadata=meta)
    if ema_model is not None:
        save_vqgan(ema_model, tmp / EMA_WEIGHTS, extra_metadata={**meta, "ema": "true"})
    atomic_save_file({k: v.detach().cpu() for k, v in disc.state_dict().items()}, tmp / DISC, metadata={"format": "pt"})
    atomic_torch_save({**state, "step": step, "train_config": train_config}, tmp / STATE)
    aside = None
    if final.exists():  # re-saving the same step (e.g. a signal right after a periodic save): never delete first
        aside = root / f".{final.name}.old{os.getpid()}"
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(final, aside)
    os.replace(tmp, final)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    atomic_write(root / LATEST, lambda p: Path(p).write_text(final.name + "\n", encoding="utf-8"))
    if keep_last > 0:
        for old in list_checkpoints(out)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("checkpoint written: %s", final)
    return final


def list_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if p.is_dir() and (p / STATE).is_file())


def find_latest(out: str | Path) -> Path | None:
    """Newest complete checkpoint folder of a run, or None."""
    root = Path(out) / "checkpoints"
    latest = root / LATEST
    if latest.is_file():
        cand = root / latest.read_text(encoding="utf-8").strip()
        if (cand / STATE).is_file():
            return cand
    found = list_checkpoints(out)
    return found[-1] if found else None


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
