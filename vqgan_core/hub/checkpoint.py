"""Reading and writing VQGAN checkpoints: safetensors with config metadata, and taming ``.ckpt`` + ``.yaml``.

Safety: ``.ckpt`` files are only ever opened with ``torch.load(weights_only=True)``. Old PyTorch-Lightning
(<=1.4) checkpoints key callback state by the callback *class*, which pickles a ``GLOBAL`` the safe
unpickler refuses; those names (and only those, from an explicit allow-list of prefixes) are mapped to an inert
placeholder class, so no pickled code is ever executed.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..util.atomic import atomic_save_file
from ..util.web_page import DEAD_LINK_HINT, is_web_page
from ..vqgan.config import ConfigError, UnreadableConfig, VQGANConfig
from ..vqgan.config_infer import ASSUMED, describe, infer_config

log = logging.getLogger(__name__)

CONFIG_KEY = "vqgan_config"
# Modules whose classes may appear in old Lightning checkpoints as dict keys or hyper-parameters. They are
# aliased to a placeholder; nothing from them is imported or run.
ALLOWED_GLOBAL_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")
# Parts of a checkpoint that are not the generator (taming training losses, transformer stages).
NON_GENERATOR_PREFIXES = ("loss.", "cond_stage_model.", "transformer.", "permuter.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit its config; the message names file, key and expectation."""


class _Placeholder:
    """Inert stand-in for an allow-listed class found in a checkpoint pickle (accepts and ignores any state)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _placeholder_for(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (_Placeholder,), {"__module__": "vqgan_core.hub.checkpoint._aliases"})


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, expected a .ckpt/.pt or .safetensors file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not complete")
    if is_web_page(path):
        raise CheckpointError(f"{path} is a web page (HTML), not a checkpoint: {DEAD_LINK_HINT}")


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``, aliasing allow-listed Lightning globals to placeholders.

    Raises:
        CheckpointError: not a PyTorch checkpoint, truncated, or needing globals outside the allow-list.
    """
    path = Path(path)
    _check_readable(path)
    aliases: list[tuple[type, str]] = []
    if zipfile.is_zipfile(path):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - any failure here means a damaged archive
            raise CheckpointError(f"{path} is damaged or truncated (cannot read its pickle: {e})") from None
        refused = [g for g in unsafe if not g.startswith(ALLOWED_GLOBAL_PREFIXES)]
        if refused:
            raise CheckpointError(
                f"{path} needs Python objects that are not safe to unpickle: {refused}. Only tensors, plain "
                f"containers and the Lightning classes under {ALLOWED_GLOBAL_PREFIXES} are accepted; convert the "
                "file with the tool that made it (state_dict only) and try again."
            )
        aliases = [(_placeholder_for(g), g) for g in unsafe]
    elif _looks_like_safetensors(path):
        raise CheckpointError(f"{path} is a safetensors file; load it with read_state_dict / load_vqgan")
    try:
        with torch.serialization.safe_globals(aliases):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - the unpickler raises anything from IndexError to UnpicklingError
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another format): "
            f"{type(e).__name__}: {_reason(e)}"
        ) from None


