"""Learning-rate schedules as host-side multipliers (no device sync).

``constant``; ``cosine`` (to ``min_factor`` at the end); ``step`` (pixray's ÷10 drop at 75 % of the
run); ``plateau`` (÷``factor`` when the loss has not improved for ``patience`` checks; needs the loss,
so it is only evaluated on the loop's logging steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vqgan_core.registry import Registry

__all__ = ["LR_SCHEDULES", "LRSchedule", "make_lr_schedule"]

LR_SCHEDULES: Registry = Registry("lr_schedule")


@dataclass
class LRSchedule:
    """Multiplier of the base learning rate at each step; ``observe`` feeds the loss (plateau only)."""

    total_steps: int

    needs_loss = False

    def factor(self, step: int) -> float:
        """Multiplier at ``step`` (0-based)."""
        return 1.0

    def observe(self, loss: float) -> None:
        """Report a loss value (ignored unless the schedule needs it)."""

    def state_dict(self) -> dict[str, float]:
        """What a resumed run needs to go on exactly (empty: the step alone decides)."""
        return {}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Go on from :meth:`state_dict` of the same schedule."""


@LR_SCHEDULES.register("constant")
class ConstantLR(LRSchedule):
    """The classic fixed learning rate."""


@LR_SCHEDULES.register("cosine")
@dataclass
class CosineLR(LRSchedule):
    """Half-cosine decay from 1 to ``min_factor``."""

    min_factor: float = 0.1

    def factor(self, step: int) -> float:  # noqa: D102
        t = min(step / max(self.total_steps - 1, 1), 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))


@LR_SCHEDULES.register("step")
@dataclass
class StepDropLR(LRSchedule):
    """pixray's drop: multiply by ``drop`` once ``at`` of the run is done."""

    at: float = 0.75
    drop: float = 0.1

    def factor(self, step: int) -> float:  # noqa: D102
        return self.drop if step >= int(self.at * self.total_steps) else 1.0


@LR_SCHEDULES.register("plateau")
@dataclass
class PlateauLR(LRSchedule):
    """Divide by ``1/factor`` after ``patience`` observed losses without relative improvement."""

    factor_drop: float = 0.5
    patience: int = 5
    threshold: float = 1e-3
    min_factor: float = 0.01

    needs_loss = True

    def __post_init__(self) -> None:
        self._best = math.inf
        self._bad = 0
        self._f = 1.0

    def factor(self, step: int) -> float:  # noqa: D102
        return self._f

    def observe(self, loss: float) -> None:  # noqa: D102
        # relative, also right for negative losses; the first reading is the best so far (inf - inf is nan)
        if self._best == math.inf or loss < self._best - self.threshold * abs(self._best):
            self._best, self._bad = loss, 0
            return
        self._bad += 1
        if self._bad > self.patience:
            self._f = max(self._f * self.factor_drop, self.min_factor)
            self._bad = 0

    def state_dict(self) -> dict[str, float]:  # noqa: D102 - the best loss so far survives a resume
        return {"best": self._best, "bad": self._bad, "factor": self._f}

    def load_state_dict(self, state: dict[str, float]) -> None:  # noqa: D102
        self._best, self._bad, self._f = float(state["best"]), int(state["bad"]), float(state["factor"])


def make_lr_schedule(name: str, total_steps: int, **kwargs) -> LRSchedule:
    """Build schedule ``name`` for a run of ``total_steps`` (ValueError lists valid names)."""
    return LR_SCHEDULES.get(name.lower())(total_steps=total_steps, **kwargs)
