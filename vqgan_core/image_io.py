"""Images in and out: load files/URLs as ``[1,3,H,W]`` in [0,1]; PNGs with reproducible-run metadata.

The PNG gets two text chunks: ``prompt`` (the prompt string, as the classic script wrote) and
``vqgan_clip`` (the full ``GenerationConfig`` JSON incl. seed and model specs), written atomically.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqgan_core.io_utils import atomic_write

__all__ = ["METADATA_KEY", "load_image01", "open_image", "read_png_metadata", "save_png", "to_pil"]

METADATA_KEY = "vqgan_clip"


def load_image01(path_or_url: str | os.PathLike) -> torch.Tensor:
    """Read an image file or http(s) URL as RGB ``[1, 3, H, W]`` float32 in [0, 1]."""

    s = str(path_or_url)
    if s.startswith(("http://", "https://")):
        from vqgan_core.download import cache_dir, download

        s = str(download(s, dest_dir=cache_dir() / "images"))
    im = open_image(s)
    try:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as e:  # truncated or damaged pixel data
        raise ValueError(f"{s} is not a readable image: {e}") from None
    finally:
        im.close()
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


def open_image(path: str | os.PathLike):  # noqa: ANN201 - PIL type, lazy import
    """``PIL.Image.open`` with clear errors: a missing file, a file that is no image, an image too large to
    decode safely (PIL's decompression-bomb limit) each name the file instead of raising from inside PIL."""
    from PIL import Image, UnidentifiedImageError

    s = str(path)
    if not Path(s).is_file():
        raise FileNotFoundError(f"image not found: {s}")
    try:
        return Image.open(s)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{s} is too large to open safely ({e}); use a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{s} is not a readable image ({type(e).__name__}: {e})") from None


def to_pil(img01: torch.Tensor):
    """``[3, H, W]`` (or ``[1, 3, H, W]``) in [0, 1] -> ``PIL.Image`` (RGB, 8 bit, rounded)."""
    from PIL import Image

    if img01.dim() == 4:
        img01 = img01[0]
    arr = (img01.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


def png_text(prompt: str = "", settings: dict[str, Any] | None = None):  # noqa: ANN201 - PIL type, lazy import
    """PNG text chunks: ``prompt``, ``vqgan_clip`` (JSON settings, what ``--from-png`` reads) and Software."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if prompt:
        info.add_text("prompt", prompt)
    if settings is not None:
        info.add_text(METADATA_KEY, json.dumps(settings, sort_keys=True))
    info.add_text("Software", "vqgan_core")
    return info


def save_png(path: str | os.PathLike, img01: torch.Tensor, prompt: str = "", settings: dict[str, Any] | None = None) -> Path:
    """Write a PNG atomically with ``prompt`` and ``vqgan_clip`` (JSON settings) text chunks."""
    buf = io.BytesIO()
    to_pil(img01).save(buf, format="PNG", pnginfo=png_text(prompt, settings))

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(buf.getvalue())

    return atomic_write(path, _write)


def read_png_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The settings dict stored by :func:`save_png` (ValueError if the PNG has none)."""
    with open_image(path) as im:
        text = dict(getattr(im, "text", {}) or im.info)
    if METADATA_KEY not in text:
        raise ValueError(f"{path} has no '{METADATA_KEY}' settings chunk (not written by vqgan_core generate?)")
    try:
        meta = json.loads(text[METADATA_KEY])
    except ValueError as e:
        raise ValueError(f"{path}: its '{METADATA_KEY}' settings are not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise ValueError(f"{path}: its '{METADATA_KEY}' settings are not a settings object")
    return meta
