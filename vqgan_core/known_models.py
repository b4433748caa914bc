"""Released taming-transformers VQGANs that can be fetched by name when the machine is online.

The URLs are the public CompVis download links; mirrors rot (users' most common complaint), so
``$VQGAN_CORE_MIRROR`` can point at any server holding ``<name>.ckpt`` and ``<name>.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .download import download
from .registry import Registry


@dataclass(frozen=True)
class KnownVQGAN:
    """Where a released checkpoint and its config live."""

    ckpt_url: str
    yaml_url: str
    description: str


def _heibox(share: str) -> tuple[str, str]:
    base = f"https://heibox.uni-heidelberg.de/d/{share}/files/?p="
    return base + "%2Fckpts%2Flast.ckpt&dl=1", base + "%2Fconfigs%2Fmodel.yaml&dl=1"


KNOWN_VQGANS: Registry[KnownVQGAN] = Registry("known VQGAN")
KNOWN_VQGANS.register("vqgan_imagenet_f16_1024", KnownVQGAN(*_heibox("8088892a516d4e3baf92"), "ImageNet f16, 1024 codes"))
KNOWN_VQGANS.register("vqgan_imagenet_f16_16384", KnownVQGAN(*_heibox("a7530b09fed84f80a887"), "ImageNet f16, 16384 codes"))
KNOWN_VQGANS.register("vqgan_gumbel_f8", KnownVQGAN(*_heibox("2e5662443a6b4307b470"), "OpenImages Gumbel f8, 8192 codes"))


def fetch_known(name: str) -> tuple[Path, Path]:
    """Download (once, into the cache) the checkpoint and yaml of a released model."""
    spec = KNOWN_VQGANS.get(name)
    mirror = os.environ.get("VQGAN_CORE_MIRROR")
    ckpt_url, yaml_url = (f"{mirror.rstrip('/')}/{name}.ckpt", f"{mirror.rstrip('/')}/{name}.yaml") if mirror else (spec.ckpt_url, spec.yaml_url)
    return download(ckpt_url), download(yaml_url)
