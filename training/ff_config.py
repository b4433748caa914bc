"""Typed settings of a feed-forward training run (``python -m training.feed_forward --config FILE``).

Sections: ``model`` (the network's own knobs; its input and output sizes come from the CLIP and the VQGAN),
``loss`` (the composed CLIP objective the optimiser uses: cutouts, augmentations, TV), and the run itself.
Unknown keys are errors listing the valid ones (``training.config.build_config``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .config import TrainConfigError, build_config, read_config_doc

__all__ = ["FFLossConfig", "FFModelConfig", "FFTrainConfig"]


@dataclass
class FFModelConfig:
    """``vqgan_core.FeedForwardConfig`` fields a run chooses (see there)."""

    noise_dim: int = 0
    base: tuple[int, ...] = (4, 4)
    width: int = 256
    min_width: int = 64
    blocks: int = 1
    output: str = "latent"  # latent | logits


@dataclass
class FFLossConfig:
    """The objective: a CLIP loss with these views plus an optional TV term (``vqgan_core`` terms, composed)."""

    cutn: int = 8
    cutout_method: str = "latest"
    cut_pow: float = 1.0
    augments: tuple[str, ...] = ("Af", "Pe", "Ji", "Er")
    aug_noise: float = 0.1
    aug_padding: str = "zeros"
    clip_weight: float = 1.0
    tv_weight: float = 0.0


@dataclass
class FFTrainConfig:
    """One feed-forward training run."""

    name: str = "feed_forward"
    vqgan: str = "demo"  # a VQGAN file (.ckpt + .yaml, safetensors) or "demo"
    clip: str = "demo"  # a CLIP spec: "demo", "ViT-B-32:openai", a local open_clip folder
    size: tuple[int, ...] = (64, 64)  # image height, width in pixels (the latent grid follows from the VQGAN)
    split: str = "train"  # COCO layout: annotations/captions_{split}2017.json
    holdout: list[str] = field(default_factory=list)  # phrases whose captions are never trained on
    val_captions: list[str] = field(default_factory=list)  # drawn at every validation (default: some of each set)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0: torch's default)
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32)
    log_every: int = 10
    val_every: int = 200  # 0: only at the end
    save_every: int = 200  # 0: only at the end
    keep_last: int = 2
    tensorboard: bool = True
    save_dtype: str = "float32"  # float32 | float16 (the shipped demo file)
    model: FFModelConfig = field(default_factory=FFModelConfig)
    loss: FFLossConfig = field(default_factory=FFLossConfig)

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) <= 0:
            raise TrainConfigError(f"size must be [height, width] in pixels, got {list(self.size)}")
        for k in ("steps", "batch_size"):
            if getattr(self, k) < 1:
                raise TrainConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        for k in ("warmup", "log_every", "val_every", "save_every", "keep_last", "threads"):
            if getattr(self, k) < 0:
                raise TrainConfigError(f"{k} must be >= 0, got {getattr(self, k)}")
        if not self.lr > 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise TrainConfigError(f"precision must be fp32, bf16 or auto, got {self.precision!r}")
        if self.save_dtype not in ("float32", "float16"):
            raise TrainConfigError(f"save_dtype must be float32 or float16, got {self.save_dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (stored in checkpoints and the model's metadata)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def load(cls, path: str | None, overrides: list[str] | None = None) -> FFTrainConfig:
        """Read YAML/JSON ``path`` (None: defaults) and apply ``key.sub=value`` overrides."""
        return build_config(cls, read_config_doc(path, overrides))
