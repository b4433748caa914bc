"""``load_vqgan``: one entry point for safetensors, taming ``.ckpt`` (+yaml), URLs and the shipped demo model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..vqgan.config import ConfigError, VQGANConfig
from ..vqgan.config_infer import describe, infer_config
from ..vqgan.model import VQGAN
from .checkpoint import (
    CheckpointError,
    check_state_dict,
    config_from_weights,
    generator_state_dict,
    read_safetensors,
    read_state_dict,
    resolve_config,
)

log = logging.getLogger(__name__)


def resolve_model_path(path: str | os.PathLike) -> Path:
    """Turn ``demo`` or an ``http(s)://`` URL into a local file; other paths pass through."""
    s = os.fspath(path)
    if s == "demo":
        from . import demo

        return Path(demo.vqgan_path())
    if s.startswith(("http://", "https://")):
        from .download import download

        return download(s)
    return Path(s).expanduser()


def load_vqgan(
    path: str | os.PathLike,
    config: str | os.PathLike | VQGANConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    strict: bool = True,
) -> VQGAN:
    """Load a VQGAN in eval mode.

    Args:
        path: ``.safetensors`` (config read from its metadata), a taming ``.ckpt``/``.pt`` (config from ``config``
            or a yaml beside it: same stem, ``model.yaml``/``config.yaml``, ``../configs/model.yaml``), an
            ``http(s)://`` URL (downloaded once into the cache), ``"demo"`` (the shipped offline model) or the
            name of a released model (``vqgan_imagenet_f16_16384``...; see ``known_models``), fetched when online.
        config: a taming yaml, a JSON config file, a :class:`VQGANConfig`, or None.
        device: where to put the weights.
        dtype: parameter dtype (bf16/fp16 for a fast decode; the quantizer distances stay float32).
        strict: refuse missing or unexpected keys (``loss.*`` and transformer keys are always dropped first).

    Raises:
        CheckpointError: unreadable file, no config, or weights that do not fit the config (names key and shape).
    """
    from .known_models import KNOWN_VQGANS, fetch_known

    downloaded_from = None  # a cached download: a damaged one is named with how to get it again
    if os.fspath(path) in KNOWN_VQGANS:
        downloaded_from = f"the released model {os.fspath(path)!r}"
        path, known_yaml = fetch_known(os.fspath(path))
        config = config or known_yaml
    elif os.fspath(path).startswith(("http://", "https://")):
        downloaded_from = os.fspath(path)
    file = resolve_model_path(path)
    if isinstance(config, str) and config.startswith(("http://", "https://")):
        config = resolve_model_path(config)
    meta: dict[str, str] | None = None
    try:
        if file.suffix == ".safetensors":
            sd, meta = read_safetensors(file)
        else:
            sd = read_state_dict(file)
    except CheckpointError as e:
        if downloaded_from is None:
            raise
        raise CheckpointError(f"{e}. It is the cached download of {downloaded_from}: delete {file} (and "
                              f"{file}.sha256 if present) to download it again.") from None
    cfg = resolve_config(file, config, meta, sd)
    raw, sd = sd, generator_state_dict(sd, str(cfg.extra.get("key_prefix", "")))
    cfg_source = "the file's metadata" if config is None and meta and "vqgan_config" in meta else str(
        config or cfg.extra.get("config_file") or "its weights")
    with torch.device("meta"):
        model = VQGAN(cfg)
    if strict:
        try:
            check_state_dict_or_explain(model, sd, file, cfg_source)
        except CheckpointError as e:
            if config is not None or "config_file" not in cfg.extra:
                raise
            # a yaml found beside the checkpoint describing another architecture (a shared model.yaml, another
            # model's): the weights decide. The same architecture with odd keys stays an error.
            try:
                if describe(infer_config(generator_state_dict(raw))) == describe(cfg):
                    raise e from None
                cfg = config_from_weights(file, raw, f"the yaml found beside it ({cfg_source}) is another model's")
            except ConfigError:
                raise e from None
            sd = generator_state_dict(raw)
            with torch.device("meta"):
                model = VQGAN(cfg)
            check_state_dict(model, sd, file, "its weights")
    model = model.to_empty(device=device)
    try:
        model.load_state_dict(sd, strict=strict, assign=False)
    except RuntimeError as e:
        raise CheckpointError(f"{file}: {e}") from None
    if not strict:
        # Anything not in the file stays uninitialised on to_empty; refuse rather than decode garbage.
        absent = set(model.state_dict()) - set(sd)
        if absent:
            raise CheckpointError(f"{file} lacks {len(absent)} tensors the config needs (e.g. {sorted(absent)[:3]})")
    model = model.to(dtype=dtype).eval().requires_grad_(False)
    log.info("loaded VQGAN %s (f%d, %d codes x %d)", file.name, cfg.downsample_factor, cfg.n_embed, cfg.embed_dim)
    return model


_SAFETENSORS_HEADER_LIMIT = 100 << 20  # the safetensors library's own limit on the JSON header
# (path, mtime_ns, size) -> why the file is no VQGAN, or None: listing a model folder must not re-read every header
_FILE_CHECKS: dict[tuple[str, int, int], str | None] = {}


def vqgan_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a loadable VQGAN, or None when it looks like one; cheap enough for a file menu.

    A ``.safetensors`` is judged by its JSON header alone (no tensor is read): our ``vqgan_config`` metadata, or a
    generator's key names (``encoder.conv_in.weight`` and ``decoder.conv_out.weight``, optionally under
    ``first_stage_model.``). A training run's ``discriminator.safetensors``, optimizer states and other models'
    weights have neither. Other files (taming ``.ckpt``: a pickle that cannot be judged without unpickling it)
    pass. Results are cached by (path, mtime, size).
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _FILE_CHECKS:
        _FILE_CHECKS[key] = _safetensors_problem(path, st.st_size)
    return _FILE_CHECKS[key]


def _safetensors_problem(path: Path, size: int) -> str | None:
    import json
    import struct

    from .checkpoint import CONFIG_KEY

    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= n <= min(_SAFETENSORS_HEADER_LIMIT, size - 8):
                return "not a safetensors file (truncated, or another format)"
            header = json.loads(fh.read(n))
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError):
        return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    meta = header.get("__metadata__")
    if isinstance(meta, dict) and CONFIG_KEY in meta:
        return None
    keys = [k for k in header if k != "__metadata__"]
    for prefix in ("", "first_stage_model."):
        if f"{prefix}encoder.conv_in.weight" in header and f"{prefix}decoder.conv_out.weight" in header:
            return None
    return (f"no VQGAN: neither '{CONFIG_KEY}' metadata nor encoder/decoder weights (keys such as "
            f"{', '.join(sorted(keys)[:3]) or 'none'})")


def check_state_dict_or_explain(model: torch.nn.Module, sd: dict[str, torch.Tensor], file: Path, cfg_source: str) -> None:
    """:func:`check_state_dict`; when the weights do not fit the config, the error also says what the weights are
    (a yaml of another model beside a checkpoint is a common mistake)."""
    try:
        check_state_dict(model, sd, file, cfg_source)
    except CheckpointError as e:
        try:
            actual = describe(infer_config(sd))
        except ConfigError:
            raise e from None
        if actual == describe(model.config):  # the same architecture: the keys themselves are the problem
            raise
        raise CheckpointError(f"{e} The weights themselves are a {actual}; the config says a {describe(model.config)}. "
                              "Use the yaml of this checkpoint, or none: without one the architecture is read from "
                              "the weights.") from None


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameter elements (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
