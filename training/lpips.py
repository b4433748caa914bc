"""LPIPS-VGG perceptual distance with taming's module tree, so ``loss.perceptual_loss.*`` loads unchanged.

Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric". Key names follow
``taming/modules/losses/lpips.py``: ``scaling_layer.{shift,scale}``, ``net.slice{1..5}.{i}`` (torchvision VGG16
``features`` indices) and ``lin{0..4}.model.1.weight`` (index 0 is a Dropout). Nothing can be downloaded here,
so weights come from files the user provides; random weights only when explicitly allowed (tests, benchmarks).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from vqgan_core import read_safetensors, safe_torch_load

logger = logging.getLogger(__name__)

# VGG16 `features` layout: (slice, [(index, kind)]) with "c" = 3x3 conv, "r" = ReLU, "p" = 2x2 max-pool.
_SLICES = (
    (1, [(0, "c"), (1, "r"), (2, "c"), (3, "r")]),
    (2, [(4, "p"), (5, "c"), (6, "r"), (7, "c"), (8, "r")]),
    (3, [(9, "p"), (10, "c"), (11, "r"), (12, "c"), (13, "r"), (14, "c"), (15, "r")]),
    (4, [(16, "p"), (17, "c"), (18, "r"), (19, "c"), (20, "r"), (21, "c"), (22, "r")]),
    (5, [(23, "p"), (24, "c"), (25, "r"), (26, "c"), (27, "r"), (28, "c"), (29, "r")]),
)
VGG_CHANNELS = (64, 128, 256, 512, 512)


class VGG16Slices(nn.Module):
    """VGG16 conv1_1..conv5_3 split after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

    def __init__(self, chns: tuple[int, ...] = VGG_CHANNELS) -> None:
        super().__init__()
        c_in = 3
        for s, layers in _SLICES:
            seq = nn.Sequential()
            for idx, kind in layers:
                if kind == "c":
                    seq.add_module(str(idx), nn.Conv2d(c_in, chns[s - 1], 3, padding=1))
                    c_in = chns[s - 1]
                elif kind == "r":
                    seq.add_module(str(idx), nn.ReLU(inplace=False))
                else:
                    seq.add_module(str(idx), nn.MaxPool2d(2, 2))
            self.add_module(f"slice{s}", seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Five feature maps, one per slice."""
        outs = []
        for s in range(1, 6):
            x = getattr(self, f"slice{s}")(x)
            outs.append(x)
        return outs


class NetLinLayer(nn.Module):
    """Dropout + 1x1 conv without bias (``model.1.weight``), as in LPIPS."""

    def __init__(self, chn_in: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(chn_in, 1, 1, bias=False))


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG; ``forward(x, y)`` returns ``[B,1,1,1]`` distances for images in [-1,1].

    Always in eval mode (its dropout off) and without parameter gradients.
    """

    def __init__(self, chns: tuple[int, ...] = VGG_CHANNELS) -> None:
        super().__init__()
        if len(chns) != 5:
            raise ValueError(f"LPIPS needs 5 channel widths (one per VGG slice), got {chns}")
        self.chns = tuple(int(c) for c in chns)
        self.scaling_layer = _ScalingLayer()
        self.net = VGG16Slices(self.chns)
        for k, c in enumerate(self.chns):
            self.add_module(f"lin{k}", NetLinLayer(c))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode: LPIPS is a fixed metric, not a trained part."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Perceptual distance per sample.

        Shape:
            x, y: ``[B,3,H,W]`` in [-1,1]; ``y`` is the target (no gradient needed). Returns ``[B,1,1,1]``.
        """
        fx = self.net(self.scaling_layer(x))
        with torch.no_grad():
            fy = self.net(self.scaling_layer(y))
        val = None
        for k in range(5):
            d = (_unit(fx[k].float()) - _unit(fy[k].float())) ** 2
            lin = getattr(self, f"lin{k}").model
            r = lin(d.to(lin[1].weight.dtype)).float().mean([2, 3], keepdim=True)
            val = r if val is None else val + r
        return val


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)


class _ScalingLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def _read(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS/VGG weights file not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    sd = safe_torch_load(path)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def lpips_keys_from(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pick LPIPS keys out of a state dict in any known layout.

    Handles taming training checkpoints (``loss.perceptual_loss.*``), our own LPIPS files (bare names),
    LPIPS' ``vgg.pth`` (``lin{k}.model.1.weight``) and torchvision VGG16 (``features.{i}.*``).
    """
    out: dict[str, torch.Tensor] = {}
    slice_of = {idx: s for s, layers in _SLICES for idx, kind in layers if kind == "c"}
    for k, v in sd.items():
        k2 = k.removeprefix("loss.perceptual_loss.")
        if k2.startswith("features."):  # torchvision VGG16
            _, idx, what = k2.split(".")
            if int(idx) in slice_of:
                out[f"net.slice{slice_of[int(idx)]}.{idx}.{what}"] = v
        elif k2.startswith(("net.slice", "scaling_layer.")) or (k2.startswith("lin") and ".model.1." in k2):
            out[k2] = v
    return out


def build_lpips(
    chns: tuple[int, ...] = VGG_CHANNELS,
    lpips_weights: str = "",
    vgg_weights: str = "",
    allow_random: bool = False,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> LPIPS:
    """LPIPS with weights from files (and/or a taming checkpoint's ``loss.perceptual_loss.*``).

    Raises a ValueError naming what is missing unless ``allow_random``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random weights (tests) must not depend on what was built before
        model = LPIPS(chns)
    found: dict[str, torch.Tensor] = {}
    for src in (vgg_weights, lpips_weights):
        if src:
            found.update(lpips_keys_from(_read(src)))
    if state_dict:
        found.update(lpips_keys_from(state_dict))
    own = model.state_dict()
    bad = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in found.items() if k in own and v.shape != own[k].shape}
    if bad:
        raise ValueError(f"LPIPS weights do not match loss.lpips_chns={model.chns}: (file, expected) shapes {bad}")
    model.load_state_dict({k: v for k, v in found.items() if k in own}, strict=False)
    missing = sorted(k for k in own if k not in found and not k.startswith("scaling_layer."))
    if missing:
        msg = (
            f"LPIPS weights missing {len(missing)} tensors (e.g. {missing[:3]}). Provide loss.vgg_weights "
            "(torchvision vgg16 ImageNet file) and loss.lpips_weights (LPIPS vgg.pth or an LPIPS safetensors), "
            "fine-tune from a taming training checkpoint, set loss.perceptual_weight=0, or loss.lpips_random=true "
            "for tests only"
        )
        if not allow_random:
            raise ValueError(msg)
        logger.warning("using RANDOM weights for %d LPIPS tensors (loss.lpips_random=true)", len(missing))
    return model