def _reason(e: Exception) -> str:
    """torch's message without its advice to retry with ``weights_only=False``: that would run the file's pickled
    code, which this loader never does (and never suggests)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:  # the one line that says what the file holds
        return text.split("WeightsUnpickler error:", 1)[1].split(". Please use", 1)[0].strip()[:300]
    advice = ("weights_only", "safe_globals", "add_safe_globals", "pytorch.org", "trust the source", "Re-running")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not any(a in ln for a in advice)]
    return " ".join(lines)[:300] or "unreadable"


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with a clear error for damaged files."""
    path = Path(path)
    _check_readable(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file (truncated or corrupt?): {e}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The raw ``state_dict`` of a ``.safetensors`` or ``.ckpt``/``.pt`` file (Lightning ``state_dict`` unwrapped)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors (top-level type {type(obj).__name__})")
    return dict(obj)


def generator_state_dict(sd: dict[str, torch.Tensor], key_prefix: str = "") -> dict[str, torch.Tensor]:
    """Keep the VQGAN's own keys: strip a Net2Net ``first_stage_model.`` prefix, drop ``loss.*`` and friends."""
    if not key_prefix and any(k.startswith("first_stage_model.") for k in sd) and not any(k.startswith("encoder.") for k in sd):
        key_prefix = "first_stage_model."
    if key_prefix:
        sd = {k[len(key_prefix) :]: v for k, v in sd.items() if k.startswith(key_prefix)}
    dropped = [k for k in sd if k.startswith(NON_GENERATOR_PREFIXES)]
    if dropped:
        log.info("ignoring %d non-generator tensors (%s...)", len(dropped), dropped[0])
    return {k: v for k, v in sd.items() if not k.startswith(NON_GENERATOR_PREFIXES)}


def find_yaml(ckpt: Path) -> Path | None:
    """Config for a taming checkpoint: same stem, ``model.yaml``/``config.yaml`` beside it, or ``../configs/``."""
    for cand in yaml_candidates(ckpt):
        if cand.is_file():
            return cand
    return None


def yaml_candidates(ckpt: Path) -> list[Path]:
    """Where a taming checkpoint's config may live, in search order."""
    d = ckpt.parent
    return [
        ckpt.with_suffix(".yaml"),
        ckpt.with_suffix(".yml"),
        d / "model.yaml",
        d / "config.yaml",
        d.parent / "configs" / "model.yaml",
    ]


def resolve_config(path: Path, config: str | os.PathLike | VQGANConfig | None, meta: dict[str, str] | None,
                   sd: dict[str, torch.Tensor] | None = None) -> VQGANConfig:
    """Config from the argument, else safetensors metadata, else a yaml found beside the checkpoint, else (given
    the checkpoint's tensors ``sd``) read from the weights themselves (``vqgan_core.vqgan.config_infer``)."""
    if isinstance(config, VQGANConfig):
        return config
    try:
        if config is not None:
            cpath = Path(config)
            return VQGANConfig.from_json(cpath.read_text()) if cpath.suffix == ".json" else VQGANConfig.from_taming_yaml(cpath)
        if meta and CONFIG_KEY in meta:
            return VQGANConfig.from_json(meta[CONFIG_KEY])
        found = find_yaml(path)
    except ConfigError as e:
        raise CheckpointError(f"config for {path}: {e}") from None
    if found is None:
        tried = ", ".join(str(c) for c in yaml_candidates(path))
        why = ""
        if sd is not None:
            try:
                return config_from_weights(path, sd, "no yaml")
            except ConfigError as e:
                why = f" {e}."
        raise CheckpointError(
            f"no config found for {path}: it has no '{CONFIG_KEY}' metadata and none of these exist: {tried}.{why} "
            "Pass the model's yaml explicitly (config=... / --config model.yaml)."
        )
    log.info("using config %s for %s", found, path)
    try:
        return VQGANConfig.from_taming_yaml(found).with_extra(config_file=str(found))
    except ConfigError as e:
        if sd is not None and isinstance(e, UnreadableConfig):  # a saved error page beside it: the weights decide
            try:
                return config_from_weights(path, sd, f"{found} is unusable ({e})")
            except ConfigError:
                pass
        raise CheckpointError(f"config for {path}: {e}") from None


def config_from_weights(path: Path, sd: dict[str, torch.Tensor], why: str) -> VQGANConfig:
    """The architecture read from ``sd`` (``vqgan_core.vqgan.config_infer``), with a warning that says so and what it
    assumes; ConfigError when the weights do not show it."""
    cfg = infer_config(generator_state_dict(sd))
    log.warning("%s: %s; the architecture is read from the weights (%s), assuming %s. Pass the model's config if "
                "it was trained with other settings.", path.name, why, describe(cfg), ASSUMED)
    return cfg


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: Path, cfg_source: str) -> None:
    """Raise a CheckpointError naming missing/unexpected keys or mismatched shapes before ``load_state_dict``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    shapes = [(k, list(sd[k].shape), list(v.shape)) for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    for k, got, want in shapes[:3]:
        problems.append(f"key {k!r} has shape {got} in the file but the config expects {want}")
    if problems:
        hint = " The config does not match these weights (wrong yaml? another n_embed/embed_dim/ch_mult?)." if shapes or missing else ""
        raise CheckpointError(f"{source} does not fit the config from {cfg_source}: " + "; ".join(problems) + "." + hint)
    check_weight_values(expected, sd, source)


def check_weight_values(expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], source: Path) -> None:
    """Weights a model can compute with: floating where the model's are, and finite. A NaN weight decodes every
    latent to a black image, and integer weights would be cast silently; both are named here instead."""
    for k, want in expected.items():
        got = sd.get(k)
        if got is None or not want.is_floating_point():
            continue
        if not got.is_floating_point():
            raise CheckpointError(f"{source}: weight {k!r} is {got.dtype}; a VQGAN's weights are floating point "
                                  "(a damaged or converted file?)")
        bad = int((~torch.isfinite(got)).sum())
        if bad:
            raise CheckpointError(f"{source}: weight {k!r} holds {bad} NaN or infinite value(s) of {got.numel()} "
                                  "(a diverged training run?); use an earlier checkpoint")


def save_vqgan(model: torch.nn.Module, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write the generator weights as safetensors, atomically, with the config as JSON metadata."""
    from .. import __version__

    cfg: VQGANConfig = model.config  # type: ignore[assignment]
    meta = {"format": "pt", CONFIG_KEY: cfg.to_json(), "vqgan_core_version": __version__, **(extra_metadata or {})}
    sd = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    return atomic_save_file(sd, path, metadata=meta)
