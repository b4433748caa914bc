"""``python -m vqgan_core generate``: text-to-image from the command line.

Settings resolve in this order (later wins): GenerationConfig defaults, the demo preset (when neither
``--vqgan`` nor ``--clip`` is given and nothing is stored, the shipped demo models are used), the settings
stored in the ``--resume FILE`` latent, those stored in ``--from-png FILE``, then the flags given on this
command line. Every PNG written carries the prompt and the full settings (seed and model specs included), so
``--from-png out.png`` reproduces the run; when the run maps exactly onto this pack's ComfyUI nodes it also
carries that ComfyUI workflow (``vqgan_core.cli.comfy_workflow``), so dropping it onto ComfyUI's editor opens a
graph that makes the same image. ``--from-png`` also reads images ComfyUI saved from this pack's nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .flags import add_setting_flags, flag_help, given_settings
from .png_trust import untrusted_references

log = logging.getLogger(__name__)

def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``generate`` subcommand."""
    p = sub.add_parser("generate", help="generate an image from text prompts (VQGAN+CLIP)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generation_arguments(p, "output PNG (default output.png); batch items get _0, _1... suffixes")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="stop after STEP of the planned --steps (the image as it was then). Default with "
                        "--from-png: the step of that file's image (a --save-every or interrupted image)")
    p.add_argument("--save-latent", metavar="FILE.vqlatent",
                   help="also write the final latent, optimiser state and every setting of the run, to go on "
                        "later with --resume")
    p.add_argument("--resume", metavar="FILE.vqlatent",
                   help="start from a --save-latent file (or ComfyUI's Save VQ Latent): its latent, optimiser state, "
                        "story step and settings (flags given override them); --steps more steps (default: what "
                        "its run had left, else as many as it ran); the same result as one longer run")
    p.set_defaults(func=run)


def add_generation_arguments(p: argparse.ArgumentParser, out_help: str) -> None:
    """The flags of a generation run (shared by ``generate`` and ``animate``): one per GenerationConfig setting
    (generated from its fields: type, choices, range and help), plus the models, the output and the run's files."""
    from ..engine.config import GenerationConfig
    from ..util.settings import settings_of

    fields = settings_of(GenerationConfig)
    p.add_argument("prompts", nargs="?", default=None, help=flag_help(fields["prompts"]))
    groups = {name: p.add_argument_group(name) for name in ("models", "image and run", "prompts", "initialisation",
                                                            "cutouts, augmentation, loss", "optimisation",
                                                            "speed and output")}
    g = groups["models"]
    g.add_argument("--vqgan", help="VQGAN .safetensors / taming .ckpt / URL / 'demo' (default: demo)")
    g.add_argument("--clip", action="append", metavar="NAME[:TAG|:PATH]",
                   help="open_clip model, e.g. ViT-B-32:openai, ViT-B-32:/w/clip.safetensors, ViT-B-32:none, a "
                        "folder, or 'demo'; repeat for an ensemble (default: demo)")
    g.add_argument("--device", help="cuda, cuda:1, cpu, mps (default: cuda if available, else mps on Apple silicon, else cpu)")
    g = groups["image and run"]
    w, h = fields["width"], fields["height"]
    g.add_argument("--size", type=int, nargs=2, metavar=("W", "H"),
                   help=f"image width and height in pixels, {w.min:g}..{w.max:g}, multiples of the VQGAN's "
                        f"downsampling factor (default: {w.default} {h.default})")
    g.add_argument("--out", default=None, help=out_help)
    add_setting_flags(p, groups, GenerationConfig)
    g = groups["speed and output"]
    g.add_argument("--save-sequence", action="store_true", help="with --save-every: numbered frames instead of overwriting")
    g.add_argument("--video", help="(generate) also write the run as an animation: .webp, .gif, .png (APNG) or "
                                   ".mp4 (ffmpeg), a frame every --video-every steps plus the result")
    g.add_argument("--video-every", type=int, default=1, help="steps between video frames (default 1)")
    g.add_argument("--video-fps", type=float, default=12.0, help="video playback speed (default 12)")
    g.add_argument("--from-png", help="reuse the settings stored in a PNG written by this command, or of an image "
                                      "ComfyUI saved from a VQGAN+CLIP Generate (or Optimize) workflow")
    g.add_argument("--trust-png", action="store_true",
                   help="with --from-png (or --resume): let its stored settings read the local files and fetch the "
                        "URLs they name (model files, init image, image prompts, masks); without it such a file is "
                        "refused, naming them")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    from ..engine.config import GenerationConfig

    out = given_settings(args, GenerationConfig)
    if args.prompts is not None:
        out["prompts"] = args.prompts
    if args.init_image is not None and not str(args.init_image).startswith(("http://", "https://")):
        out["init_image"] = str(Path(args.init_image).resolve())  # --from-png works from any folder
    if args.edit_mask is not None:
        out["edit_mask"] = str(Path(args.edit_mask).resolve())
    if args.feed_forward is not None and args.feed_forward != "demo":
        out["feed_forward"] = str(Path(args.feed_forward).resolve())
    if args.region_prompts is not None:  # absolute mask paths: --from-png works from any folder
        out["region_prompts"] = [[str(Path(m).resolve()), p] for m, p in args.region_prompts]
    if args.size is not None:
        out["width"], out["height"] = args.size
    if args.init_image is not None and args.init is None:
        out["init"] = "image"
    return out


