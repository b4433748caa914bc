"""Released taming-transformers VQGANs that can be fetched by name when the machine is online.

The URLs are the public CompVis download links; mirrors rot (users' most common complaint), so
``$VQGAN_CORE_MIRROR`` can point at any server holding ``<name>.ckpt`` and ``<name>.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..util.registry import Registry
from .download import Progress, download


@dataclass(frozen=True)
class KnownVQGAN:
    """Where a released checkpoint and its config live."""

    ckpt_url: str
    yaml_url: str | None  # None: published without one (the architecture is read from the weights)
    description: str
    # Published sha256 of the files, checked after download and whenever the cached file is used. None where no
    # digest is published: then the digest of the first complete download is recorded beside it (<file>.sha256)
    # and checked from then on (see vqgan_core.hub.download).
    ckpt_sha256: str | None = None
    yaml_sha256: str | None = None


def _heibox(share: str) -> tuple[str, str]:
    base = f"https://heibox.uni-heidelberg.de/d/{share}/files/?p="
    return base + "%2Fckpts%2Flast.ckpt&dl=1", base + "%2Fconfigs%2Fmodel.yaml&dl=1"


MIRROR_ENV = "VQGAN_CORE_MIRROR"

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


def known_urls(name: str) -> tuple[str, str | None]:
    """``(ckpt_url, yaml_url)`` of a released model (yaml None when none is published), through
    ``$VQGAN_CORE_MIRROR`` when it is set (a server holding ``<name>.ckpt`` and ``<name>.yaml``)."""
    spec = KNOWN_VQGANS.get(name)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        base = f"{mirror.rstrip('/')}/{name}"
        return f"{base}.ckpt", (f"{base}.yaml" if spec.yaml_url else None)
    return spec.ckpt_url, spec.yaml_url


def known_file_names(name: str) -> tuple[str, str | None]:
    """``(<name>.ckpt, <name>.yaml or None)``: the names a released model's files get in a models folder (the yaml
    beside the checkpoint with the same stem is the first one :func:`vqgan_core.hub.checkpoint.find_yaml` tries)."""
    spec = KNOWN_VQGANS.get(name)
    return f"{name}.ckpt", (f"{name}.yaml" if spec.yaml_url else None)


def fetch_known(name: str, check_interrupt: Callable[[], object] | None = None, *,
                dest_dir: str | os.PathLike | None = None, progress: Progress | None = None) -> tuple[Path, Path | None]:
    """Download (once) the checkpoint and the yaml (None when none is published) of a released model;
    ``$VQGAN_CORE_MIRROR`` serves ``<name>.ckpt`` (and ``<name>.yaml``) instead (the same files: the same
    digests apply).

    Args:
        check_interrupt: called between chunks (see :func:`vqgan_core.hub.download.download`).
        dest_dir: a folder to keep them in under their plain names (``<name>.ckpt``/``<name>.yaml``, see
            :func:`known_file_names`), e.g. ComfyUI's models/vqgan; default: the download cache.
        progress: ``progress(received, total)`` for each file in turn (the small yaml first).
    """
    spec = KNOWN_VQGANS.get(name)
    ckpt_url, yaml_url = known_urls(name)
    ckpt_name, yaml_name = known_file_names(name)
    yaml = download(yaml_url, dest_dir, sha256=spec.yaml_sha256, name=yaml_name,
                    filename=yaml_name if dest_dir else None, check_interrupt=check_interrupt,
                    progress=progress) if yaml_url else None
    ckpt = download(ckpt_url, dest_dir, sha256=spec.ckpt_sha256, name=ckpt_name,
                    filename=ckpt_name if dest_dir else None, check_interrupt=check_interrupt, progress=progress)
    return ckpt, yaml
