"""Exponential moving average of the generator weights (Polyak averaging), kept in float32."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy of a module's floating-point state; ``decay`` ramps up as ``(1+t)/(10+t)`` early on."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = float(decay)
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend the current weights in after optimiser step ``step``."""
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        sd = model.state_dict()
        keys = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in keys], [sd[k].detach().float() for k in keys], 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Shadow weights (float32)."""
        return dict(self.shadow)

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Restore shadow weights, checking that the keys match."""
        missing = sorted(set(self.shadow) - set(sd))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} tensors (e.g. {missing[:3]})")
        for k in self.shadow:
            self.shadow[k].copy_(sd[k])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the shadow weights into ``model`` (cast to its dtypes)."""
        sd = model.state_dict()
        for k, v in self.shadow.items():
            sd[k].copy_(v.to(sd[k].dtype))
