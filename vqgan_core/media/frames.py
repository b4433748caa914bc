"""Frame sequences in and out: animated WebP, GIF and APNG with Pillow, videos through ffmpeg, frame folders.

APNG keeps the ``vqgan_clip_prompt`` and ``vqgan_clip`` settings chunks of :mod:`vqgan_core.media.image_io` (never
ComfyUI's ``prompt``/``workflow``: no ComfyUI graph makes an animation), so ``animate --from-png anim.png``
reproduces an animation. Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..util.atomic import atomic_write, atomic_write_bytes
from .image_io import png_text

__all__ = ["ANIMATION_FORMATS", "check_animation_path", "load_frames", "save_animation"]

ANIMATION_FORMATS = (".webp", ".gif", ".png", ".apng", ".mp4")


def check_animation_path(path: str | os.PathLike) -> Path:
    """The path if its suffix is a supported format (checked before a long run, not after)."""
    p = Path(path)
    if p.suffix.lower() not in ANIMATION_FORMATS:
        raise ValueError(f"unsupported animation format {p.suffix or '(none)'!r} for {p}; "
                         f"use one of {', '.join(ANIMATION_FORMATS)}")
    if p.suffix.lower() == ".mp4" and shutil.which("ffmpeg") is None:
        raise ValueError(f"writing {p} needs ffmpeg on PATH (not found); write .webp, .gif or .png instead")
    return p


def save_animation(path: str | os.PathLike, frames: Sequence, fps: float, prompt: str = "",
                   settings: dict[str, Any] | None = None) -> Path:
    """Write RGB ``PIL.Image`` frames at ``fps``; the format follows the suffix (see ``ANIMATION_FORMATS``)."""
    p = check_animation_path(path)
    if not frames:
        raise ValueError(f"no frames to write to {p}")
    suffix = p.suffix.lower()
    if suffix == ".mp4":
        return atomic_write(p, lambda tmp: _ffmpeg_mp4(tmp, frames, fps))
    duration = max(1, round(1000 / fps))
    opts: dict[str, Any] = {"save_all": True, "append_images": list(frames[1:]), "duration": duration, "loop": 0}
    if suffix == ".webp":
        opts.update(format="WEBP", quality=95, method=4)
    elif suffix == ".gif":
        opts.update(format="GIF", optimize=False)
        if prompt:
            opts["comment"] = prompt.encode("utf-8")
    else:
        opts.update(format="PNG", pnginfo=png_text(prompt, settings))
    buf = io.BytesIO()
    frames[0].save(buf, **opts)
    return atomic_write_bytes(p, buf.getvalue())


def _ffmpeg_mp4(tmp: str, frames: Sequence, fps: float) -> None:
    w, h = frames[0].size
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", f"{fps:g}", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "17",
           "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-f", "mp4", tmp]
    data = b"".join(f.convert("RGB").tobytes() for f in frames)
    done = subprocess.run(cmd, input=data, capture_output=True, check=False)  # noqa: S603 - fixed argv, no shell
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}) writing {tmp}: {done.stderr.decode(errors='replace')[-500:]}")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


def _probe(p: Path) -> tuple[int, int, float]:
    """(width, height, sample aspect ratio) of the decoded frames; a +-90 degree rotation tag swaps them
    (ffmpeg rotates while decoding)."""

    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",  # noqa: S607
                            "stream=width,height,sample_aspect_ratio:stream_tags=rotate:stream_side_data=rotation",
                            "-of", "json", str(p)],
                           capture_output=True, text=True, check=False)
    try:
        stream = json.loads(probe.stdout)["streams"][0]
        w, h = int(stream["width"]), int(stream["height"])
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"{p}: ffprobe found no video stream ({probe.stderr.strip()[-300:]})") from None
    rotation = stream.get("tags", {}).get("rotate")
    for side in stream.get("side_data_list", []):
        rotation = side.get("rotation", rotation)
    num, _, den = str(stream.get("sample_aspect_ratio", "1:1")).partition(":")
    try:
        sar = float(num) / float(den) if float(num) > 0 and float(den or 0) > 0 else 1.0
    except ValueError:
        sar = 1.0
    if rotation is not None and int(float(rotation)) % 180 != 0:
        w, h, sar = h, w, 1.0 / sar
    return w, h, sar


def _ffmpeg_frames(p: Path, max_frames: int | None, size: tuple[int, int] | None) -> np.ndarray:
    """Decode a video with ffmpeg into ``[F, H, W, 3]`` uint8 (scaled and centre-cropped to ``size`` if given)."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise ValueError(f"{p}: decoding a video needs ffmpeg and ffprobe on PATH (not found); or extract its "
                         f"frames first (ffmpeg -i {p.name} frames/%05d.png) and pass the folder")
    w, h, sar = _probe(p)
    filters = []
    if abs(sar - 1.0) > 1e-3:  # anamorphic: square the pixels first, as players show the video
        w = max(2, round(w * sar / 2) * 2)
        filters.append(f"scale={w}:{h}:flags=bicubic,setsar=1")
    if size is not None:  # fit while decoding: a long video never exists at full resolution
        h, w = size
        filters.append(f"scale={w}:{h}:force_original_aspect_ratio=increase:flags=bicubic,crop={w}:{h}")
    cmd = ["ffmpeg", "-v", "error", "-i", str(p)] + (["-vf", ",".join(filters)] if filters else [])
    if max_frames:
        cmd += ["-frames:v", str(max_frames)]
    done = subprocess.run([*cmd, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise ValueError(f"{p}: ffmpeg could not decode it: {done.stderr.decode(errors='replace')[-300:]}")
    data = np.frombuffer(done.stdout, dtype=np.uint8)
    if data.size % (w * h * 3):
        raise ValueError(f"{p}: ffmpeg returned {data.size} bytes, not a whole number of {w}x{h} RGB frames")
    return data.reshape(-1, h, w, 3)


def _fit_array(a: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """One ``[H, W, 3]`` uint8 frame, fitted (cover + centre crop) to ``size`` = (height, width) if given."""
    if size is None:
        return a
    from .image_io import fit_image

    x = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255.0
    x = fit_image(x, *size)[0]
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def load_frames(path: str | os.PathLike, max_frames: int | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
    """Frames as ``[F,3,H,W]`` uint8 from a folder of images (sorted by name), an animated/still image, or a
    video (``.mp4``, ``.mov``, ``.webm``...; decoded with ffmpeg when it is on PATH).

    ``size`` = (height, width) fits every frame while loading (cover + centre crop, as init images), so a
    long video is held at the run's size, in 8 bits, never at full resolution in float.
    """
    from PIL import Image, ImageSequence

    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
        images = []
        for f in files[:max_frames]:
            with Image.open(f) as im:
                images.append(_fit_array(np.asarray(im.convert("RGB")), size))
    elif p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        images = list(_ffmpeg_frames(p, max_frames, size))
        if not images:
            raise ValueError(f"{p}: the video has no frames")
    elif p.is_file():
        with Image.open(p) as im:
            images = [_fit_array(np.asarray(fr.convert("RGB")), size)
                      for _, fr in zip(range(max_frames or 10**9), ImageSequence.Iterator(im), strict=False)]
    else:
        raise FileNotFoundError(f"source frames not found: {p}")
    sizes = {a.shape for a in images}
    if len(sizes) > 1:
        raise ValueError(f"source frames in {p} differ in size: {sorted(sizes)[:3]}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
