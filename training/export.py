"""Export an inference-only VQGAN safetensors (generator only, config in the metadata) from a training run.

Accepts one of our checkpoint folders, a run folder (its newest checkpoint), or a taming ``.ckpt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vqgan_core import load_vqgan, save_vqgan

from . import checkpointing as ck

logger = logging.getLogger(__name__)


def export(src: str | Path, out: str | Path, ema: bool = False, config: str | None = None) -> Path:
    """Write ``out`` (.safetensors) from ``src``; ``ema`` picks the EMA weights of a checkpoint folder."""
    out = Path(out)
    if out.suffix != ".safetensors":  # before loading a possibly multi-GB source
        raise ValueError(f"export target must end in .safetensors, got {out}")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"export source not found: {src}")
    if src.is_dir() and not ck.is_checkpoint_dir(src):
        latest = ck.find_latest(src)
        if latest is None:
            raise FileNotFoundError(f"{src}: neither a checkpoint folder nor a run folder with checkpoints/")
        src = latest
    if src.is_dir():
        weights = src / (ck.EMA_WEIGHTS if ema else ck.WEIGHTS)
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights} not found" + (" (was the run trained with train.ema=true?)" if ema else "")
            )
    else:
        if ema:
            raise ValueError("--ema needs one of our checkpoint folders (taming checkpoints have no EMA weights)")
        weights = src
    model = load_vqgan(weights, config=config)
    # Only names, no absolute path: shared files should not leak the exporting machine's folder layout.
    origin = f"{src.name}/{weights.name}" if weights != src else weights.name
    save_vqgan(model, out, extra_metadata={"exported_from": origin, "ema": str(bool(ema)).lower()})
    logger.info("exported %s -> %s", weights, out)
    return out
