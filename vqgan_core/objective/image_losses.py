"""Image-space loss terms by name (pixray's extra losses): symmetry, saturation, brightness, contrast, smoothness,
plain_border.

Each term maps the rendered image ``[B, 3, H, W]`` in [0, 1] to ``[B]`` and is added with its weight.
Convention: a **positive weight asks for more of the named property** (more symmetric, more
saturated, brighter, more contrast, smoother); a negative weight asks for less. Written as
``"symmetry:0.5,saturation:0.2"`` in settings, the CLI (``--image-losses``) and the Optimize node.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..util.registry import Registry
from .losses import tv_loss

__all__ = ["IMAGE_LOSSES", "image_loss_names", "image_losses", "parse_image_losses"]

IMAGE_LOSSES: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("image loss")

_LUMA = (0.299, 0.587, 0.114)


def _luma(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(1)
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


@IMAGE_LOSSES.register("symmetry")
def _asymmetry(img: torch.Tensor) -> torch.Tensor:
    """Mean squared difference to the left-right mirror image (0 for a mirror-symmetric image)."""
    return (img - img.flip(-1)).pow(2).flatten(1).mean(1)


@IMAGE_LOSSES.register("symmetry_vertical")
def _asymmetry_v(img: torch.Tensor) -> torch.Tensor:
    """Mean squared difference to the top-bottom mirror image."""
    return (img - img.flip(-2)).pow(2).flatten(1).mean(1)


@IMAGE_LOSSES.register("saturation")
def _desaturation(img: torch.Tensor) -> torch.Tensor:
    """Minus the mean chroma (max - min over RGB), so a positive weight saturates."""
    return -(img.amax(1) - img.amin(1)).flatten(1).mean(1)


@IMAGE_LOSSES.register("brightness")
def _darkness(img: torch.Tensor) -> torch.Tensor:
    """Minus the mean luma (Rec. 601), so a positive weight brightens."""
    return -_luma(img).flatten(1).mean(1)


@IMAGE_LOSSES.register("contrast")
def _flatness(img: torch.Tensor) -> torch.Tensor:
    """Minus the standard deviation of luma, so a positive weight raises contrast."""
    return -_luma(img).flatten(1).std(1)


@IMAGE_LOSSES.register("smoothness")
def _roughness(img: torch.Tensor) -> torch.Tensor:
    """Total variation (the same term as ``tv_weight``)."""
    return tv_loss(img)


@IMAGE_LOSSES.register("plain_border")
def _busy_border(img: torch.Tensor) -> torch.Tensor:
    """Colour variance of the outer frame (1/16 of the shorter side): a positive weight asks for one flat frame,
    so the subject stays inside the picture instead of being cut by its edges (icons, stickers, product shots)."""
    h, w = img.shape[-2:]
    k = max(1, min(h, w) // 16)
    frame = torch.cat([img[..., :k, :].flatten(2), img[..., -k:, :].flatten(2),
                       img[..., k:-k, :k].flatten(2), img[..., k:-k, -k:].flatten(2)], dim=2)
    return (frame - frame.mean(2, keepdim=True)).pow(2).mean((1, 2))


def image_loss_names() -> list[str]:
    """Valid loss names."""
    return IMAGE_LOSSES.names()


def parse_image_losses(spec: str | dict[str, float] | None) -> dict[str, float]:
    """``"symmetry:0.5,saturation:0.2"`` (or a dict) -> ``{name: weight}``; unknown names list the valid ones."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in spec.split(","):
            if not part.strip():
                continue
            name, _, weight = part.partition(":")
            try:
                items.append((name.strip(), float(weight) if weight.strip() else 1.0))
            except ValueError:
                raise ValueError(f"image loss {part.strip()!r}: the weight after ':' must be a number") from None
    out: dict[str, float] = {}
    for name, weight in items:
        IMAGE_LOSSES.get(name)  # raises with the valid names
        if name in out:
            raise ValueError(f"image loss {name!r} is given twice")
        if not math.isfinite(float(weight)):
            raise ValueError(f"image loss {name!r}: the weight must be a finite number, got {weight}")
        out[name] = float(weight)
    return out


def image_losses(img: torch.Tensor, weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of the named terms per item: ``[B, 3, H, W]`` -> ``[B]``."""
    total = torch.zeros(img.shape[0], device=img.device, dtype=img.dtype)
    for name, w in weights.items():
        total = total + w * IMAGE_LOSSES.get(name)(img)
    return total
