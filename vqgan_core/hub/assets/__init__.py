"""Packaged assets: the offline demo models (see :mod:`vqgan_core.hub.demo`)."""

from pathlib import Path

#: Folder holding the shipped demo weights: ``vqgan.safetensors``, the open_clip folder ``clip/`` and
#: ``feed_forward.safetensors``.
DEMO_DIR: Path = Path(__file__).resolve().parent / "demo"