def from_png_metadata(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--from-png`` file's stored metadata ({} without the flag), read once per command."""
    if not args.from_png:
        return {}
    if getattr(args, "_from_png_metadata", None) is None:
        from .comfy_workflow import settings_from_png

        args._from_png_metadata = settings_from_png(args.from_png)
    return args._from_png_metadata


def resolve_config(args: argparse.Namespace):
    """Merge defaults, demo preset, ``--resume`` and ``--from-png`` settings and explicit flags into a
    GenerationConfig."""
    from ..engine.config import GenerationConfig
    from .resume import resume_settings

    settings: dict[str, Any] = {}
    meta = from_png_metadata(args)
    stored = dict(meta.get("config", {}))
    if stored.get("checkpoint_decoder") is False:  # the old default (before the automatic switch); the image
        stored["checkpoint_decoder"] = None  # is the same either way, so running out of memory need not fail
    for key, message in (meta.get("needs_flag") or {}).items():  # a ComfyUI image's model files: not in the PNG
        if key in ("vqgan", "clip") and not getattr(args, key, None):
            raise ValueError(str(message))
    explicit = _explicit(args)
    given = set(explicit) | {k for k in ("vqgan", "clip", "resume") if getattr(args, k, None)}
    resumed = resume_settings(args, given)
    vqgan = args.vqgan or stored.get("vqgan") or resumed.get("vqgan") or "demo"
    clip = args.clip or stored.get("clip") or resumed.get("clip") or ["demo"]
    if vqgan == "demo" and clip == ["demo"] and not stored and not resumed:
        from ..hub import demo

        settings.update(demo.preset())
    trusted = getattr(args, "trust_png", False)
    risky = untrusted_references(stored, meta, given) if stored else []
    if risky and not trusted:
        raise ValueError(f"{args.from_png} asks to read or download: {'; '.join(risky)}. A PNG's settings come from "
                         "whoever made it: pass --trust-png if you trust them, or give those settings as flags")
    risky = untrusted_references(resumed, {}, given | set(stored)) if resumed else []
    if risky and not trusted:
        raise ValueError(f"{args.resume} asks to read or download: {'; '.join(risky)}. A latent file's settings come "
                         "from whoever made it: pass --trust-png if you trust them, or give those settings as flags")
    settings.update(resumed)
    settings.update(stored)
    settings.update(explicit)
    settings["vqgan"], settings["clip"] = str(vqgan), list(clip)
    if settings.get("batch_prompts") and "batch_size" not in _explicit(args):
        settings["batch_size"] = len(settings["batch_prompts"])
    return GenerationConfig.from_dict(settings)


def stop_step(args: argparse.Namespace, cfg) -> int | None:  # noqa: ANN001
    """Where the run stops: ``--stop-at``, else the step of a ``--from-png`` image taken before the end."""
    if args.stop_at is not None:
        if not 0 <= args.stop_at <= cfg.steps:
            raise ValueError(f"--stop-at {args.stop_at} is outside the run's 0..{cfg.steps} steps")
        return args.stop_at
    if args.from_png and args.steps is None:
        step = from_png_metadata(args).get("step")
        if isinstance(step, int) and 0 <= step < cfg.steps:
            log.info("%s is the image at step %d of %d: reproducing it (--stop-at %d runs all steps)", args.from_png,
                     step, cfg.steps, cfg.steps)
            return step
    return None


def check_prompts(cfg) -> None:  # noqa: ANN001
    """A run needs at least one prompt of some kind."""
    if not (cfg.prompts or cfg.batch_prompts or cfg.image_prompts or cfg.noise_prompts or cfg.region_prompts):
        raise ValueError("no prompts: give PROMPTS, --batch-prompts, --image-prompts, --noise-prompts, --region "
                         "or --from-png")


def load_models(cfg, device_name: str | None) -> tuple:  # noqa: ANN001
    """``(device, vqgan, clip ensemble)`` for a resolved config (default device: CUDA, else MPS, else CPU)."""
    from .. import load_vqgan
    from ..clip.guide import load_clip_ensemble
    from ..engine.runtime import default_device

    device = torch.device(device_name) if device_name else default_device()
    vqgan = load_vqgan(cfg.vqgan, device=device)
    return device, vqgan, load_clip_ensemble(cfg.clip, cfg.clip_weights, device=device)


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[Callable[[], bool]]:
    """First Ctrl-C (or SIGTERM, what ``kill`` and job schedulers send): ``should_stop()`` turns True (the run ends
    after this step and writes what it has); a second one aborts. The previous handlers are restored afterwards."""
    stop = {"requested": False}
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        yield lambda: False
        return

    def on_signal(signum: int, frame: object) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        what = "interrupted" if signum == signal.SIGINT else "terminated"
        print(f"\n{what}: finishing this step and writing the result (again to abort)", file=sys.stderr)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is signal.SIG_IGN or handler is None:  # ignored, or a handler set outside Python
            continue
        previous[sig] = handler
        signal.signal(sig, on_signal)
    try:
        yield lambda: stop["requested"]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_writable(path: Path) -> None:
    """A ValueError naming ``path`` when its folder is missing or cannot be written (checked by writing)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vqgan_write_check."):
            pass
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None


def write_or_fallback(step: int | None, images: torch.Tensor, paths: list[Path],
                      write: Callable[[int | None, torch.Tensor, list[Path]], None]) -> list[Path]:
    """Write the result; when that fails at the end (a full disk, a folder gone), write it to the temporary folder
    instead and say so, so the run's work is never lost. Returns where it went."""
    try:
        write(step, images, paths)
        return paths
    except OSError as e:
        spare = [Path(tempfile.gettempdir()) / p.name for p in paths]
        try:
            write(step, images, spare)
        except OSError as e2:
            raise ValueError(f"could not write {paths[0]} ({e.strerror or e}) nor {spare[0]} ({e2.strerror or e2})") \
                from None
        print(f"error: could not write {paths[0]} ({e.strerror or e}); the image was saved to {spare[0]} instead",
              file=sys.stderr)
        raise ValueError(f"the output could not be written where asked; it is in {spare[0].parent}") from None


def numbered(out: Path, batch: int, tag: str = "") -> list[Path]:
    """``stem{tag}.ext`` for one image, else ``stem_0{tag}.ext``, ``stem_1{tag}.ext``... per batch item."""
    items = [""] if batch == 1 else [f"_{b}" for b in range(batch)]
    return [out.with_name(f"{out.stem}{item}{tag}{out.suffix}") for item in items]


class ComfyChunks:
    """The ComfyUI ``prompt``/``workflow`` chunks of this run's images (one graph per image step), and one log line
    saying why there are none, or which model files ComfyUI needs."""

    def __init__(self, resumed: bool) -> None:
        self.resumed, self.told = resumed, set()
        self.cache: dict[int | None, dict[str, str]] = {}

    def for_image(self, config: dict[str, Any], step: int | None) -> dict[str, str]:
        """The chunks for the image after ``step`` steps of the run ``config`` describes ({} when it does not map)."""
        from .comfy_workflow import comfy_workflow

        if step not in self.cache:
            wf = comfy_workflow(config, step, self.resumed)
            self.cache[step] = wf.chunks()
            lines = [f"no ComfyUI workflow in the PNG: VQGAN+CLIP Generate cannot make this image ({wf.reason})"]
            for line in (lines if wf.reason else [f"the PNG's ComfyUI workflow needs: {n}" for n in wf.notes]):
                if line not in self.told:  # once per run, not once per saved image
                    self.told.add(line)
                    # (no graph is the common case for tuned runs, the demo's preset included: -v shows why)
                    log.log(logging.DEBUG if wf.reason else logging.INFO, "%s", line)
        return self.cache[step]


def prompt_of(cfg, b: int) -> str:  # noqa: ANN001
    """The prompt string of batch item ``b``."""
    return cfg.batch_prompts[b] if cfg.batch_prompts else cfg.prompts


def progress_bar(total: int, disable: bool) -> tuple:
    """A tqdm bar and the engine's ``progress`` callback that advances it (showing the loss when read)."""
    from tqdm import tqdm

    bar = tqdm(total=total, disable=disable, unit="it", dynamic_ncols=True)

    def progress(step: int, total_steps: int, loss: float | None) -> None:
        bar.update(1)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4f}")

    return bar, progress


