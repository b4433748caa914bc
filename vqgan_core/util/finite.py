"""Non-finite values: refused where they enter (settings, weights, tensors in files), and a run whose loss becomes
NaN or infinite stops with an error that names the step and the likely cause, keeping the last finite image.

Why: a NaN anywhere turns every later step into NaN, and the decoder turns a NaN latent into a black image
that looked like success (exit code 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["LastFinite", "NonFiniteLossError", "check_finite", "check_finite_tensor", "loss_error"]


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite; ``result`` holds the run's last finite state (what a caller can still save)."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


def check_finite(value: float, what: str) -> float:
    """``value`` as a float, or a ValueError naming ``what`` when it is NaN or infinite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return v


def check_finite_tensor(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t`` when it is a floating tensor with only finite values, else a ValueError naming ``what``."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got "
                         f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
    bad = (~torch.isfinite(t)).sum().item()
    if bad:
        raise ValueError(f"{what} holds {bad} NaN or infinite value(s) of {t.numel()}")
    return t


def loss_error(value: float, step: int, kept_step: int | None, hints: str = "") -> NonFiniteLossError:
    """The error of a run whose loss is ``value`` (NaN/inf) at ``step``; ``kept_step``: the step of the image kept."""
    kept = f" The last finite image (step {kept_step}) was kept." if kept_step is not None else ""
    cause = hints or "a weight or learning rate too large for this model, or NaN in an input"
    return NonFiniteLossError(f"the loss became {value} at step {step}: likely {cause}.{kept}")


class LastFinite:
    """The last latent whose loss was finite (taken on the steps that read the loss), for a run that goes NaN."""

    def __init__(self, step: int, latent: torch.Tensor) -> None:
        self.step, self.latent = step, latent

    def update(self, value: float, step: int, latent_before: torch.Tensor | None) -> bool:
        """Record ``latent_before`` (the latent step ``step`` was computed on) when ``value`` is finite; False when
        it is not."""
        if not math.isfinite(value):
            return False
        if latent_before is not None:
            self.step, self.latent = step, latent_before
        return True
