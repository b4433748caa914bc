"""The optimiser of a composed run as a spec (name, learning rate, schedule), built on ``torch.optim`` and
``torch.optim.lr_scheduler``.

Why a spec, not an optimiser: the optimiser belongs to the latent it moves, which exists only when a run
starts; the spec is what a user chooses (a graph node, a script) and can be shared by several runs. The
built optimiser and scheduler carry their whole state in their own ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.optim import lr_scheduler

from vqgan_core.optimizers import OPTIMIZERS, make_optimizer
from vqgan_core.registry import Registry

__all__ = ["SCHEDULERS", "OptimizerSpec", "Scheduler"]

Scheduler = lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau
SCHEDULERS: Registry[Callable[[torch.optim.Optimizer, int, float], Scheduler]] = Registry("lr schedule")


@SCHEDULERS.register("constant")
def _constant(opt: torch.optim.Optimizer, total: int, lr: float) -> Scheduler:
    """The classic fixed learning rate."""
    return lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


@SCHEDULERS.register("cosine")
def _cosine(opt: torch.optim.Optimizer, total: int, lr: float) -> Scheduler:
    """Half-cosine from lr to 0.1 lr over the planned steps: finer detail at the end."""
    return lr_scheduler.CosineAnnealingLR(opt, T_max=max(total - 1, 1), eta_min=0.1 * lr)


@SCHEDULERS.register("step")
def _step(opt: torch.optim.Optimizer, total: int, lr: float) -> Scheduler:
    """pixray's drop: x0.1 once 75 % of the planned steps are done."""
    return lr_scheduler.MultiStepLR(opt, milestones=[int(0.75 * total)], gamma=0.1)


@SCHEDULERS.register("plateau")
def _plateau(opt: torch.optim.Optimizer, total: int, lr: float) -> Scheduler:
    """Halve when the logged loss has not improved by 0.1 % for 5 checks (down to 0.01 lr)."""
    return lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=5, threshold=1e-3,
                                          min_lr=0.01 * lr)


@dataclass(frozen=True)
class OptimizerSpec:
    """Which optimiser, at which learning rate, on which schedule.

    Args:
        name: an optimiser of ``vqgan_core.optimizers`` (adam, adamw, lion, ...).
        lr: the base learning rate (classic 0.1).
        schedule: constant | cosine | step | plateau (``SCHEDULERS``).
        schedule_steps: steps the schedule spans; 0 = the steps the run plans when it starts (set it to the
            total of chained runs so the schedule spans all of them).
    """

    name: str = "adam"
    lr: float = 0.1
    schedule: str = "constant"
    schedule_steps: int = 0

    def __post_init__(self) -> None:
        OPTIMIZERS.get(self.name.lower())  # an unknown name lists the valid ones
        SCHEDULERS.get(self.schedule.lower())  # an unknown name lists the valid ones
        if not (0 < float(self.lr) < float("inf")):
            raise ValueError(f"the learning rate must be a positive finite number, got {self.lr}")
        if self.schedule_steps < 0:
            raise ValueError(f"schedule_steps must be >= 0 (0 = the run's planned steps), got {self.schedule_steps}")

    @property
    def needs_loss(self) -> bool:
        """Whether the scheduler steps on the loss (plateau): the run feeds it its logged losses."""
        return self.schedule.lower() == "plateau"

    def build(self, params: Iterable[torch.Tensor], planned_steps: int) -> tuple[torch.optim.Optimizer, Scheduler]:
        """``(optimizer, scheduler)`` over ``params`` for a run that plans ``planned_steps`` steps."""
        opt = make_optimizer(self.name, params, lr=self.lr)
        total = self.schedule_steps or max(planned_steps, 1)
        return opt, SCHEDULERS.get(self.schedule.lower())(opt, total, self.lr)

    def describe(self) -> str:
        """One line for logs."""
        return f"{self.name} lr {self.lr:g} ({self.schedule})"
