"""Save / load a feed-forward network as safetensors with its config, and check it against a VQGAN and CLIP.

Why a fingerprint: a network trained for one VQGAN predicts codes of that codebook; decoding them with another
VQGAN gives noise, so loading it with the wrong VQGAN is an error that names both, not a silent bad image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..hub.checkpoint import read_safetensors
from ..util.atomic import atomic_save_file
from .config import FeedForwardConfig
from .model import FeedForwardNet, effective_codebook

__all__ = ["CONFIG_KEY", "FeedForwardError", "check_pair", "load_feed_forward", "save_feed_forward",
           "vqgan_fingerprint"]

log = logging.getLogger(__name__)

CONFIG_KEY = "feed_forward_config"
_SAMPLES = 16


class FeedForwardError(ValueError):
    """A feed-forward file that cannot be loaded, or a VQGAN / CLIP it was not trained for."""


def vqgan_fingerprint(vqgan: nn.Module) -> list[float]:
    """A few numbers that tell one codebook from another (mean, std and evenly spaced values)."""
    cb = effective_codebook(vqgan).detach().cpu().flatten()
    picks = cb[torch.linspace(0, cb.numel() - 1, _SAMPLES).long()]
    return [round(float(v), 5) for v in (cb.mean(), cb.std(), *picks)]


def _describe(vqgan: nn.Module) -> str:
    c = getattr(vqgan, "config", None)
    if c is None:
        return "this VQGAN"
    return f"this VQGAN ({c.n_embed} codes of {c.embed_dim} channels)"


def check_pair(config: FeedForwardConfig, vqgan: nn.Module, clip_spec: str | None = None,
               text_dim: int | None = None) -> None:
    """Raise :class:`FeedForwardError` when ``vqgan`` (or the CLIP) is not the one the network was trained for."""
    trained = f"it was trained for VQGAN {config.vqgan or '?'}"
    k, ch = vqgan.codebook.shape
    if (k, ch) != (config.n_embed, config.latent_channels):
        raise FeedForwardError(f"this feed-forward model predicts {config.n_embed} codes of {config.latent_channels} "
                               f"channels, {_describe(vqgan)} has {k} of {ch}: {trained}")
    if config.vqgan_fingerprint:
        mine = torch.tensor(vqgan_fingerprint(vqgan))
        saved = torch.tensor(config.vqgan_fingerprint)
        if mine.shape != saved.shape or not torch.allclose(mine, saved, rtol=2e-2, atol=2e-3):
            raise FeedForwardError(f"{_describe(vqgan)} has other codes than the one this feed-forward model was "
                                   f"trained with: {trained}; load that VQGAN")
    if text_dim is not None and text_dim != config.text_dim:
        raise FeedForwardError(f"this feed-forward model reads {config.text_dim}-d CLIP text embeddings "
                               f"({config.clip or '?'}); the CLIP given embeds to {text_dim}")
    if clip_spec is not None and config.clip and clip_spec != config.clip:
        log.warning("the feed-forward model was trained with CLIP %s; text is encoded with %s", config.clip,
                    clip_spec)


def save_feed_forward(net: FeedForwardNet, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None,
                      dtype: torch.dtype = torch.float32) -> Path:
    """Write the weights (as ``dtype``) and config atomically."""
    from .. import __version__

    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}
    meta = {"format": "pt", CONFIG_KEY: net.config.to_json(), "vqgan_core_version": __version__,
            "vqgan": net.config.vqgan, "clip": net.config.clip, **(extra_metadata or {})}
    return atomic_save_file(sd, path, metadata=meta)


def load_feed_forward(path: str | os.PathLike, device: torch.device | str = "cpu",
                      vqgan: nn.Module | None = None) -> FeedForwardNet:
    """Load a file written by :func:`save_feed_forward` (``demo``: the shipped one); checked against ``vqgan``."""
    from ..hub import demo

    if demo.is_demo(path):
        path = demo.feed_forward_path()
    p = Path(path)
    if not p.is_file():
        raise FeedForwardError(f"feed-forward model not found: {p}")
    sd, meta = read_safetensors(p)
    if not meta or CONFIG_KEY not in meta:
        raise FeedForwardError(f"{p}: no '{CONFIG_KEY}' in its metadata; not a feed-forward model (train one with "
                               "`python -m training.feed_forward`)")
    try:
        config = FeedForwardConfig.from_json(meta[CONFIG_KEY], f"{p}: {CONFIG_KEY} key")
    except (ValueError, TypeError) as e:
        raise FeedForwardError(f"{p}: bad {CONFIG_KEY}: {e}") from None
    net = FeedForwardNet(config)
    sd = {k: v.float() for k, v in sd.items()}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise FeedForwardError(f"{p}: weights do not fit its config (missing {sorted(missing)[:4]}, unexpected "
                               f"{sorted(unexpected)[:4]})")
    for k, v in sd.items():
        if not torch.isfinite(v).all():
            raise FeedForwardError(f"{p}: tensor {k!r} holds NaN or inf")
    if vqgan is not None:
        try:
            check_pair(config, vqgan)
        except FeedForwardError as e:
            raise FeedForwardError(f"{p}: {e}") from None
    return net.to(device).eval().requires_grad_(False)
