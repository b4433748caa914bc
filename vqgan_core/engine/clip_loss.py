"""The CLIP loss as a term: one guide (or ensemble) with its own targets and its own views of the image.

Why its own views: a loss node in a graph carries everything that decides what CLIP sees (cutout method,
count, size power, augmentations, noise), so two CLIP losses with different guides and prompts in one run
each look at the image their own way. All randomness comes from the run's stream (``StepContext.gen``),
in the order the terms are called, so a run is reproducible from its seed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..clip.guide import ClipEnsemble, ClipGuide
from ..media.image_io import fit_image, load_image01
from ..objective.losses import prompt_loss
from ..objective.prompts import parse_story
from ..objective.regions import RegionView
from ..objective.targets import GuideTargets, TargetBank
from ..views.augment import DEFAULT_AUGMENTS, Augmenter, parse_augments
from ..views.cutouts import Cutouts
from ..vqgan.seamless import random_roll
from .run_info import RunInfo, StepContext, stream_seed
from .terms import LossTerm

__all__ = ["ClipLoss", "Views"]

log = logging.getLogger(__name__)

ImagePrompt = tuple[torch.Tensor, float, float]  # (image01 [1,3,H,W], weight, stop)


@dataclass(frozen=True)
class Views:
    """How CLIP sees the image: ``cutn`` cutouts by ``method`` (sizes ~ ``cut_pow``), augmented by ``augments``
    (codes of ``vqgan_core.views.augment``), plus per-cutout noise up to ``aug_noise``. Defaults: the classic loop's."""

    method: str = "latest"
    cutn: int = 32
    cut_pow: float = 1.0
    augments: tuple[str, ...] = field(default_factory=lambda: tuple(DEFAULT_AUGMENTS))
    aug_noise: float = 0.1
    aug_padding: str = "zeros"

    def __post_init__(self) -> None:
        object.__setattr__(self, "augments", parse_augments(self.augments))
        if self.cutn < 1 or not self.cut_pow >= 0 or not 0 <= self.aug_noise < float("inf"):
            raise ValueError(f"views need cutn >= 1, cut_pow >= 0 and a finite aug_noise >= 0 (got {self.cutn}, "
                             f"{self.cut_pow}, {self.aug_noise})")
        self.cutouts()  # unknown method / code / padding: an error now, listing the valid names

    def cutouts(self) -> Cutouts:
        """The cutout + augmentation pipeline."""
        return Cutouts(self.method, self.cutn, self.cut_pow, Augmenter(self.augments, self.aug_noise, self.aug_padding))


