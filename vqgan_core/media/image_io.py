"""Images in and out: load files/URLs as ``[1,3,H,W]`` in [0,1]; PNGs with reproducible-run metadata.

The PNG gets the text chunks ``vqgan_clip`` (the full ``GenerationConfig`` JSON incl. seed and model specs: what
``--from-png`` reads) and ``vqgan_clip_prompt`` (the prompt string, for people and image viewers), written
atomically. ``prompt`` and ``workflow`` are ComfyUI's chunk names (its API prompt and editor graph as JSON): a
CLI image carries them only as real ComfyUI graphs (:mod:`vqgan_core.cli.comfy_workflow`), never for anything else,
so dropping it onto ComfyUI's editor opens that graph or nothing. Images written before kept the prompt text in
``prompt``; they still read, and so do images ComfyUI saved from this pack's nodes (their API prompt).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..util.atomic import atomic_write_bytes

__all__ = ["METADATA_KEY", "PROMPT_KEY", "load_image01", "load_mask", "open_image", "png_chunks", "read_png_metadata", "save_png", "to_pil"]

METADATA_KEY = "vqgan_clip"
PROMPT_KEY = "vqgan_clip_prompt"  # the prompt text ("prompt" is ComfyUI's API-prompt JSON chunk)
COMFY_KEYS = ("prompt", "workflow")  # ComfyUI's own chunks: only ever written as ComfyUI graphs


def load_image01(path_or_url: str | os.PathLike) -> torch.Tensor:
    """Read an image file or http(s) URL as RGB ``[1, 3, H, W]`` float32 in [0, 1]."""

    s = str(path_or_url)
    if s.startswith(("http://", "https://")):
        from ..hub.download import cache_dir, download

        s = str(download(s, dest_dir=cache_dir() / "images"))
    im = open_image(s)
    try:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as e:  # truncated or damaged pixel data
        raise ValueError(f"{s} is not a readable image: {e}") from None
    finally:
        im.close()
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


def load_mask(mask: str | os.PathLike | torch.Tensor, what: str = "a mask") -> torch.Tensor:
    """A mask -> one ``[H, W]`` float32 map (white / 1 = selected): the project's one mask reader.

    A file: images with transparency use their alpha channel (opaque = 1) when it varies; a constant alpha
    (e.g. an RGBA export of a black-and-white mask) falls back to brightness. A tensor (``[H, W]``,
    ``[1, H, W]``, ``[1, 1, H, W]``...; a ComfyUI MASK batch's item is picked by the node) is detached and made
    float; leading size-1 dimensions go. ``what`` names the mask in the error for any other shape.
    """
    if not isinstance(mask, torch.Tensor):
        if not Path(mask).is_file():
            raise FileNotFoundError(f"mask not found: {mask}")
        with open_image(mask) as im:
            if "A" in im.getbands():
                alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
                if alpha.min() != alpha.max():
                    return torch.from_numpy(alpha)
        return load_image01(mask)[0].mean(0)
    m = mask.detach().float()
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise ValueError(f"{what} must be one [H, W] map, got shape {tuple(mask.shape)}")
    return m


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
    """``[3, H, W]`` (or ``[1, 3, H, W]``) in [0, 1] -> ``PIL.Image`` (RGB, 8 bit, truncated as ComfyUI's Save Image
    and torchvision's ``to_pil_image`` do: a CLI image and the same run saved by ComfyUI are the same pixels)."""
    from PIL import Image

    if img01.dim() == 4:
        img01 = img01[0]
    arr = (img01.detach().float().clamp(0, 1).cpu() * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


def png_text(prompt: str = "", settings: dict[str, Any] | None = None,
             comfy: dict[str, str] | None = None):  # noqa: ANN201 - PIL type, lazy import
    """PNG text chunks: ``vqgan_clip_prompt``, ``vqgan_clip`` (JSON settings, what ``--from-png`` reads), Software,
    and ``comfy``'s ``prompt``/``workflow`` ComfyUI graphs when given (see :mod:`vqgan_core.cli.comfy_workflow`)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if prompt:
        info.add_text(PROMPT_KEY, prompt)
    if settings is not None:
        info.add_text(METADATA_KEY, json.dumps(settings, sort_keys=True))
    for key, text in (comfy or {}).items():
        if key not in COMFY_KEYS:
            raise ValueError(f"{key!r} is not a ComfyUI chunk name ({', '.join(COMFY_KEYS)})")
        info.add_text(key, text)
    info.add_text("Software", "vqgan_core")
    return info


def save_png(path: str | os.PathLike, img01: torch.Tensor, prompt: str = "", settings: dict[str, Any] | None = None,
             comfy: dict[str, str] | None = None) -> Path:
    """Write a PNG atomically with the ``vqgan_clip_prompt`` and ``vqgan_clip`` (JSON settings) text chunks, plus
    ``comfy`` (``{"prompt": api_json, "workflow": ui_json}``, ComfyUI's chunks) when given."""
    buf = io.BytesIO()
    to_pil(img01).save(buf, format="PNG", pnginfo=png_text(prompt, settings, comfy))
    return atomic_write_bytes(path, buf.getvalue())


def png_chunks(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of an image file (empty for formats without them)."""
    with open_image(path) as im:
        return {k: v for k, v in (dict(getattr(im, "text", {}) or im.info)).items() if isinstance(v, str)}


def read_png_metadata(path: str | os.PathLike, chunks: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings dict stored by :func:`save_png`; a ValueError when the PNG has none (a ComfyUI image's graph
    is read by :func:`vqgan_core.cli.comfy_workflow.settings_from_png`)."""
    text = png_chunks(path) if chunks is None else chunks
    if METADATA_KEY not in text:
        raise ValueError(f"{path} has no '{METADATA_KEY}' settings chunk (not written by vqgan_core generate?)")
    try:
        meta = json.loads(text[METADATA_KEY])
    except ValueError as e:
        raise ValueError(f"{path}: its '{METADATA_KEY}' settings are not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise ValueError(f"{path}: its '{METADATA_KEY}' settings are not a settings object")
    return meta


def fit_image(img01: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (cover) and centre-crop ``[B, 3, h, w]`` images in [0, 1] to exactly ``height x width``.

    Not kornia's ``resize``/``center_crop``: torch's own antialiased bicubic matches PIL's downscaling, where kornia
    approximates antialiasing with a Gaussian blur, and a centre crop of a tensor is a slice (kornia's resamples
    through an affine warp).
    """
    _, _, h, w = img01.shape
    s = max(height / h, width / w)
    nh, nw = max(height, round(h * s)), max(width, round(w * s))
    x = F.interpolate(img01.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[..., top : top + height, left : left + width].clamp(0, 1)
