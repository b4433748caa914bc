"""Zoom / pan / rotate feedback animation (the classic "zoom video") and video restyling, as a library.

Each frame: take the last image, zoom / shift / rotate it about its centre, re-encode it with the
VQGAN, and optimise a few more steps towards the prompts. The optimiser restarts per frame (as the
classic script re-created it) and ``init_weight`` pulls towards the re-encoded frame. One
:class:`GenerationLoop` serves the whole animation, so story prompts (``change_prompts_every``),
learning-rate schedules, seeds and the CUDA graph span all frames, and the same seed gives the same
frames. ``GenerationConfig.steps`` are the steps before the first frame (0: the start latent itself).

With ``source`` frames (a video), frame *f* starts from source frame *f* instead, mixed with the
(moved) previous output by ``blend``: each frame is restyled towards the prompts, and ``blend``
carries the style from frame to frame (less flicker); ``init_weight`` keeps the source's layout.
``smooth`` (RKH's z-smoother) averages the frames' latents over time (an EWMA) for the frames shown;
the optimisation itself goes on from the unsmoothed latent, so smoothing never slows the style down.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..engine.config import GenerationConfig
from ..engine.loop import GenerationCallbacks, GenerationLoop
from ..media.image_io import fit_image
from ..util.settings import check_settings, reject_unknown_keys, setting
from ..views.warp import warp

__all__ = ["PADDINGS", "AnimationConfig", "AnimationResult", "SourceFrames", "frame_transform",
           "run_animation"]

log = logging.getLogger(__name__)

PADDINGS = ("reflection", "border", "zeros", "wrap")


@dataclass
class AnimationConfig:
    """How each frame moves (all per frame, about the image centre)."""

    frames: int = setting(30, min=1, max=1_000_000, step=1, ui_default=16, help="Number of frames (frame 0 = the start).")
    steps_per_frame: int = setting(10, min=0, max=10000, step=1, help="Optimisation steps between frames.")
    zoom: float = setting(1.02, min=0.1, max=10.0, step=0.01, ui_default=1.05, help="Scale per frame: above 1 zooms in, below 1 out.")
    shift_x: float = setting(0.0, min=-256.0, max=256.0, step=0.5, flag=False,
                             help="Pixels per frame; positive moves the content right.")
    shift_y: float = setting(0.0, min=-256.0, max=256.0, step=0.5, flag=False,
                             help="Pixels per frame; positive moves the content down.")
    rotate: float = setting(0.0, min=-180.0, max=180.0, step=0.5, help="Degrees per frame, counter-clockwise.")
    padding: str = setting("reflection", choices=PADDINGS, flag="--anim-padding",
                           help="What fills revealed borders (wrap: the image continues as a tile; the default for a "
                           "seamless VQGAN).")
    fps: float = setting(12.0, min=0.1, max=240.0, step=0.5, help="Playback frames per second of written files.")
    blend: float = setting(0.0, min=0.0, max=1.0, step=0.01, ui_default=0.3,
                           help="With source frames: share of the previous output mixed into each source frame "
                           "(more = steadier style, less flicker).")
    smooth: float = setting(0.0, min=0.0, max=0.99, step=0.01,
                            help="Frames shown decode an average of the latents over time (EWMA: the last shown "
                            "latent's share; less flicker, the run itself is unchanged); frames must not move.")
    source: str | None = setting(None, help="Frames to restyle: a folder of images (sorted by name), an animated "
                                 "GIF/WebP/PNG, or a video (.mp4, .mov, .webm...: needs ffmpeg); frames then defaults "
                                 "to all of them.", group="restyling a video")

    def __post_init__(self) -> None:
        check_settings(self)  # types, ranges (NaN: a black video) and choices, from the declarations above
        if self.smooth and self.moves:  # latents of moving frames do not line up: averaging them ghosts
            raise ValueError("smooth averages latents of frames that stay in place (video restyling, or zoom 1 "
                             "without shift or rotation); set smooth to 0 for a moving animation")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON types only), stored next to the generation settings."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnimationConfig:
        """Build from a dict; unknown keys are an error naming them."""
        reject_unknown_keys(cls, d, "animation setting(s)")
        return cls(**d)

    @property
    def moves(self) -> bool:
        """False when frames are re-encoded in place (no zoom, shift or rotation)."""
        return (self.zoom, self.shift_x, self.shift_y, self.rotate) != (1.0, 0.0, 0.0, 0.0)


@dataclass
class AnimationResult:
    """Frames (unless not kept), the final latent, and what was done."""

    frames: torch.Tensor | None  # [F, B, 3, H, W] float32 CPU in [0, 1]
    latent: torch.Tensor  # [B, C, h, w] of the last frame
    config: GenerationConfig  # with the seed actually used (steps = steps before the first frame)
    animation: AnimationConfig
    frames_done: int = 0
    interrupted: bool = False
    losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)


def frame_transform(img01: torch.Tensor, anim: AnimationConfig) -> torch.Tensor:
    """One frame's motion: ``[B,3,H,W]`` in [0,1] zoomed, rotated and shifted about the centre (bilinear).

    ``padding="wrap"`` treats the image as a tile (seamless mode): every output pixel samples the source at
    its coordinates modulo the image size, so whatever leaves one edge comes in at the other, for any move.
    kornia builds the move (source -> output pixels) and its closed-form inverse; ``views.warp`` resamples.
    """
    from kornia.geometry.conversions import convert_affinematrix_to_homography
    from kornia.geometry.transform import get_rotation_matrix2d, invert_affine_transform

    if not anim.moves:
        return img01
    b, _, h, w = img01.shape
    x = img01.float()
    center = torch.tensor([[(w - 1) / 2, (h - 1) / 2]], device=x.device).expand(b, 2)
    angle = torch.full((b,), float(anim.rotate), device=x.device)
    scale = torch.full((b, 2), float(anim.zoom), device=x.device)
    m = get_rotation_matrix2d(center, angle, scale)
    m[:, 0, 2] += anim.shift_x
    m[:, 1, 2] += anim.shift_y
    inv = convert_affinematrix_to_homography(invert_affine_transform(m))  # [B,3,3]: output -> source pixels
    return warp(x, inv, anim.padding).clamp(0, 1)


class SourceFrames:
    """Source frames ``[F,3,h,w]`` or ``[F,B,3,h,w]`` (float in [0,1] or uint8), indexable as float
    ``[B,3,height,width]`` fitted like init images (cover + centre crop), one frame at a time: a long
    video never exists at the run's size in float all at once."""

    def __init__(self, source: torch.Tensor, height: int, width: int, batch: int) -> None:
        if source.dim() == 4:
            source = source.unsqueeze(1)
        if source.dim() != 5 or source.shape[2] != 3:
            raise ValueError(f"source frames must be [F,3,H,W] or [F,B,3,H,W] RGB, got {tuple(source.shape)}")
        if source.shape[1] not in (1, batch):
            raise ValueError(f"source frames have {source.shape[1]} items per frame; the batch size is {batch}")
        self.source, self.height, self.width, self.batch = source, height, width, batch

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def __getitem__(self, f: int) -> torch.Tensor:
        x = self.source[f]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return fit_image(x, self.height, self.width).expand(self.batch, -1, -1, -1)


