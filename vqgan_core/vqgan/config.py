"""The typed VQGAN configuration, stored as JSON in safetensors metadata so checkpoints describe themselves."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..util.settings import reject_unknown_keys
from ..util.web_page import DEAD_LINK_HINT, is_web_page

QUANTIZERS = ("vq", "gumbel")

# taming `model.target` values we can build, and what they mean for us.
_TAMING_TARGETS = {
    "taming.models.vqgan.VQModel": "vq",
    "taming.models.vqgan.GumbelVQ": "gumbel",
    "taming.models.vqgan.VQSegmentationModel": "vq",
    "taming.models.vqgan.VQNoDiscModel": "vq",
}
_NET2NET = "taming.models.cond_transformer.Net2NetTransformer"


class ConfigError(ValueError):
    """A config (yaml, json metadata or keyword) that cannot describe a VQGAN."""


class UnreadableConfig(ConfigError):
    """A config file that is no YAML at all (a saved error page, binary junk): it says nothing about the model."""


@dataclass
class VQGANConfig:
    """Architecture of a taming-transformers VQGAN (the ``ddconfig`` plus the quantizer settings).

    Defaults are those of the released ``vqgan_imagenet_f16_16384`` model.
    """

    resolution: int = 256  # fixes where attention sits (taming counts from this, not from the runtime size)
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # downsampling factor = 2 ** (len(ch_mult) - 1)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    z_channels: int = 256
    double_z: bool = False
    embed_dim: int = 256
    n_embed: int = 16384
    quantizer: str = "vq"  # "vq" (VectorQuantizer2) or "gumbel" (GumbelQuantize)
    beta: float = 0.25  # commitment cost
    legacy: bool = True  # taming's beta bug: every released VQModel trained with legacy=True
    l2_normalize: bool = False  # ViT-VQGAN/LlamaGen-style cosine lookup (training option, not in taming)
    norm_groups: int = 32  # GroupNorm groups (taming: 32). Tiny models need >= 4 channels per group, else each
    #                        image's flat colours are normalised away (demo model: ch 32, norm_groups 8)
    kl_weight: float = 5e-4  # Gumbel KL prior weight
    temperature: float = 1.0  # Gumbel softmax temperature (not saved by taming; 1.0 after loading)
    n_labels: int | None = None  # VQSegmentationModel: size of the random `colorize` buffer
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (training config name, ...)

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(c) for c in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        for name in ("resolution", "ch", "num_res_blocks", "z_channels", "embed_dim", "n_embed"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.ch_mult:
            raise ConfigError("ch_mult must not be empty")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % 32]
        if self.ch % 32 or bad:
            raise ConfigError(f"GroupNorm needs channel counts divisible by 32: ch={self.ch}, ch_mult={self.ch_mult}")
        if self.norm_groups <= 0 or 32 % self.norm_groups:
            raise ConfigError(f"norm_groups must divide 32 (channel counts are multiples of 32), got {self.norm_groups}")
        if self.quantizer == "gumbel" and self.embed_dim != self.z_channels:
            raise ConfigError(
                f"a Gumbel VQGAN needs embed_dim == z_channels (taming feeds quant_conv output to proj), "
                f"got embed_dim={self.embed_dim}, z_channels={self.z_channels}"
            )

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each axis."""
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d

    def to_json(self) -> str:
        """Compact JSON, as stored in safetensors metadata under ``vqgan_config``."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VQGANConfig:
        """Build from a dict, rejecting unknown keys by name."""
        reject_unknown_keys(cls, d, "VQGAN config keys", ConfigError)
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> VQGANConfig:
        """Inverse of :meth:`to_json`."""
        try:
            return cls.from_dict(json.loads(s))
        except json.JSONDecodeError as e:
            raise ConfigError(f"VQGAN config metadata is not valid JSON: {e}") from None

    @classmethod
    def from_taming_yaml(cls, source: str | os.PathLike | dict[str, Any]) -> VQGANConfig:
        """Read a taming-transformers ``model.yaml`` (VQModel, GumbelVQ, segmentation or Net2Net first stage)."""
        where = str(source) if not isinstance(source, dict) else "<dict>"
        if isinstance(source, dict):
            doc = source
        else:
            path = Path(source)
            try:
                if is_web_page(path):
                    raise UnreadableConfig(f"{path} is a web page (HTML), not a taming model.yaml: {DEAD_LINK_HINT}")
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {path}") from None
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise UnreadableConfig(f"{path} is not a readable YAML file: {e}") from None
        try:
            model = doc["model"]
            target = model["target"]
            params = model.get("params", {}) or {}
        except (KeyError, TypeError):
            raise ConfigError(f"{where}: expected a taming model.yaml with `model.target` and `model.params`") from None
        if target == _NET2NET:
            try:
                first = params["first_stage_config"]
            except KeyError:
                raise ConfigError(f"{where}: Net2NetTransformer config has no first_stage_config") from None
            return cls.from_taming_yaml({"model": first}).with_extra(source_target=target, key_prefix="first_stage_model.")
        if target not in _TAMING_TARGETS:
            raise ConfigError(
                f"{where}: model.target {target!r} is not a VQGAN this package can build; "
                f"supported: {sorted([*_TAMING_TARGETS, _NET2NET])}"
            )
        if params.get("remap"):
            raise ConfigError(f"{where}: quantizer `remap` (index remapping) is not supported")
        dd = params.get("ddconfig")
        if not isinstance(dd, dict):
            raise ConfigError(f"{where}: model.params.ddconfig is missing")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in dd.items() if k in known}
        for k in ("embed_dim", "n_embed"):
            if k not in params:
                raise ConfigError(f"{where}: model.params.{k} is missing")
            kw[k] = params[k]
        kw["quantizer"] = _TAMING_TARGETS[target]
        if "kl_weight" in params:
            kw["kl_weight"] = params["kl_weight"]
        if target.endswith("VQSegmentationModel"):
            kw["n_labels"] = params.get("n_labels")
        ignored = sorted(set(dd) - known - {"give_pre_end", "tanh_out"})
        cfg = cls(**kw)
        return cfg.with_extra(source_target=target, **({"ignored_ddconfig": ignored} if ignored else {}))

    def with_extra(self, **items: Any) -> VQGANConfig:
        """Copy with provenance entries added to ``extra``."""
        return dataclasses.replace(self, extra={**self.extra, **items})
