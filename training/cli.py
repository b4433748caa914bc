"""Command line: ``python -m training --config FILE [...] [key.sub=value ...]`` and ``python -m training export``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import TrainConfig


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a VQGAN (taming recipe). Extra arguments key.sub=value override config keys, "
        "e.g. train.batch_size=4 loss.disc_start=10000. Export: python -m training export CKPT OUT.safetensors [--ema]",
    )
    p.add_argument("--config", required=True, help="YAML/JSON training config (see training/configs/)")
    p.add_argument("--data", help="COCO 2017 root or image folder (overrides data.path)")
    p.add_argument("--out", help="run folder for checkpoints, logs and TensorBoard (overrides out)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (overrides train.max_steps)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training export", description="Write an inference-only VQGAN safetensors."
    )
    p.add_argument("checkpoint", help="checkpoint folder, run folder (newest checkpoint) or taming .ckpt")
    p.add_argument("out", help="output .safetensors")
    p.add_argument("--ema", action="store_true", help="export the EMA weights")
    p.add_argument("--config", help="taming model.yaml (for a .ckpt without one beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        return _export(argv[1:]) if argv and argv[0] == "export" else _train(argv)
    except (ValueError, OSError) as e:  # TrainConfigError, ConfigError and CheckpointError are ValueErrors
        # One actionable line instead of a traceback: these are problems with the user's files or settings.
        logging.getLogger("training").debug("details of the failure", exc_info=True)
        print(f"error: {e}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2


def _export(argv: list[str]) -> int:
    from .export import export

    a = _export_parser().parse_args(argv)
    path = export(a.checkpoint, a.out, a.ema, a.config)
    print(path)  # noqa: T201 - CLI output
    return 0


def _train(argv: list[str]) -> int:
    a = _train_parser().parse_args(argv)
    cfg = TrainConfig.load(a.config, a.overrides)
    if a.data:
        cfg.data.path = a.data
    if a.out:
        cfg.out = a.out
    if a.max_steps is not None:
        cfg.train.max_steps = a.max_steps
    from .distributed import cleanup
    from .trainer import Trainer

    try:
        Trainer(cfg, resume=a.resume).fit()
    finally:
        cleanup()
    return 0
