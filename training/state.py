"""Process state an exact resume needs beyond the weights (RNG streams), and the stop-signal handlers.

Kept apart from the training loop so that what a checkpoint captures, and how a run is asked to stop, read in one place.
"""

from __future__ import annotations

import io
import random
import signal
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .distributed import DistInfo


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU + CUDA) RNG states as tensors/containers ``weights_only`` can load."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].copy()),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(dist: DistInfo) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, indexed by rank (all ranks must call this)."""
    rngs = [rng_state()]
    if dist.enabled:  # gathered as bytes: all_gather_object cannot pickle CPU tensors on every backend
        buf = io.BytesIO()
        torch.save(rngs[0], buf)
        blobs: list[Any] = [None] * dist.world_size
        torch.distributed.all_gather_object(blobs, buf.getvalue())
        rngs = [torch.load(io.BytesIO(b), weights_only=True) for b in blobs]
    return rngs


def install_signal_handlers(stop: Callable[[], None]) -> dict[int, Any]:
    """SIGINT/SIGTERM call ``stop`` (finish the step, checkpoint, return); returns the handlers they replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, lambda *_: stop())
    return old


def restore_signal_handlers(old: dict[int, Any]) -> None:
    """Put back what :func:`install_signal_handlers` replaced."""
    for sig, h in old.items():
        signal.signal(sig, h)
