"""Loss terms: one small interface for everything a run minimises, and a sum of terms that is itself a term.

A term maps the rendered image batch ``[B, 3, H, W]`` in [0, 1] (plus the :class:`StepContext`) to its
weighted loss per batch item ``[B]``; the scalar the optimiser sees is the sum over the batch (items have
their own latents, so their losses never mix). Around that:

* ``bind(run)`` once when a run starts (device, size, start latent: what a term built before the run
  cannot know);
* ``prepare(step)`` on the host before each step; it returns a hashable key that changes when the term's
  tensors change (story phrase sets), so a captured CUDA graph is recaptured only then;
* ``state_dict()`` / ``load_state_dict()`` for what must survive a chained or resumed run (the init
  pull-back's target, for example), so k chained runs equal one run of all their steps.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Iterable
from typing import Any

import torch

from ..objective.image_losses import IMAGE_LOSSES
from ..objective.losses import init_weight_factor, tv_loss
from ..util.finite import check_finite
from .run_info import RunInfo, StepContext

__all__ = ["INIT_DECAYS", "ImageLoss", "InitLoss", "LossTerm", "SumLoss", "TVLoss"]

INIT_DECAYS = ("classic", "linear", "none")


class LossTerm(abc.ABC):
    """Base class: ``weight * forward(img, ctx)`` per item. Subclasses implement :meth:`forward`."""

    name = "loss"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = check_finite(weight, f"{self.name} weight")

    def bind(self, run: RunInfo) -> None:
        """Called once when a run starts, before the first :meth:`prepare` (optional hook)."""
        return None

    def prepare(self, step: int) -> Hashable:
        """Host-side work before ``step`` (of the whole run); returns a key that changes with the term's tensors."""
        return None

    @abc.abstractmethod
    def forward(self, img: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Unweighted loss per item ``[B]``."""

    def __call__(self, img: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        value = self.forward(img, ctx)
        return value if self.weight == 1.0 else self.weight * value

    def state_dict(self) -> dict[str, Any]:
        """What a continued run needs from this term (empty when the step number alone decides)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from :meth:`state_dict` of an equal term (optional hook: stateless terms keep nothing)."""
        return None


    def __add__(self, other: LossTerm) -> SumLoss:
        return SumLoss([self, other])


class SumLoss(LossTerm):
    """Several terms added (in order), times this sum's own weight; a term itself, so sums nest."""

    name = "sum"

    def __init__(self, terms: Iterable[LossTerm], weight: float = 1.0) -> None:
        super().__init__(weight)
        self.terms = list(terms)
        if not self.terms:
            raise ValueError("a sum of losses needs at least one term")
        for t in self.terms:
            if not isinstance(t, LossTerm):
                raise TypeError(f"not a loss term: {type(t).__name__}")

    def bind(self, run: RunInfo) -> None:  # noqa: D102
        for t in self.terms:
            t.bind(run)

    def prepare(self, step: int) -> Hashable:  # noqa: D102
        return tuple(t.prepare(step) for t in self.terms)

    def forward(self, img: torch.Tensor, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        total = torch.zeros(img.shape[0], device=img.device)
        for t in self.terms:
            total = total + t(img, ctx)
        return total

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"terms": [t.state_dict() for t in self.terms]}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        saved = state.get("terms", [])
        if len(saved) != len(self.terms):
            raise ValueError(f"the saved run had {len(saved)} loss terms here, this one {len(self.terms)}")
        for t, s in zip(self.terms, saved, strict=True):
            t.load_state_dict(s)


    def leaves(self) -> list[LossTerm]:
        """The non-sum terms inside, depth first."""
        out: list[LossTerm] = []
        for t in self.terms:
            out += t.leaves() if isinstance(t, SumLoss) else [t]
        return out


class TVLoss(LossTerm):
    """Total variation (mean squared neighbour difference): smoother images. Circular for tiling runs."""

    name = "tv"

    def forward(self, img: torch.Tensor, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        return tv_loss(img, circular=ctx.run.seamless)


class ImageLoss(LossTerm):
    """One named image term of ``vqgan_core.objective.image_losses`` (a positive weight asks for more of it).

    ``start``: the fraction of the planned run before the term switches on. Why: a prior on the layout (a plain
    border) applied from the first step freezes the random start's layout, e.g. the frame in the foreground's
    colour; switched on once the composition has settled, it only tidies it.
    """

    def __init__(self, name: str, weight: float = 1.0, start: float = 0.0) -> None:
        self.fn = IMAGE_LOSSES.get(name)  # an unknown name lists the valid ones
        self.name = name
        super().__init__(weight)
        if not 0.0 <= float(start) <= 1.0:
            raise ValueError(f"image loss {name!r}: start is a fraction of the run in [0, 1], got {start}")
        self.start = float(start)
        self._first, self._on = 0, True

    def bind(self, run: RunInfo) -> None:  # noqa: D102
        self._first = round(self.start * run.planned_steps)

    def prepare(self, step: int) -> Hashable:  # noqa: D102 - the key changes once: a CUDA graph is recaptured then
        self._on = step >= self._first
        return self._on

    def forward(self, img: torch.Tensor, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        return self.fn(img) if self._on else img.new_zeros(img.shape[0])


class InitLoss(LossTerm):
    """MSE pull-back of the run's latent towards a target latent, decaying over the run.

    Args:
        weight: the pull-back's strength at step 0.
        decay: ``classic`` (``1/(2i+1)/2``), ``linear`` (1 -> 0 over the planned run) or ``none``.
        target: ``[1 or B, C, h, w]`` latent to pull towards; None = the latent the run starts from.
        image: ``[1 or B, 3, H, W]`` in [0, 1] instead of ``target``: encoded with the run's VQGAN at its size.
    """

    name = "init"

    def __init__(self, weight: float = 1.0, decay: str = "classic", target: torch.Tensor | None = None,
                 image: torch.Tensor | None = None) -> None:
        super().__init__(weight)
        if decay not in INIT_DECAYS:
            raise ValueError(f"unknown init decay {decay!r}; valid: {', '.join(INIT_DECAYS)}")
        if target is not None and image is not None:
            raise ValueError("give the init loss a target latent or an image, not both")
        self.decay, self._given, self._image = decay, target, image
        self.target: torch.Tensor | None = None
        self._origin, self._total, self._factor = 0, 1, 0.0
        self._factor_t: torch.Tensor | None = None

    def bind(self, run: RunInfo) -> None:  # noqa: D102
        from ..latents.init import encode_image01
        from ..media.image_io import fit_image

        if self._image is not None:
            t = encode_image01(run.vqgan, fit_image(self._image, run.height, run.width))
        else:
            t = self._given if self._given is not None else run.start_latent
        t = t.detach().float().to(run.device)
        want = tuple(run.start_latent.shape)
        if t.shape[0] == 1 and want[0] > 1:
            t = t.expand(want[0], -1, -1, -1)
        if tuple(t.shape) != want:
            raise ValueError(f"the init loss's target latent is {tuple(t.shape)}, the run's latent {want}")
        self.target = t.clone()
        self.restart(0, run.planned_steps)
        # a CUDA graph reads the factor from a static device tensor; eager runs multiply by the float
        self._factor_t = torch.zeros((), device=run.device) if run.device.type == "cuda" else None

    def restart(self, origin: int, length: int) -> None:
        """Decay from step ``origin`` of the run over ``length`` steps (a resumed run: from its first start)."""
        self._origin, self._total = int(origin), max(int(length), 1)

    @torch.no_grad()
    def retarget(self, latent: torch.Tensor) -> None:
        """Pull towards ``latent`` from now on (in place: a captured CUDA graph reads the same tensor)."""
        self.target.copy_(latent.to(self.target.device, self.target.dtype))

    def prepare(self, step: int) -> Hashable:  # noqa: D102
        self._factor = init_weight_factor(step - self._origin, self._total, self.decay)
        if self._factor_t is not None:
            self._factor_t.fill_(self._factor)
        return None

    def _pull(self, scale: float, ctx: StepContext) -> torch.Tensor:
        # (scale * factor) first, as one number: the classic loop's order of operations
        mse = (ctx.latent - self.target).pow(2).flatten(1).mean(1)
        if self._factor_t is not None:
            return scale * self._factor_t * mse
        return scale * self._factor * mse

    def forward(self, img: torch.Tensor, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        return self._pull(1.0, ctx)

    def __call__(self, img: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._pull(self.weight, ctx)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102 - a chained run pulls towards the run's start
        return {} if self.target is None else {"target": self.target.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        t = state.get("target")
        if t is not None and self.target is not None and tuple(t.shape) == tuple(self.target.shape):
            self.target.copy_(t.to(self.target.device, self.target.dtype))

