"""Packaged assets: the offline demo models (see :mod:`vqgan_core.hub.demo`)."""

from pathlib import Path

#: Folder holding the shipped demo weights: ``vqgan.safetensors`` and the open_clip folder ``clip/``.
DEMO_DIR: Path = Path(__file__).resolve().parent / "demo"
