"""``python -m vqgan_core {convert,info,generate}``: the command-line face of the core."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from ..hub.checkpoint import CheckpointError, save_vqgan
from ..hub.download import DownloadError
from ..hub.loading import count_parameters, load_vqgan
from ..vqgan.config import ConfigError


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a taming .ckpt (+yaml) to a self-describing .safetensors")
    p.add_argument("input", help="taming .ckpt/.pt (or a .safetensors lacking config metadata)")
    p.add_argument("output", help="output .safetensors")
    p.add_argument("--config", help="taming model.yaml (default: found beside the checkpoint)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32", help="weight dtype to store")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise SystemExit(f"output must end in .safetensors, got {out}")
    model = load_vqgan(args.input, config=args.config, dtype=getattr(torch, args.dtype))
    save_vqgan(model, out, extra_metadata={"converted_from": Path(args.input).name})
    reloaded = load_vqgan(out, dtype=getattr(torch, args.dtype))
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True))
    if not same:
        raise SystemExit(f"round-trip check failed for {out}")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {len(model.state_dict())} tensors, round-trip bit-exact)")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a VQGAN checkpoint's config, codebook size, downsampling and parameter count")
    p.add_argument("file", help=".safetensors, taming .ckpt, URL or 'demo'")
    p.add_argument("--config", help="taming model.yaml for a .ckpt (default: found beside it)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    model = load_vqgan(args.file, config=args.config)
    cfg = model.config
    info = {
        "file": str(args.file),
        "quantizer": cfg.quantizer,
        "codebook_size": cfg.n_embed,
        "embed_dim": cfg.embed_dim,
        "downsample_factor": cfg.downsample_factor,
        "parameters": count_parameters(model),
        "config": cfg.to_dict(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"file:              {info['file']}")
    print(f"quantizer:         {cfg.quantizer}")
    print(f"codebook size:     {cfg.n_embed} codes x {cfg.embed_dim} dims")
    print(f"downsample factor: f{cfg.downsample_factor} (a 256x256 image is a {256 // cfg.downsample_factor}x{256 // cfg.downsample_factor} code grid)")
    print(f"parameters:        {info['parameters']:,}")
    print("config:            " + json.dumps(cfg.to_dict(), sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full parser (subcommands: convert, info, generate, animate)."""
    parser = argparse.ArgumentParser(prog="python -m vqgan_core", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_convert(sub)
    _add_info(sub)
    from . import animate as cli_animate
    from . import generate as cli_generate

    cli_generate.add_parser(sub)
    cli_animate.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear line and exit 2, never a torch traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (CheckpointError, ConfigError, DownloadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except torch.OutOfMemoryError:
        tips = "a smaller --size, fewer --cutn, a smaller --batch, or --precision bf16"
        if getattr(args, "checkpoint_decoder", None) is False:  # None: the automatic switch was already tried
            tips = "--checkpoint-decoder (recomputes the decoder in backward), " + tips
        print(f"error: out of GPU memory. Try {tips}", file=sys.stderr)
        return 2
