"""Atomic file writing: a crash or a full disk never leaves a half-written checkpoint behind.

:func:`atomic_write` is the project's one temporary-file-and-rename writer; the others here and every caller in
the core, the nodes and the trainer go through it (``tests/core/test_written_once.py`` checks that no second one appears).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` on a temporary file in the target folder, then rename it into place.

    The rename is atomic on POSIX and Windows (``os.replace``), so readers see either the old file or the
    complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (``str``: as UTF-8) to ``path`` atomically: an encoded image, a small text or JSON file."""
    raw = data.encode("utf-8") if isinstance(data, str) else data

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(raw)

    return atomic_write(path, _write)


def atomic_save_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically; tensors are made contiguous and unshared first."""
    clean = {k: v.detach().contiguous().clone() if _shares_storage(v) else v.detach().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(clean, tmp, metadata=metadata))


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (training state: optimiser, scaler, RNG...)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _shares_storage(t: torch.Tensor) -> bool:
    return t.untyped_storage().nbytes() != t.numel() * t.element_size()
