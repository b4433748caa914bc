"""The optimiser of a run as a spec (name, learning rate, schedule), built on ``torch.optim`` and
``torch.optim.lr_scheduler``.

Why a spec, not an optimiser: the optimiser belongs to the latent it moves, which exists only when a run
starts; the spec is what a user chooses (a graph node, a script) and can be shared by several runs.

The schedule is a torch scheduler driving a one-parameter *unit* optimiser (learning rate 1): its learning
rate is the run's multiplier (:class:`ScheduleFactor`), applied to the run's own learning rate every step. So
a resumed run may change ``lr`` and keep its schedule's position and state (plateau's best loss), and a
scheduler's state never depends on the optimiser it happens to sit on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import lr_scheduler

from ..util.registry import Registry
from .optimizers import OPTIMIZERS, make_optimizer

__all__ = ["SCHEDULERS", "OptimizerSpec", "ScheduleFactor"]

Scheduler = lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau
SCHEDULERS: Registry[Callable[..., Scheduler]] = Registry("lr schedule")


@SCHEDULERS.register("constant")
def _constant(opt: torch.optim.Optimizer, total: int) -> Scheduler:
    """The classic fixed learning rate."""
    return lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


@SCHEDULERS.register("cosine")
def _cosine(opt: torch.optim.Optimizer, total: int, min_factor: float = 0.1) -> Scheduler:
    """Half-cosine from 1 to ``min_factor`` over the planned steps: finer detail at the end."""
    return lr_scheduler.CosineAnnealingLR(opt, T_max=max(total - 1, 1), eta_min=min_factor)


@SCHEDULERS.register("step")
def _step(opt: torch.optim.Optimizer, total: int, at: float = 0.75, drop: float = 0.1) -> Scheduler:
    """pixray's drop: x``drop`` once ``at`` of the planned steps are done."""
    return lr_scheduler.MultiStepLR(opt, milestones=[int(at * total)], gamma=drop)


@SCHEDULERS.register("plateau")
def _plateau(opt: torch.optim.Optimizer, total: int, factor: float = 0.5, patience: int = 5,
             threshold: float = 1e-3, min_factor: float = 0.01) -> Scheduler:
    """Halve when the logged loss has not improved by ``threshold`` for ``patience`` checks (down to 0.01). The
    threshold is absolute: right for negative losses too (negative prompt weights), where torch's relative mode
    would call a worsening an improvement."""
    return lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=factor, patience=patience, threshold=threshold,
                                          threshold_mode="abs", min_lr=min_factor)


class ScheduleFactor:
    """A run's learning-rate multiplier: schedule ``name`` over ``total`` steps (``kwargs`` tune it), read with
    :meth:`factor`, moved on with :meth:`step` (after each optimiser step) and :meth:`observe` (logged losses)."""

    def __init__(self, name: str, total: int, **kwargs: Any) -> None:
        self.name = name.lower()
        self._unit = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        self.scheduler = SCHEDULERS.get(self.name)(self._unit, max(int(total), 1), **kwargs)
        self.needs_loss = isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau)

    def factor(self) -> float:
        """The multiplier for the next step."""
        return float(self._unit.param_groups[0]["lr"])

    def step(self) -> None:
        """One step done (a loss-driven schedule moves in :meth:`observe` instead)."""
        if not self.needs_loss:
            self._unit.step()  # (no gradient: nothing moves; keeps torch's order check quiet)
            self.scheduler.step()

    def advance(self, steps: int) -> None:
        """Skip ``steps`` steps (a run that goes on from a step of a longer one, without saved state)."""
        for _ in range(int(steps)):
            self.step()

    def observe(self, loss: float) -> None:
        """A logged loss (plateau only; NaN is never an improvement)."""
        if self.needs_loss and math.isfinite(loss):
            self.scheduler.step(loss)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state and the current multiplier (plain JSON types: it travels in latent files)."""
        sd = dict(self.scheduler.state_dict())
        if isinstance(sd.get("milestones"), Counter):  # MultiStepLR: {step: count}, JSON keeps only lists
            sd["milestones"] = [[int(k), int(v)] for k, v in sd["milestones"].items()]
        return {"scheduler": sd, "factor": self.factor()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from :meth:`state_dict` of the same schedule."""
        sd = dict(state["scheduler"])
        if "milestones" in sd:
            sd["milestones"] = Counter({int(k): int(v) for k, v in sd["milestones"]})
        factor = float(state["factor"])
        self.scheduler.load_state_dict(sd)
        self._unit.param_groups[0]["lr"] = factor


@dataclass(frozen=True)
class OptimizerSpec:
    """Which optimiser, at which learning rate, on which schedule.

    Args:
        name: an optimiser of ``vqgan_core.engine.optimizers`` (adam, adamw, lion, ...).
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
        SCHEDULERS.get(self.schedule.lower())
        if not (0 < float(self.lr) < float("inf")):
            raise ValueError(f"the learning rate must be a positive finite number, got {self.lr}")
        if self.schedule_steps < 0:
            raise ValueError(f"schedule_steps must be >= 0 (0 = the run's planned steps), got {self.schedule_steps}")

    def build(self, params: Iterable[torch.Tensor], planned_steps: int) -> tuple[torch.optim.Optimizer, ScheduleFactor]:
        """``(optimizer, schedule)`` over ``params`` for a run that plans ``planned_steps`` steps."""
        opt = make_optimizer(self.name, params, lr=self.lr)
        return opt, ScheduleFactor(self.schedule, self.schedule_steps or max(planned_steps, 1))
