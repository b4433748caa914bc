"""Released taming-transformers VQGANs that can be fetched by name when the machine is online.

The URLs are the public CompVis download links; mirrors rot (users' most common complaint), so
``$VQGAN_CORE_MIRROR`` can point at any server holding ``<name>.ckpt`` and ``<name>.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .download import download
from .registry import Registry


@dataclass(frozen=True)
class KnownVQGAN:
    """Where a released checkpoint and its config live."""

    ckpt_url: str
    yaml_url: str | None  # None: published without one (the architecture is read from the weights)
    description: str
    # Published sha256 of the files, checked after download and whenever the cached file is used. None where no
    # digest is published: then the digest of the first complete download is recorded beside it (<file>.sha256)
    # and checked from then on (see vqgan_core.download).
    ckpt_sha256: str | None = None
    yaml_sha256: str | None = None


def _heibox(share: str) -> tuple[str, str]:
    base = f"https://heibox.uni-heidelberg.de/d/{share}/files/?p="
    return base + "%2Fckpts%2Flast.ckpt&dl=1", base + "%2Fconfigs%2Fmodel.yaml&dl=1"


KNOWN_VQGANS: Registry[KnownVQGAN] = Registry("known VQGAN")
KNOWN_VQGANS.register("vqgan_imagenet_f16_1024", KnownVQGAN(*_heibox("8088892a516d4e3baf92"), "ImageNet f16, 1024 codes"))
KNOWN_VQGANS.register("vqgan_imagenet_f16_16384", KnownVQGAN(*_heibox("a7530b09fed84f80a887"), "ImageNet f16, 16384 codes"))
KNOWN_VQGANS.register("vqgan_gumbel_f8", KnownVQGAN(*_heibox("2e5662443a6b4307b470"), "OpenImages Gumbel f8, 8192 codes"))
# the taming README's COCO first stages: single-file links, no yaml published (same ddconfig as ImageNet f16)
KNOWN_VQGANS.register("vqgan_coco_f16_8192", KnownVQGAN(
    "https://heibox.uni-heidelberg.de/f/78dea9589974474c97c1/?dl=1", None, "COCO f16, 8192 codes (coco_epoch117)"))
KNOWN_VQGANS.register("vqgan_coco_oi_f16_8192", KnownVQGAN(
    "https://heibox.uni-heidelberg.de/f/461d9a9f4fcf48ab84f4/?dl=1", None,
    "COCO + Open Images f16, 8192 codes (coco_oi_epoch12)"))


def fetch_known(name: str, check_interrupt: Callable[[], object] | None = None) -> tuple[Path, Path | None]:
    """Download (once, into the cache) the checkpoint and the yaml (None when none is published) of a released
    model; ``$VQGAN_CORE_MIRROR`` serves ``<name>.ckpt`` (and ``<name>.yaml``) instead (the same files: the same
    digests apply). ``check_interrupt`` is called between chunks (see :func:`vqgan_core.download.download`)."""
    spec = KNOWN_VQGANS.get(name)
    mirror = os.environ.get("VQGAN_CORE_MIRROR")
    if mirror:
        base = f"{mirror.rstrip('/')}/{name}"
        ckpt_url, yaml_url = f"{base}.ckpt", (f"{base}.yaml" if spec.yaml_url else None)
    else:
        ckpt_url, yaml_url = spec.ckpt_url, spec.yaml_url
    ckpt = download(ckpt_url, name=f"{name}.ckpt", sha256=spec.ckpt_sha256, check_interrupt=check_interrupt)
    yaml = download(yaml_url, name=f"{name}.yaml", sha256=spec.yaml_sha256,
                    check_interrupt=check_interrupt) if yaml_url else None
    return ckpt, yaml
