"""CLIP-space targets of a run: prompts encoded once, packed for one vectorised loss per guide.

For each guide and each combination of active prompt sets (story mode may switch them, per batch item)
the targets are packed as ``embeds [P, D]``, ``weights [B, P]`` (0 where an item does not use a
target) and ``stops [P]``. Packs are cached, so switching story phrases costs nothing after the
first time; text embeddings are cached per string.

A story crossfade (``fade`` steps) packs the previous and the current sets side by side and rewrites the
pack's weights in place each step (a captured CUDA graph reads the same tensor), so the loss is the
weighted mix of both sets' losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..clip.guide import ClipEnsemble, ClipGuide
from .prompts import PromptSchedule, PromptSet

__all__ = ["GuideTargets", "TargetBank"]


@dataclass
class GuideTargets:
    """Packed targets of one guide (see module doc)."""

    embeds: torch.Tensor
    weights: torch.Tensor
    stops: torch.Tensor


ImageLoader = Callable[[str], torch.Tensor]  # path/URL -> [1,3,H,W] in [0,1]
ImageEncoder = Callable[[ClipGuide, torch.Tensor], torch.Tensor]  # (guide, image01) -> [T, D]


class TargetBank:
    """Builds and caches :class:`GuideTargets` for every step of a run.

    Args:
        clip: the CLIP ensemble.
        schedules: one prompt schedule per batch item.
        encode_image_prompt: turns an image prompt into ``[T, D]`` target embeddings for a guide
            (the loop passes its cutout pipeline, so image prompts are seen like the image is).
        load_image: reads image prompts given by path or URL.
        extra_images: ``(image01 [1,3,H,W], weight, stop)`` image prompts given as tensors (all items).
        fade: story crossfade length in steps (:meth:`PromptSchedule.blend_at`; 0 or 1 = switch at once).
    """

    def __init__(
        self,
        clip: ClipEnsemble,
        schedules: list[PromptSchedule],
        encode_image_prompt: ImageEncoder,
        load_image: ImageLoader,
        extra_images: list[tuple[torch.Tensor, float, float]] | None = None,
        fade: int = 0,
    ) -> None:
        self.clip, self.schedules, self.fade = clip, schedules, fade
        self._encode_image, self._load_image = encode_image_prompt, load_image
        self.extra_images = extra_images or []
        self._text: dict[tuple[int, str], torch.Tensor] = {}
        self._image: dict[tuple[int, str], torch.Tensor] = {}
        self._packs: dict[tuple, list[GuideTargets]] = {}
        self._fade_weights: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._extra_cache: dict[int, list[torch.Tensor]] = {}
        if all(s.at(0).is_empty() for s in schedules) and not self.extra_images:
            raise ValueError("no prompts given: pass text, image or noise prompts")

    def key(self, step: int) -> tuple:
        """Active schedule entry per batch item at ``step`` (``(previous, current)`` pairs while crossfading)."""
        return self._key(self._blends(step))

    def _blends(self, step: int) -> list[tuple[int, int, float]]:
        return [s.blend_at(step, self.fade) for s in self.schedules]

    @staticmethod
    def _key(blends: list[tuple[int, int, float]]) -> tuple:
        if all(p == c for p, c, _ in blends):
            return tuple(c for _, c, _ in blends)
        return tuple((p, c) for p, c, _ in blends)

    def at(self, step: int) -> list[GuideTargets]:
        """Packed targets (one per guide) active at ``step``."""
        blends = self._blends(step)
        k = self._key(blends)
        fading = bool(k) and isinstance(k[0], tuple)
        if k not in self._packs:
            if fading:
                self._packs[k] = self._fade_packs(k)
            else:
                sets = [s.entries[i][1] for s, i in zip(self.schedules, k, strict=True)]
                self._packs[k] = [self._pack(gi, g, sets) for gi, (g, _) in enumerate(self.clip.guides)]
        if fading:  # this step's mix, written into the pack's own weights tensor (row b: item b)
            alphas = [a for *_, a in blends]
            for pack, (w_prev, w_cur) in zip(self._packs[k], self._fade_weights[k], strict=True):
                if len(set(alphas)) == 1:
                    torch.lerp(w_prev, w_cur, alphas[0], out=pack.weights)
                else:  # items whose stories change on different steps
                    for b, a in enumerate(alphas):
                        torch.lerp(w_prev[b], w_cur[b], a, out=pack.weights[b])
        return self._packs[k]

    def _fade_packs(self, k: tuple) -> list[GuideTargets]:
        """Previous and current sets side by side; the weights of each alone are kept for the mix."""
        prev = [s.entries[p][1] for s, (p, _) in zip(self.schedules, k, strict=True)]
        cur = [s.entries[c][1] for s, (_, c) in zip(self.schedules, k, strict=True)]
        packs, self._fade_weights[k] = [], []
        for gi, (g, _) in enumerate(self.clip.guides):
            a, b = self._pack(gi, g, prev), self._pack(gi, g, cur)
            w_prev = torch.cat([a.weights, torch.zeros_like(b.weights)], 1)
            w_cur = torch.cat([torch.zeros_like(a.weights), b.weights], 1)
            self._fade_weights[k].append((w_prev, w_cur))
            packs.append(GuideTargets(torch.cat([a.embeds, b.embeds]), w_prev.clone(), torch.cat([a.stops, b.stops])))
        return packs

    def _text_embed(self, gi: int, guide: ClipGuide, text: str) -> torch.Tensor:
        if (gi, text) not in self._text:
            self._text[(gi, text)] = guide.encode_text([text])[0]
        return self._text[(gi, text)]

    def _image_embeds(self, gi: int, guide: ClipGuide, path: str) -> torch.Tensor:
        if (gi, path) not in self._image:
            with torch.no_grad():
                self._image[(gi, path)] = self._encode_image(guide, self._load_image(path)).float()
        return self._image[(gi, path)]

    def _pack(self, gi: int, guide: ClipGuide, sets: list[PromptSet]) -> GuideTargets:
        dev = guide.device
        rows: list[torch.Tensor] = []
        cols: list[tuple[int, float, float]] = []  # (item or -1 for all, weight per row, stop)

        def add(item: int, embeds: torch.Tensor, weight: float, stop: float) -> None:
            embeds = embeds.reshape(-1, embeds.shape[-1])
            for e in embeds:  # T embeddings share the weight: mean over T == sum of w/T
                rows.append(e.to(dev).float())
                cols.append((item, weight / embeds.shape[0], stop))

        for b, ps in enumerate(sets):
            for t in ps.texts:
                add(b, self._text_embed(gi, guide, t.text), t.weight, t.stop)
            for im in ps.images:
                add(b, self._image_embeds(gi, guide, im.path), im.weight, im.stop)
            for nz in ps.noises:
                g = torch.Generator().manual_seed(nz.seed)
                add(b, torch.randn(1, guide.embed_dim(), generator=g), nz.weight, nz.stop)
        if gi not in self._extra_cache:
            with torch.no_grad():
                self._extra_cache[gi] = [self._encode_image(guide, img).float() for img, _, _ in self.extra_images]
        for emb, (_, w, st) in zip(self._extra_cache[gi], self.extra_images, strict=True):
            add(-1, emb, w, st)
        if not rows:
            raise ValueError("no prompts are active at this step (empty prompt set)")
        n_items = len(sets)
        weights = torch.zeros(n_items, len(rows))
        for p, (item, w, _) in enumerate(cols):
            if item < 0:
                weights[:, p] = w
            else:
                weights[item, p] = w
        stops = torch.tensor([c[2] for c in cols])
        return GuideTargets(torch.stack(rows), weights.to(dev), stops.to(dev))
