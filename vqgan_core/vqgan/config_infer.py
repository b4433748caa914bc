"""Read a VQGAN's architecture from its weights, for checkpoints whose yaml is lost or wrong.

Why: taming checkpoints need their ``model.yaml``, and the yaml is what goes missing (dead mirrors, a
download that saved the host's "link does not exist" page, a yaml of another model beside the file). Every
architecture setting that changes a weight is visible in the tensor shapes of taming's fixed key layout:
widths from the convolutions, depth from the block indices, where attention sits from the ``attn`` keys,
the quantizer from its parameters. What no weight shows is taken as taming has it: ``resolution`` 256
(only the *relative* place of attention matters), 32 GroupNorm groups, dropout 0, the legacy VQ loss.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .config import ConfigError, VQGANConfig

__all__ = ["ASSUMED", "describe", "infer_config"]

_RESOLUTION = 256
ASSUMED = "taming's 32 GroupNorm groups and plain (not l2-normalised) code lookup"


def _indices(keys: list[str], pattern: str) -> list[int]:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return sorted(found)


def infer_config(sd: Mapping[str, torch.Tensor]) -> VQGANConfig:
    """The :class:`VQGANConfig` whose VQGAN has exactly these generator weights (``first_stage_model.``
    prefix and loss keys already stripped); settings no weight shows are :data:`ASSUMED`. ConfigError says
    which key it lacked or what did not fit."""
    try:
        return _infer(sd)
    except (IndexError, ZeroDivisionError, ValueError) as e:  # malformed shapes (ConfigError is a ValueError)
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"cannot read the architecture from the weights: a tensor has an unexpected shape ({e})") from None


def _infer(sd: Mapping[str, torch.Tensor]) -> VQGANConfig:
    keys = list(sd)

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise ConfigError(f"cannot read the architecture from the weights: there is no {key!r}")
        return tuple(sd[key].shape)

    levels = _indices(keys, r"encoder\.down\.(\d+)\.")
    blocks = _indices(keys, r"encoder\.down\.0\.block\.(\d+)\.")
    if not levels or not blocks:
        raise ConfigError("cannot read the architecture from the weights: no taming encoder keys "
                          "(encoder.down.N.block.M...); is this a taming-transformers VQGAN?")
    ch = shape("encoder.conv_in.weight")[0]
    ch_mult = tuple(shape(f"encoder.down.{i}.block.0.conv2.weight")[0] // ch for i in levels)
    enc = [i for i in levels if any(k.startswith(f"encoder.down.{i}.attn.") for k in keys)]
    dec = [i for i in levels if any(k.startswith(f"decoder.up.{i}.attn.") for k in keys)]
    resolution, attn = _attention(len(levels), enc, dec)
    z_channels = shape("decoder.conv_in.weight")[1]
    gumbel = "quantize.proj.weight" in sd
    codebook = shape("quantize.embed.weight" if gumbel else "quantize.embedding.weight")
    n_labels = shape("colorize")[1] if "colorize" in sd else None
    return VQGANConfig(
        resolution=resolution, in_channels=shape("encoder.conv_in.weight")[1],
        out_ch=shape("decoder.conv_out.weight")[0], ch=ch, ch_mult=ch_mult, num_res_blocks=len(blocks),
        attn_resolutions=attn, z_channels=z_channels, double_z=shape("encoder.conv_out.weight")[0] == 2 * z_channels,
        embed_dim=shape("quant_conv.weight")[0], n_embed=codebook[0], quantizer="gumbel" if gumbel else "vq",
        n_labels=n_labels, kl_weight=1e-8 if gumbel else 5e-4,  # (GumbelVQ's default; training only)
        extra={"config_source": "inferred from the weights"},
    )


def _attention(n_levels: int, enc: list[int], dec: list[int]) -> tuple[int, tuple[int, ...]]:
    """``(resolution, attn_resolutions)`` putting attention at encoder levels ``enc`` and decoder levels ``dec``.

    taming counts the encoder's resolutions down from ``resolution`` (halving, rounding down) and the decoder's
    up from ``resolution // 2**(L-1)``: they agree (256 then serves) unless a model was trained at a size not
    divisible by its downsampling factor. Then the smallest resolution that gives both patterns is used.
    """
    for res in (_RESOLUTION, *range(2 ** (n_levels - 1), 4097)):
        enc_res = [res // 2**i for i in range(n_levels)]
        dec_res = [(res // 2 ** (n_levels - 1)) * 2 ** (n_levels - 1 - i) for i in range(n_levels)]
        attn = {enc_res[i] for i in enc} | {dec_res[i] for i in dec}
        if ([i for i in range(n_levels) if enc_res[i] in attn] == enc
                and [i for i in range(n_levels) if dec_res[i] in attn] == dec):
            return res, tuple(sorted(attn, reverse=True))
    raise ConfigError(f"cannot read the architecture from the weights: no resolution puts attention at encoder "
                      f"levels {enc} and decoder levels {dec}")


def describe(cfg: VQGANConfig) -> str:
    """One line naming what a user compares between two configs (attention as levels: 0 = full resolution)."""
    f = cfg.resolution
    levels = [i for i in range(len(cfg.ch_mult)) if f // 2**i in cfg.attn_resolutions]
    return (f"f{cfg.downsample_factor} {cfg.quantizer.upper()} VQGAN, {cfg.n_embed} codes x {cfg.embed_dim}, ch {cfg.ch}, "
            f"ch_mult {list(cfg.ch_mult)}, {cfg.num_res_blocks} res blocks, attention at levels {levels}, "
            f"z_channels {cfg.z_channels}{' (double_z)' if cfg.double_z else ''}, {cfg.in_channels} -> {cfg.out_ch} "
            "channels")