class ClipLoss(LossTerm):
    """Spherical distance of CLIP's view of the image to its targets (the classic VQGAN+CLIP loss).

    Args:
        guide: a guide, guides / (guide, weight) pairs, or an ensemble; every guide sees its own cutouts.
        prompts: text prompts in the classic grammar (``text:weight:stop|...``, ``^`` story sets), one string
            for every batch item or a list with one per item.
        image_prompts: ``path_or_url:weight:stop|...``; image_tensors: ``(image01, weight, stop)`` tuples.
        noise_prompts: ``seed:weight|...`` (random CLIP directions).
        change_every / fade: story mode pace (the next ``^`` set every N steps, crossfaded over ``fade``).
        views: what CLIP sees (:class:`Views`); weight: the term's weight.
        region: ``[H, W]`` mask: score only that part of the image (its bounding box, grey outside).
    """

    name = "clip"

    def __init__(self, guide: ClipGuide | ClipEnsemble | list, prompts: str | Sequence[str] = "", *,
                 image_prompts: str = "", image_tensors: Sequence[ImagePrompt] = (), noise_prompts: str = "",
                 change_every: int = 0, fade: int = 0, views: Views | None = None, weight: float = 1.0,
                 region: torch.Tensor | None = None, label: str = "") -> None:
        super().__init__(weight)
        self.label = label  # prefixes errors found when the run starts (e.g. "region 2 of 3")
        self.clip = ClipEnsemble.of(guide)
        self.prompts, self.image_prompts, self.noise_prompts = prompts, image_prompts, noise_prompts
        self.image_tensors = list(image_tensors)
        if change_every < 0 or fade < 0 or (fade and change_every and fade > change_every):
            raise ValueError(f"story pace: need change_every >= 0 and 0 <= fade <= change_every "
                             f"(got {change_every}, {fade})")
        self.change_every, self.fade = int(change_every), int(fade)
        self.views = views or Views()
        self.region = region
        self._cutouts = self.views.cutouts()
        strings = [prompts] if isinstance(prompts, str) else list(prompts)
        for p in strings:  # the grammar is checked now, where the prompt was given
            parse_story(p, change_every, image_prompts, noise_prompts)
        if any("^" in p for p in strings) and change_every <= 0:
            log.warning("prompts contain '^' phrase sets but change_every is 0: only the first set is used")
        self.bank: TargetBank | None = None
        self._view: RegionView | None = None
        self._models: list[torch.nn.Module | None] = [None] * len(self.clip.guides)
        self._packs: list | None = None
        self._run: RunInfo | None = None

    @property
    def not_capturable(self) -> list[str]:
        """Augmentations that cannot run inside a CUDA graph."""
        return self._cutouts.augmenter.not_capturable

    def bind(self, run: RunInfo) -> None:  # noqa: D102
        try:
            self._bind(run)
        except ValueError as e:
            if not self.label:
                raise
            raise ValueError(f"{self.label}: {e}") from None

    def use_models(self, models: Sequence[torch.nn.Module | None]) -> None:
        """The CLIP weights each guide runs with this run (a host's compiled or fp16 copies; None = the guide's)."""
        if len(models) != len(self.clip.guides):
            raise ValueError(f"{len(models)} models for {len(self.clip.guides)} guides")
        self._models = list(models)

    @property
    def cutouts(self) -> Cutouts:
        """The cutout + augmentation pipeline of this term's views."""
        return self._cutouts

    @property
    def view(self) -> RegionView | None:
        """The region's view of the image (None: the whole image)."""
        return self._view

    def _bind(self, run: RunInfo) -> None:
        self._run = run
        strings = [self.prompts] * run.batch if isinstance(self.prompts, str) else list(self.prompts)
        if len(strings) != run.batch:
            raise ValueError(f"{len(strings)} prompt strings for a batch of {run.batch}")
        size = (run.height, run.width)
        if self.region is not None:
            self._view = RegionView(self.region, run.height, run.width, run.device)
            y0, y1, x0, x1 = self._view.box
            size = (y1 - y0, x1 - x0)  # a region's image prompts are fitted to it, as it is seen
        schedules = [parse_story(p, self.change_every, self.image_prompts, self.noise_prompts) for p in strings]
        encode = functools.partial(self._encode_image_prompt, size=size)
        self.bank = TargetBank(self.clip, schedules, encode, load_image01, self.image_tensors, fade=self.fade)
        self._models = [None] * len(self.clip.guides)
        if run.low_dtype is not None:  # frozen low-precision copies: no weight casts per step
            self._models = [g.lowp_model(run.low_dtype) for g, _ in self.clip.guides]
        self.prepare(run.start_step)  # encode the prompts now: errors surface before the first step

    def _encode_image_prompt(self, guide: ClipGuide, img01: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """An image prompt is seen like the image is: fitted to its size, cut out (its own seeded stream)."""
        run = self._run
        img = fit_image(img01, *size).to(run.device)
        gen = torch.Generator(run.device).manual_seed(stream_seed(run.seed, 23))
        with torch.no_grad(), run.autocast():
            return guide.encode_image(self._cutouts(img, guide.image_size, gen))

    def prepare(self, step: int) -> Hashable:  # noqa: D102
        if self.bank is None:
            raise RuntimeError("the CLIP loss is not bound to a run yet (a Stepper binds it)")
        self._packs = self.bank.at(step)
        return self.bank.key(step)

    def use_text_targets(self, embeds: Sequence[torch.Tensor]) -> None:
        """Aim item b at row b of each guide's ``[B, D]`` text embeddings (weight 1, no stop), until the next
        :meth:`prepare`.

        Why: a feed-forward network is trained on a new batch of captions every step; the loss it learns from
        must be this very term (same cutouts, augmentations and distance), not a copy, so no prompt strings and
        no run binding are involved.
        """
        if len(embeds) != len(self.clip.guides):
            raise ValueError(f"{len(embeds)} embedding batches for {len(self.clip.guides)} guides")
        packs = []
        for e in embeds:
            b = e.shape[0]
            packs.append(GuideTargets(e.float(), torch.eye(b, device=e.device),
                                      torch.full((b,), float("-inf"), device=e.device)))
        self._packs = packs

    def forward(self, img: torch.Tensor, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        B, cutn = img.shape[0], self.views.cutn
        if self._view is not None:
            seen = self._view(img)
        else:  # a tileable image is judged across its edges too
            seen = random_roll(img, ctx.gen) if ctx.run.seamless else img
        total = torch.zeros(B, device=img.device)
        for (guide, gw), tg, model in zip(self.clip.guides, self._packs, self._models, strict=True):
            cuts = self._cutouts(seen, guide.image_size, ctx.gen)
            with ctx.run.autocast():
                emb = guide.encode_image(cuts, model)
            total = total + gw * prompt_loss(emb.view(B, cutn, -1), tg.embeds, tg.weights, tg.stops)
        return total

    def state_dict(self) -> dict[str, Any]:  # noqa: D102 - the story position is the run's step
        return {}
