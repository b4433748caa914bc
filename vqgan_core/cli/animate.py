"""``python -m vqgan_core animate``: the classic zoom video (zoom / shift / rotate feedback), or a restyled video.

Takes every ``generate`` flag (``--steps`` are the steps before the first frame) plus the motion;
``--source`` restyles given frames instead (each starts from its source frame; ``--blend`` carries
the previous output over).
Writes ``--out`` as .webp, .gif, .png (APNG, with the settings chunk: ``--from-png`` reproduces it)
or .mp4 (needs ffmpeg); ``--frames-dir`` also writes each frame as a PNG as soon as it is done.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import torch

from ..util.settings import settings_of
from . import generate as cli_generate
from .flags import add_setting_flags, given_settings

log = logging.getLogger(__name__)

def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``animate`` subcommand."""
    p = sub.add_parser("animate", help="zoom / pan / rotate animation (the classic zoom video) or video restyling",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    cli_generate.add_generation_arguments(
        p, "animation file: .webp (default animation.webp), .gif, .png (APNG) or .mp4; batch items get _0, _1...")
    from ..animation.animate import AnimationConfig

    shift_x = settings_of(AnimationConfig)["shift_x"]
    groups = {"": p.add_argument_group("animation (per frame)")}
    groups[""].add_argument("--shift", type=float, nargs=2, metavar=("DX", "DY"),
                            help=f"pixels per frame (right, down), {shift_x.min:g}..{shift_x.max:g} each")
    groups[""].add_argument("--frames-dir", help="also write every frame as a PNG into this folder")
    groups[""].add_argument("--stop-after-frames", type=int, metavar="N",
                            help="end after N frames of the planned animation. Default with --from-png: the frames "
                                 "that file holds (an interrupted animation, or a --frames-dir frame)")
    add_setting_flags(p, groups, AnimationConfig)
    p.set_defaults(func=run)


def resolve_animation(args: argparse.Namespace, seamless: bool = False):  # noqa: ANN201
    """AnimationConfig from defaults, ``--from-png`` settings, then explicit flags (a tileable run wraps)."""
    from ..animation.animate import AnimationConfig

    d: dict[str, Any] = dict(cli_generate.from_png_metadata(args).get("animation", {}))
    d.update(given_settings(args, AnimationConfig))
    if args.shift is not None:
        d["shift_x"], d["shift_y"] = args.shift
    if args.source is not None:
        d["source"] = str(Path(args.source).resolve())
    if seamless:
        d.setdefault("padding", "wrap")  # what leaves one edge of a tile comes in at the other
    if d.get("source") is not None:
        d.setdefault("frames", 10**6)  # all source frames
        d.setdefault("zoom", 1.0)  # restyling: no motion unless asked for
    return AnimationConfig.from_dict(d)


def stop_frame(args: argparse.Namespace, anim) -> int | None:  # noqa: ANN001
    """Frames to make: ``--stop-after-frames``, else those of a ``--from-png`` file that ended early."""
    if args.stop_after_frames is not None:
        if args.stop_after_frames < 1:
            raise ValueError(f"--stop-after-frames must be at least 1, got {args.stop_after_frames}")
        return args.stop_after_frames
    if args.from_png and args.frames is None:
        meta = cli_generate.from_png_metadata(args)
        done = meta.get("frames", meta["frame"] + 1 if isinstance(meta.get("frame"), int) else None)
        if isinstance(done, int) and 0 < done < anim.frames:
            log.info("%s holds %d of %d frames: making those (--stop-after-frames %d makes all)", args.from_png,
                     done, anim.frames, anim.frames)
            return done
    return None


def run(args: argparse.Namespace) -> int:
    """Run ``animate``; returns the exit code."""
    from ..animation.animate import run_animation
    from ..engine.loop import GenerationCallbacks
    from ..media.frames import check_animation_path, load_frames, save_animation
    from ..media.image_io import save_png, to_pil

    cfg = cli_generate.resolve_config(args)
    anim = resolve_animation(args, seamless=cfg.seamless)
    cli_generate.check_prompts(cfg)
    if cfg.seed is None:  # resolved now, so the frames written during the run carry it
        cfg = cfg.replace(seed=random.SystemRandom().randrange(2**31))  # noqa: S311 - not crypto
    outs = [check_animation_path(p) for p in cli_generate.numbered(Path(args.out or "animation.webp"), cfg.batch_size)]
    frames_dir = Path(args.frames_dir) if args.frames_dir else None
    if args.save_every or args.save_sequence or args.video:
        raise ValueError("animate writes its frames with --out and --frames-dir; --save-every, --save-sequence and "
                         "--video are for generate")
    source = None
    if anim.source is not None:
        source = load_frames(anim.source, max_frames=anim.frames, size=(cfg.height, cfg.width))
        anim = dataclasses.replace(anim, frames=source.shape[0])
    stop = stop_frame(args, anim)
    device, vqgan, clip = cli_generate.load_models(cfg, args.device)
    total = cfg.steps + (min(anim.frames, stop or anim.frames) - 1) * anim.steps_per_frame
    bar, progress = cli_generate.progress_bar(total, args.no_progress)
    pil_frames: list[list] = [[] for _ in range(cfg.batch_size)]

    def on_frame(index: int, images: torch.Tensor) -> None:
        for b, img in enumerate(images):
            pil_frames[b].append(to_pil(img))
            if frames_dir is not None:
                meta = {"config": cfg.to_dict(), "animation": anim.to_dict(), "batch_index": b, "frame": index}
                tag = f"_{b}" if cfg.batch_size > 1 else ""
                save_png(frames_dir / f"frame{tag}_{index:05d}.png", img, cli_generate.prompt_of(cfg, b), meta)

    log.info("seed %d, %dx%d, %d frames, %d steps in all on %s", cfg.seed, cfg.width, cfg.height, anim.frames,
             total, device)
    with cli_generate.graceful_interrupt() as should_stop:  # first Ctrl-C: keep the frames done so far
        try:
            callbacks = GenerationCallbacks(progress=progress, should_stop=should_stop)
            result = run_animation(vqgan, clip, cfg, anim, callbacks, on_frame=on_frame, keep_frames=False,
                                   source=source, stop_after=stop)
        finally:
            bar.close()
    if result.frames_done == 0:
        raise ValueError("no frame was finished (interrupted before the first frame)")
    for b, out in enumerate(outs):
        meta = {"config": result.config.to_dict(), "animation": anim.to_dict(), "batch_index": b,
                "frames": result.frames_done}
        save_animation(out, pil_frames[b], anim.fps, cli_generate.prompt_of(cfg, b), meta)
        note = f", interrupted after {result.frames_done} of {anim.frames}" if result.interrupted else ""
        if not note and result.frames_done < anim.frames:
            note = f", {result.frames_done} of {anim.frames}"
        print(f"wrote {out} ({result.frames_done} frames, seed {result.config.seed}{note})")
    return 0