def run(args: argparse.Namespace) -> int:
    """Run ``generate``; returns the exit code."""
    from ..engine.loop import GenerationCallbacks, GenerationLoop
    from ..engine.memory_budget import check_run_fits
    from ..engine.run_state import continue_run
    from ..hub.download import file_sha256
    from ..latents.files import check_model
    from ..media.frames import check_animation_path, save_animation
    from ..media.image_io import save_png, to_pil
    from ..util.finite import NonFiniteLossError
    from .resume import resume_config, resume_source, save_run

    cfg = resolve_config(args)
    resume_path, resume = resume_source(args, from_png_metadata(args))
    resumed: dict[str, str] = {}  # PNG metadata naming the resumed file (--from-png resumes from it, if unchanged)
    if resume is not None:
        cfg = resume_config(cfg, resume, args, resume_path)
        resumed = {"resumed_from": str(Path(resume_path).resolve()), "resumed_sha256": file_sha256(resume_path)}
    check_prompts(cfg)
    stop = stop_step(args, cfg)
    out = Path(args.out or "output.png")
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file (metadata is stored in PNG text chunks), got {out}")
    videos = [check_animation_path(v) for v in numbered(Path(args.video), cfg.batch_size)] if args.video else []
    if videos and (args.video_every < 1 or not args.video_fps > 0):
        raise ValueError(f"--video-every must be >= 1 and --video-fps > 0 (got {args.video_every}, {args.video_fps})")
    if any(v.resolve() == p.resolve() for v in videos for p in numbered(out, cfg.batch_size)):
        raise ValueError(f"--video {args.video} would overwrite the image --out {out}: give it another name")
    if videos:
        cfg = cfg.replace(preview_every=args.video_every)
    for target in [*numbered(out, cfg.batch_size), *videos, *([Path(args.save_latent)] if args.save_latent else [])]:
        check_writable(target)  # before the run: an unwritable output must not cost the whole run
    device, vqgan, clip = load_models(cfg, args.device)
    if resume is not None:
        check_model(resume, vqgan, resume_path)
    check_run_fits(vqgan, clip, cfg, device, views=1 + len(cfg.region_prompts or []))
    holder: dict[str, Any] = {}
    comfy = ComfyChunks(bool(resumed))

    def write(step: int | None, images: torch.Tensor, paths: list[Path]) -> None:
        meta_cfg = holder["loop"].config.to_dict()
        chunks = comfy.for_image(meta_cfg, step)
        for b, (img, path) in enumerate(zip(images, paths, strict=True)):
            save_png(path, img, prompt_of(cfg, b), {"config": meta_cfg, "batch_index": b, "step": step, **resumed},
                     comfy=chunks)

    bar, progress = progress_bar(cfg.steps if stop is None else stop, args.no_progress)

    def save(step: int, images: torch.Tensor) -> None:
        write(step, images, numbered(out, cfg.batch_size, f"_{step:05d}" if args.save_sequence else ""))

    frames: list[list] = [[] for _ in range(cfg.batch_size)]

    def record(step: int, images: torch.Tensor) -> None:
        for b, img in enumerate(images):
            frames[b].append(to_pil(img))

    with graceful_interrupt() as should_stop:
        callbacks = GenerationCallbacks(progress=progress, save=save if cfg.save_every else None,
                                        preview=record if videos else None, should_stop=should_stop)
        if resume is None:
            loop = GenerationLoop(vqgan, clip, cfg, callbacks)
        else:
            done = resume.state.get("steps", 0)
            loop = GenerationLoop(vqgan, clip, cfg, callbacks, init_latent=resume.z, story_offset=done,
                                  schedule_offset=done)
            if not continue_run(loop, resume.state, rng=True):
                log.warning("%s: the optimiser state does not fit this run (other optimiser, method or size); it "
                            "starts afresh", resume_path)
        holder["loop"] = loop
        log.info("seed %d, %dx%d, %d steps, %s precision on %s", loop.config.seed, cfg.width, cfg.height, cfg.steps,
                 loop.precision, device)
        try:
            result = loop.run(max_steps=stop)
        except NonFiniteLossError as e:  # keep the last finite image, then fail
            if e.result is not None:
                for path in write_or_fallback(e.result.steps_done, e.result.images, numbered(out, cfg.batch_size),
                                              write):
                    print(f"wrote {path} (the last finite image, step {e.result.steps_done})")
            raise
        finally:
            bar.close()
    paths = write_or_fallback(result.steps_done, result.images, numbered(out, cfg.batch_size), write)
    if args.save_latent:
        planned = (resume.state.get("steps", 0) if resume is not None else 0) + cfg.steps
        print(f"wrote {save_run(args.save_latent, loop, planned)} (continue with --resume)")
    done = ", interrupted" if result.interrupted else ""
    if not done and result.steps_done < cfg.steps:
        done = f", step {result.steps_done} of {cfg.steps}"
    for path in paths:
        print(f"wrote {path} (seed {loop.config.seed}{done})")
    for b, video in enumerate(videos):
        record_final = frames[b] + [to_pil(result.images[b])]
        meta = {"config": loop.config.to_dict(), "batch_index": b, "step": result.steps_done,
                **resumed}
        save_animation(video, record_final, args.video_fps, prompt_of(cfg, b), meta)
        print(f"wrote {video} ({len(record_final)} frames: every {args.video_every} steps and the result)")
    return 0
