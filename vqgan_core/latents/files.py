"""VQ latents on disk: the continuous latent, the optimiser state that continues its run, and which VQGAN
it belongs to (codebook shape, downsampling factor), in one safetensors file. A command-line run also stores
every setting of the run (``vqgan_clip``: the ``GenerationConfig`` JSON), so ``generate --resume FILE`` goes
on without repeating them; files from ComfyUI's Save VQ Latent have none (the workflow holds them).

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

from ..hub.checkpoint import CheckpointError, read_safetensors
from ..util.atomic import atomic_save_file

__all__ = ["FORMAT", "SETTINGS_KEY", "SUFFIX", "LatentFile", "check_model", "load_latent", "save_latent"]

log = logging.getLogger(__name__)

FORMAT = "vqgan_core.vq_latent/1"
SUFFIX = ".vqlatent"  # safetensors inside; its own suffix keeps it apart from VQGAN weights and SD latents
SETTINGS_KEY = "vqgan_clip"  # metadata entry: {"config": GenerationConfig dict, "planned_steps": int}
_STATE_TENSORS = ("rng_state", "z_init", "logits")  # (logits: codebook sampling)  # run-state entries stored as tensors (the optimiser's are too)


@dataclass
class LatentFile:
    """What a latent file holds: ``z`` ``[B, C, h, w]`` (fp32, CPU), the VQGAN's codebook shape and
    downsampling factor, the run state (``vqgan_core.engine.run_state.run_state``) and, from the command line, the run's
    settings (``{"config": GenerationConfig dict, "planned_steps": steps the run planned in all}``; else None)."""

    z: torch.Tensor
    codebook_shape: tuple[int, int]
    downsample_factor: int
    state: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] | None = None

    @classmethod
    def of(cls, z: torch.Tensor, vqgan: torch.nn.Module, state: dict[str, Any] | None = None,
           settings: dict[str, Any] | None = None) -> LatentFile:
        """The file for latent ``z`` of ``vqgan`` (with a run state from ``vqgan_core.engine.run_state`` and the CLI run's
        settings)."""
        return cls(z, *_model_key(vqgan), dict(state or {}), settings)


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
    if latent.settings is not None:
        meta[SETTINGS_KEY] = json.dumps(latent.settings, sort_keys=True)
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
        settings = json.loads(meta[SETTINGS_KEY]) if SETTINGS_KEY in meta else None
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: damaged VQ latent metadata ({type(e).__name__}: {e})") from None
    if settings is not None and not (isinstance(settings, dict) and isinstance(settings.get("config"), dict)):
        raise CheckpointError(f"{path}: its '{SETTINGS_KEY}' run settings are not a settings object")
    try:
        _check_contents(tensors["z"], codebook, factor, state)
    except ValueError as e:
        raise CheckpointError(f"{path} is not a usable VQ latent: {e}") from None
    return LatentFile(tensors["z"].float(), codebook, factor, state, settings)


def _check_contents(z: torch.Tensor, codebook: tuple[int, ...], factor: int, state: dict[str, Any]) -> None:
    """What a run would trust: shapes that fit the codebook, finite numbers, the run state's types (a crafted
    file must fail here with its key named, not deep inside torch)."""
    from ..util.finite import check_finite_tensor

    if len(codebook) != 2 or min(codebook) < 1 or factor < 1:
        raise ValueError(f"codebook_shape {list(codebook)} / downsample_factor {factor} are not a VQGAN's")
    if z.dim() != 4 or min(z.shape) < 1 or z.shape[1] != codebook[1]:
        raise ValueError(f"'z' is {tuple(z.shape)}; a latent of this VQGAN is [B, {codebook[1]}, h, w]")
    check_finite_tensor(z, "'z'")
    for key, want in (("seed", int), ("steps", int)):
        v = state.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, want) or v < 0):
            raise ValueError(f"state '{key}' must be a whole number >= 0, got {v!r}")
    rng = state.get("rng_state")
    if rng is not None and (not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.dim() != 1):
        raise ValueError("state 'rng_state' must be a 1-D uint8 tensor (a torch.Generator state)")
    for key in ("z_init", "logits"):
        if state.get(key) is not None:
            check_finite_tensor(state[key], f"state '{key}'")
    if state.get("z_init") is not None and tuple(state["z_init"].shape) != tuple(z.shape):
        raise ValueError(f"state 'z_init' is {tuple(state['z_init'].shape)}, the latent {tuple(z.shape)}")
    if state.get("logits") is not None:
        lg = state["logits"]
        if lg.dim() != 4 or lg.shape[0] != z.shape[0] or lg.shape[1] != codebook[0] or lg.shape[2:] != z.shape[2:]:
            raise ValueError(f"state 'logits' is {tuple(lg.shape)}; for this latent it is "
                             f"[{z.shape[0]}, {codebook[0]}, {z.shape[2]}, {z.shape[3]}]")
    opt = state.get("optimizer_state")
    if opt is not None:
        groups = opt.get("param_groups")
        if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                                   for g in groups):
            raise ValueError("the optimiser state's 'param_groups' must be a list of groups with 'params' lists")
        for pid, entries in opt["state"].items():
            for name, v in entries.items():
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    check_finite_tensor(v, f"optimiser state {pid}.{name}")
                elif not isinstance(v, (torch.Tensor, int, float)) or isinstance(v, bool):
                    raise ValueError(f"optimiser state {pid}.{name} must be a number or a tensor, got {type(v).__name__}")
