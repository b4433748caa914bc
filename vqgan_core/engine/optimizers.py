"""Optimiser registry for latent optimisation (names are case-insensitive).

torch provides Adam, AdamW, Adagrad, Adamax, RMSprop, RAdam, NAdam and SGD. AdamP, Lion, MADGRAD
and AdaBelief come from ``timm.optim`` (maintained; already installed as an open_clip dependency).
DiffGrad is not offered: the only package providing it (torch-optimizer) is unmaintained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..util.registry import Registry

__all__ = ["OPTIMIZERS", "make_optimizer", "optimizer_names"]

OPTIMIZERS: Registry = Registry("optimizer")

_TORCH = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "adamax": torch.optim.Adamax,
    "rmsprop": torch.optim.RMSprop,
    "radam": torch.optim.RAdam,
    "nadam": torch.optim.NAdam,
    "sgd": torch.optim.SGD,
}
for _name, _cls in _TORCH.items():
    OPTIMIZERS.register(_name)(_cls)


def _timm(cls_name: str) -> Callable[..., torch.optim.Optimizer]:
    def factory(params: Iterable, lr: float, **kw) -> torch.optim.Optimizer:
        import timm.optim  # lazy: only needed for these optimisers

        return getattr(timm.optim, cls_name)(params, lr=lr, **kw)

    factory.__name__ = cls_name
    return factory


for _name, _cls_name in {"adamp": "AdamP", "lion": "Lion", "madgrad": "MADGRAD", "adabelief": "AdaBelief"}.items():
    OPTIMIZERS.register(_name)(_timm(_cls_name))


def optimizer_names() -> list[str]:
    """Valid optimiser names."""
    return list(OPTIMIZERS.names())


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float, **kwargs) -> torch.optim.Optimizer:
    """Build optimiser ``name`` (e.g. ``"Adam"``, ``"adamw"``) over ``params``.

    Raises:
        ValueError: unknown name (the message lists the valid names).
    """
    factory = OPTIMIZERS.get(name.lower())
    opt = factory(params, lr=lr, **kwargs)
    for g in opt.param_groups:
        g.setdefault("initial_lr", lr)
    return opt
