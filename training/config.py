"""Typed training configuration: one dataclass per section, loaded from YAML/JSON, with ``key.sub=value`` overrides.

Unknown keys are errors that list the valid keys, so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TrainConfigError(ValueError):
    """A training config file or override that cannot be used."""


@dataclass
class DataConfig:
    """Where images come from and how they are cropped."""

    path: str = ""  # COCO 2017 root (train2017/, val2017/, annotations/) or any image folder
    kind: str = "auto"  # "auto" | "coco" | "folder"
    val_path: str = ""  # optional separate validation folder; COCO roots use val2017/ automatically
    val_fraction: float = 0.02  # plain folders without val_path: hold out this fraction (at least 1 image)
    resolution: int = 256  # training crop size (square)
    min_size: int = 0  # images whose short side is below this are skipped (0: resolution // 2)
    random_crop: bool = True  # SmallestMaxSize + random crop (taming); False: centre crop
    num_workers: int = 4
    val_max_images: int = 256


@dataclass
class LossConfig:
    """VQLPIPSWithDiscriminator settings (taming names) plus where the LPIPS weights come from."""

    perceptual_weight: float = 1.0  # 0 turns LPIPS off
    lpips_weights: str = ""  # LPIPS safetensors (ours / taming keys) or taming vgg.pth (lin layers)
    vgg_weights: str = ""  # torchvision vgg16 ImageNet weights file (vgg16-397923af.pth or safetensors)
    lpips_random: bool = False  # allow random LPIPS weights (tests, benchmarks); never for real training
    lpips_chns: tuple[int, ...] = (64, 128, 256, 512, 512)
    disc_start: int = 0
    disc_weight: float = 0.75
    disc_factor: float = 1.0
    disc_num_layers: int = 2
    disc_ndf: int = 64
    disc_loss: str = "hinge"  # "hinge" | "vanilla"
    codebook_weight: float = 1.0


@dataclass
class OptimConfig:
    """Two Adams (autoencoder, discriminator) as in taming."""

    base_learning_rate: float = 4.5e-6  # lr = base * batch * grad_accum * world_size (taming main.py) ...
    learning_rate: float = 0.0  # ... unless this is > 0
    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class TrainLoopConfig:
    """Step loop, precision and speed options."""

    batch_size: int = 8  # per process
    grad_accum: int = 1
    max_steps: int = 100_000
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    precision: str = "auto"  # "auto" (bf16 on CUDA and on CPUs with native bf16, else fp32) | "bf16" | "fp16" | "fp32"
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the autoencoder and discriminator
    shared_forward: bool = True  # one AE forward for the G and D steps (taming recomputes it: False)
    ema: bool = False
    ema_decay: float = 0.999
    grad_clip: float = 0.0  # 0: off


@dataclass
class CodebookConfig:
    """Codebook options beyond taming; each is off by default."""

    kmeans_init: bool = False  # k-means init of the codebook from encoder outputs before step 0
    kmeans_batches: int = 8
    kmeans_iters: int = 20
    dead_code_restart: bool = False  # re-seed codes unused for `dead_code_every` steps with encoder outputs
    dead_code_every: int = 200
    dead_code_threshold: float = 1.0  # restart codes hit fewer than this many times in the window


@dataclass
class LogConfig:
    """How often to log, validate and checkpoint."""

    every: int = 50
    image_every: int = 500
    val_every: int = 2000
    ckpt_every: int = 2000
    keep_last: int = 3  # periodic checkpoints kept (0: all)
    tensorboard: bool = True
    progress: bool = True
    inception_weights: str = ""  # torchvision inception_v3 weights file: enables rFID in validation


@dataclass
class InitConfig:
    """Start point: empty = from scratch."""

    from_checkpoint: str = ""  # taming .ckpt, our checkpoint folder, or a VQGAN .safetensors
    taming_yaml: str = ""  # model.yaml for a taming .ckpt (else the `model` section is used)
    load_discriminator: bool = True
    load_optimizer: bool = True


@dataclass
class TrainConfig:
    """Everything a run needs. ``model`` holds ``vqgan_core.VQGANConfig`` fields."""

    name: str = "vqgan"
    out: str = "runs/vqgan"
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    log: LogConfig = field(default_factory=LogConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (stored in checkpoints)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a nested dict, rejecting unknown keys."""
        return _build(cls, d, "")

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read YAML/JSON ``path`` and apply ``key.sub=value`` overrides."""
        return cls.from_dict(read_config_doc(path, overrides))


def read_config_doc(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The nested dict of a YAML/JSON config file (None: empty) with ``key.sub=value`` overrides applied."""
    doc: Any = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TrainConfigError(f"config file not found: {path}") from None
        try:
            doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise TrainConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
        doc = doc or {}
        if not isinstance(doc, dict):
            raise TrainConfigError(f"{path}: expected a mapping of settings, got {type(doc).__name__}")
    for item in overrides or []:
        apply_override(doc, item)
    return doc


def build_config(cls: type, d: dict[str, Any]) -> Any:
    """Any config dataclass from a nested dict: unknown keys are errors listing the valid ones, values coerced."""
    return _build(cls, d, "")


def apply_override(doc: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested dict; the value is parsed as YAML (``1e-4``, ``[1,2]``)."""
    if "=" not in item:
        raise TrainConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    parts = key.strip().lstrip("-").split(".")
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise TrainConfigError(f"override {item!r}: {p!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise TrainConfigError(f"{where or 'config'}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise TrainConfigError(f"unknown config keys {[where + k for k in unknown]}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in d.items():
        kw[k] = _coerce(hints[k], v, f"{where}{k}")
    return cls(**kw)


def _coerce(tp: Any, v: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, where + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise TrainConfigError(f"{where}: expected a list, got {v!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(inner, x, where) for x in v)
    if origin is dict or tp is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        return v
    try:
        if tp is bool:
            if isinstance(v, str):
                if v.lower() in ("true", "1", "yes"):
                    return True
                if v.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(v)
            return bool(v)
        if tp is int:
            if isinstance(v, str):  # YAML 1.1 reads "1e3" as a string
                v = float(v)
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError(v)
            return int(v)
        if tp is float:
            return float(v)
        if tp is str:
            return "" if v is None else str(v)
    except (TypeError, ValueError):
        raise TrainConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {v!r}") from None
    return v
