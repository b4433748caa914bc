"""VQ latents on disk: the continuous latent, the optimiser state that continues its run, and which VQGAN
it belongs to (codebook shape, downsampling factor), in one safetensors file.

Why: an optimisation can then stop in one session and go on in another (or on another machine) exactly
where it was: Adam's moments and the step count travel with the latent. The optimiser state's tensors are
stored as tensors, its other values as JSON metadata; nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqgan_core.checkpoint import CheckpointError, read_safetensors
from vqgan_core.io_utils import atomic_save_file

__all__ = ["FORMAT", "SUFFIX", "LatentFile", "check_model", "load_latent", "save_latent"]

log = logging.getLogger(__name__)

FORMAT = "vqgan_core.vq_latent/1"
SUFFIX = ".vqlatent"  # safetensors inside; its own suffix keeps it apart from VQGAN weights and SD latents
_STATE_TENSORS = ("rng_state", "z_init", "logits")  # (logits: codebook sampling)  # run-state entries stored as tensors (the optimiser's are too)


@dataclass
class LatentFile:
    """What a latent file holds: ``z`` ``[B, C, h, w]`` (fp32, CPU), the VQGAN's codebook shape and
    downsampling factor, and the run state (``vqgan_core.run_state.run_state``)."""

    z: torch.Tensor
    codebook_shape: tuple[int, int]
    downsample_factor: int
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, z: torch.Tensor, vqgan: torch.nn.Module, state: dict[str, Any] | None = None) -> LatentFile:
        """The file for latent ``z`` of ``vqgan`` (with a run state from ``vqgan_core.run_state``)."""
        return cls(z, *_model_key(vqgan), dict(state or {}))


def _model_key(vqgan: torch.nn.Module) -> tuple[tuple[int, ...], int]:
    return tuple(vqgan.codebook.shape), int(vqgan.downsample_factor)


def save_latent(path: str | os.PathLike, latent: LatentFile, metadata: dict[str, str] | None = None) -> Path:
    """Write ``latent`` atomically; ``metadata`` adds text entries (e.g. the ComfyUI prompt)."""
    tensors = {"z": latent.z.detach().float().cpu().contiguous()}
    state = dict(latent.state)
    opt = state.pop("optimizer_state", None)
    for key in _STATE_TENSORS:
        t = state.pop(key, None)
        if t is not None:
            tensors[key] = t.detach().cpu().contiguous()
    meta = {**(metadata or {}), "format": FORMAT, "codebook_shape": json.dumps(list(latent.codebook_shape)),
            "downsample_factor": str(int(latent.downsample_factor)), "state": json.dumps(state, default=list)}
    if opt is not None:
        plain: dict[str, dict[str, Any]] = {}
        for pid, entries in opt["state"].items():
            plain[str(pid)] = {}
            for k, v in entries.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optimizer.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    plain[str(pid)][k] = v
        try:
            meta["optimizer_state"] = json.dumps({"state": plain, "param_groups": opt["param_groups"]})
        except TypeError as e:  # a value JSON cannot hold: keep the latent, drop what cannot be stored
            log.warning("%s: the optimiser state is not stored (%s); a continued run starts it afresh", path, e)
            tensors = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    return atomic_save_file(tensors, path, meta)


def check_model(latent: LatentFile, vqgan: torch.nn.Module, name: str) -> None:
    """A ValueError naming both when ``latent`` was saved with a VQGAN of another codebook or factor."""
    have = _model_key(vqgan)
    if (latent.codebook_shape, latent.downsample_factor) != have:
        raise ValueError(f"{name} was saved with a VQGAN with codebook {latent.codebook_shape} and factor "
                         f"{latent.downsample_factor}; this VQGAN has codebook {have[0]} and factor {have[1]}. "
                         "Use the VQGAN the latent was made with.")


def load_latent(path: str | os.PathLike) -> LatentFile:
    """Read a file written by :func:`save_latent` (a clear error for anything else)."""
    path = Path(path)
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT or "z" not in tensors:
        raise CheckpointError(f"{path} is not a VQ latent file (expected format {FORMAT!r}, found "
                              f"{meta.get('format')!r}): save one with Save VQ Latent / save_latent")
    try:
        state = json.loads(meta.get("state", "{}"))
        if "shape" in state:
            state["shape"] = tuple(state["shape"])
        if "optimizer_state" in meta:
            opt = json.loads(meta["optimizer_state"])
            entries: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in opt["state"].items()}
            for key, t in tensors.items():
                if key.startswith("optimizer."):
                    _, pid, name = key.split(".", 2)
                    entries.setdefault(int(pid), {})[name] = t
            state["optimizer_state"] = {"state": entries, "param_groups": opt["param_groups"]}
        for key in _STATE_TENSORS:
            if key in tensors:
                state[key] = tensors[key]
        codebook = tuple(int(v) for v in json.loads(meta["codebook_shape"]))
        factor = int(meta["downsample_factor"])
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: damaged VQ latent metadata ({type(e).__name__}: {e})") from None
    return LatentFile(tensors["z"].float(), codebook, factor, state)
