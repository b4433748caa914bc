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

__all__ = ["METADATA_KEY", "load_image01", "read_png_metadata", "save_png", "to_pil"]

METADATA_KEY = "vqgan_clip"


def load_image01(path_or_url: str | os.PathLike) -> torch.Tensor:
    """Read an image file or http(s) URL as RGB ``[1, 3, H, W]`` float32 in [0, 1]."""
    from PIL import Image

    s = str(path_or_url)
    if s.startswith(("http://", "https://")):
        from vqgan_core.download import cache_dir, download

        s = str(download(s, dest_dir=cache_dir() / "images"))
    if not Path(s).is_file():
        raise FileNotFoundError(f"image not found: {s}")
    with Image.open(s) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


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
    from PIL import Image

    with Image.open(path) as im:
        text = dict(getattr(im, "text", {}) or im.info)
    if METADATA_KEY not in text:
        raise ValueError(f"{path} has no '{METADATA_KEY}' settings chunk (not written by vqgan_core generate?)")
    return json.loads(text[METADATA_KEY])