def run_animation(
    vqgan: torch.nn.Module,
    clip: Any,
    config: GenerationConfig,
    animation: AnimationConfig,
    callbacks: GenerationCallbacks | None = None,
    on_frame: Callable[[int, torch.Tensor], None] | None = None,
    keep_frames: bool = True,
    source: torch.Tensor | None = None,
    stop_after: int | None = None,
    **loop_kwargs: Any,
) -> AnimationResult:
    """Run a zoom animation; ``on_frame(index, images [B,3,H,W])`` streams each frame as it is done.

    ``source``: frames to restyle (``[F,3,H,W]`` or ``[F,B,3,H,W]``, float in [0,1] or uint8, any size);
    the animation then has ``min(frames, F)`` frames and frame 0 starts from the first source frame.
    ``stop_after``: end after that many frames of the planned animation (the same frames as the full run).
    ``loop_kwargs`` go to :class:`GenerationLoop` (``init_latent``, ``init_image``, ``image_prompts``).
    Progress callbacks count the steps of the whole animation. An interrupt ends it after the last
    complete frame (``result.interrupted``).
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be at least 1 frame, got {stop_after}")
    a, run_config = animation, config
    src = None
    if source is not None:
        if "init_latent" in loop_kwargs or "init_image" in loop_kwargs or config.init_image:
            raise ValueError("source frames set the start of every frame; do not also give an init latent or "
                             "init image")
        src = SourceFrames(source, config.height, config.width, config.batch_size)
        a = dataclasses.replace(a, frames=min(a.frames, len(src)))
        run_config = config.replace(init="image")
        loop_kwargs["init_image"] = src[0]
    total = config.steps + (a.frames - 1) * a.steps_per_frame
    loop = GenerationLoop(vqgan, clip, run_config.replace(steps=total), callbacks, **loop_kwargs)
    if src is not None and (loop.height, loop.width) != (src.height, src.width):  # size floored to the factor
        src = SourceFrames(source, loop.height, loop.width, config.batch_size)
    kept: list[torch.Tensor] = []
    smoothed: torch.Tensor | None = None  # the EWMA of the frames' latents (with ``smooth``)
    res = loop.run(max_steps=config.steps)
    done = 0
    for f in range(a.frames if stop_after is None else min(a.frames, stop_after)):
        if f > 0:
            start = frame_transform(res.images, a)
            if src is not None:
                start = torch.lerp(src[f], start, a.blend)
            loop.set_latent(loop.encode_images(start), steps_ahead=a.steps_per_frame)
            res = loop.run(max_steps=a.steps_per_frame)
        if res.interrupted:
            break
        shown = res.images
        if a.smooth:
            smoothed = res.latent if smoothed is None else torch.lerp(res.latent, smoothed, a.smooth)
            shown = loop.decode(smoothed)[0]
        if keep_frames:
            kept.append(shown)
        if on_frame is not None:
            on_frame(f, shown)
        done = f + 1
    log.info("animation: %d of %d frames, %d steps", done, a.frames, loop.step_index)
    return AnimationResult(
        frames=torch.stack(kept) if kept else None, latent=res.latent, config=config.replace(seed=loop.config.seed),
        animation=a, frames_done=done, interrupted=res.interrupted, losses=list(loop.losses))
