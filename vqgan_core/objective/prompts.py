"""Prompt grammar of the classic VQGAN+CLIP scripts, parsed strictly.

Grammar (as nerdyrodent/VQGAN-CLIP and pixray): prompts are separated by ``|``; each is
``text[:weight[:stop]]``. Only *trailing* numeric fields are weight/stop, so colons inside the text
(``"a photo: sunset"``), URLs (``https://host/a.png:0.5``) and Windows paths (``C:\\img.png``) survive.
Story mode (classic ``-cpe``): phrase sets separated by ``^`` switch every N steps and wrap around.

Malformed input raises :class:`PromptSyntaxError` (a ``ValueError``) naming the offending prompt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = [
    "PROMPT_HELP",
    "ImagePrompt",
    "NoisePrompt",
    "PromptSchedule",
    "PromptSet",
    "PromptSyntaxError",
    "TextPrompt",
    "parse_image_prompts",
    "parse_noise_prompts",
    "parse_prompt_set",
    "parse_story",
    "split_weight_stop",
]

#: the grammar as users read it (CLI help, the ComfyUI prompt box's tooltip)
PROMPT_HELP = ("Prompts in the classic grammar: 'text[:weight[:stop]]', several joined by '|' ('a lighthouse:1|fog:-0.5': "
               "a negative weight pushes away; stop ends a prompt's pull once the image is that close). '^' separates "
               "story phrase sets ('a forest ^ a city'), switched every change_prompts_every steps.")


class PromptSyntaxError(ValueError):
    """A prompt string does not follow ``text[:weight[:stop]]`` (``|`` separated)."""


@dataclass(frozen=True)
class TextPrompt:
    """A text target; negative weight pushes the image away from it."""

    text: str
    weight: float = 1.0
    stop: float = float("-inf")


@dataclass(frozen=True)
class ImagePrompt:
    """An image target (file path or URL), encoded through the same cutouts as the image."""

    path: str
    weight: float = 1.0
    stop: float = float("-inf")


@dataclass(frozen=True)
class NoisePrompt:
    """A random CLIP-space direction drawn from ``seed`` (classic ``-nps/-npw``)."""

    seed: int
    weight: float = 1.0
    stop: float = float("-inf")


@dataclass(frozen=True)
class PromptSet:
    """All prompts active at one time."""

    texts: tuple[TextPrompt, ...] = ()
    images: tuple[ImagePrompt, ...] = ()
    noises: tuple[NoisePrompt, ...] = ()

    def is_empty(self) -> bool:
        """True when no prompt of any kind is present."""
        return not (self.texts or self.images or self.noises)


_NUM = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
_INF = re.compile(r"^\s*-inf\s*$", re.IGNORECASE)
# A field that was clearly meant as a number but is not one (e.g. "1..5", "0.5x", "-", "1e").
_NUMLIKE = re.compile(r"^\s*[-+.]*\d[\d.eE+\-]*[a-zA-Z%]{0,2}\s*$|^\s*[-+.]+\s*$")
_HOST_ONLY_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*$")


def _is_num(s: str, allow_neg_inf: bool = False) -> bool:
    return bool(_NUM.match(s)) or (allow_neg_inf and bool(_INF.match(s)))


MAX_WEIGHT = 1e6  # larger weights overflow the loss (float32) into inf/NaN: a black image


def _to_float(s: str, what: str, prompt: str) -> float:
    v = float(s)
    if math.isnan(v) or (math.isinf(v) and not (what == "stop" and v < 0)):
        raise PromptSyntaxError(f"{what} must be a finite number in prompt {prompt!r}, got {s!r}")
    if what == "weight" and abs(v) > MAX_WEIGHT:
        raise PromptSyntaxError(f"weight {s} in prompt {prompt!r} is too large: use -{MAX_WEIGHT:g}..{MAX_WEIGHT:g} "
                                "(larger weights overflow the loss)")
    return v


def split_weight_stop(item: str) -> tuple[str, float, float]:
    """Split ``text[:weight[:stop]]`` into its parts.

    Args:
        item: one prompt (no ``|``).

    Returns:
        ``(text, weight, stop)``; defaults weight 1, stop -inf.

    Raises:
        PromptSyntaxError: empty text, empty or malformed trailing number.
    """
    raw = item
    parts = item.split(":")
    weight, stop = 1.0, float("-inf")
    if len(parts) >= 3 and _is_num(parts[-2]) and _is_num(parts[-1], allow_neg_inf=True):
        weight = _to_float(parts[-2], "weight", raw)
        stop = _to_float(parts[-1], "stop", raw)
        parts = parts[:-2]
    elif len(parts) >= 2 and _is_num(parts[-1]):
        head = ":".join(parts[:-1])
        if _HOST_ONLY_URL.match(head.strip()):  # "http://host:8080" -> port, not weight
            parts = [item]
        else:
            weight = _to_float(parts[-1], "weight", raw)
            parts = parts[:-1]
    elif len(parts) >= 2:
        last = parts[-1]
        if last.strip() == "":
            raise PromptSyntaxError(f"empty weight after ':' in prompt {raw!r} (write 'text:1.0' or drop the ':')")
        if _NUMLIKE.match(last) and not _HOST_ONLY_URL.match(":".join(parts[:-1]).strip()):
            raise PromptSyntaxError(f"malformed number {last.strip()!r} in prompt {raw!r} (expected text:weight:stop)")
        if len(parts) >= 3 and _is_num(parts[-2]) and _NUMLIKE.match(last):
            raise PromptSyntaxError(f"malformed stop {last.strip()!r} in prompt {raw!r}")
    text = ":".join(parts).strip()
    if not text:
        raise PromptSyntaxError(f"empty prompt text in {raw!r}")
    return text, weight, stop


def _items(s: str, what: str) -> list[str]:
    if s is None or not s.strip():
        return []
    items = s.split("|")
    for it in items:
        if not it.strip():
            raise PromptSyntaxError(f"empty {what} between '|' separators in {s!r}")
    return items


def parse_prompt_set(texts: str = "", images: str = "", noises: str = "") -> PromptSet:
    """Parse the three classic prompt strings into one :class:`PromptSet` (no ``^`` allowed here)."""
    for s in (texts, images, noises):
        if s and "^" in s:
            raise PromptSyntaxError(f"'^' (story separator) is only valid in story prompts: {s!r}")
    tps = tuple(TextPrompt(*split_weight_stop(it)) for it in _items(texts, "prompt"))
    return PromptSet(tps, parse_image_prompts(images), parse_noise_prompts(noises))


def parse_image_prompts(s: str) -> tuple[ImagePrompt, ...]:
    """Parse ``path[:weight[:stop]]|...`` (URLs and Windows paths allowed)."""
    return tuple(ImagePrompt(*split_weight_stop(it)) for it in _items(s, "image prompt"))


def parse_noise_prompts(s: str) -> tuple[NoisePrompt, ...]:
    """Parse ``seed[:weight[:stop]]|...``; the seed must be an integer."""
    out = []
    for it in _items(s, "noise prompt"):
        seed_s, w, st = split_weight_stop(it)
        if not re.fullmatch(r"[-+]?\d+", seed_s):
            raise PromptSyntaxError(f"noise prompt seed must be an integer, got {seed_s!r} in {it!r}")
        out.append(NoisePrompt(int(seed_s), w, st))
    return tuple(out)


@dataclass
class PromptSchedule:
    """Prompt sets over the run: ``entries[k] = (start_step, PromptSet)``, sorted by start step.

    ``period`` > 0 makes the schedule cycle (classic story mode wraps to the first phrase set).
    """

    entries: list[tuple[int, PromptSet]] = field(default_factory=list)
    period: int = 0

    def __post_init__(self) -> None:
        if not self.entries:
            raise PromptSyntaxError("a prompt schedule needs at least one prompt set")
        self.entries = sorted(self.entries, key=lambda e: e[0])
        if self.entries[0][0] != 0:
            raise PromptSyntaxError(f"the first scheduled prompt set must start at step 0, got {self.entries[0][0]}")

    def index_at(self, step: int) -> int:
        """Index into ``entries`` of the set active at ``step``."""
        if self.period > 0:
            step = step % self.period
        idx = 0
        for k, (start, _) in enumerate(self.entries):
            if start <= step:
                idx = k
        return idx

    def at(self, step: int) -> PromptSet:
        """Prompt set active at ``step``."""
        return self.entries[self.index_at(step)][1]

    def blend_at(self, step: int, fade: int) -> tuple[int, int, float]:
        """``(previous, current, alpha)``: the story crossfades over ``fade`` steps after each change.

        During the first ``fade - 1`` steps of a set, the targets are the previous set's weights times
        ``1 - alpha`` plus the current set's times ``alpha`` (``alpha = 1/fade, 2/fade, ...``); afterwards,
        and for ``fade <= 1``, ``(current, current, 1.0)``. The run's very first set has nothing to fade from.
        """
        i = self.index_at(step)
        if fade <= 1 or self.period <= 0 or len(self.entries) < 2 or (step < self.period and i == 0):
            return i, i, 1.0
        into = step % self.period - self.entries[i][0]
        if into >= fade - 1:
            return i, i, 1.0
        return (i - 1) % len(self.entries), i, (into + 1) / fade

    @classmethod
    def constant(cls, prompts: PromptSet) -> PromptSchedule:
        """One prompt set for the whole run."""
        return cls([(0, prompts)])


def parse_story(texts: str, every: int = 0, images: str = "", noises: str = "") -> PromptSchedule:
    """Parse story prompts: ``"a|b ^ c ^ d"`` switches phrase set every ``every`` steps, cycling.

    Image and noise prompts stay active in every phrase set. With ``every <= 0`` and several phrase
    sets, only the first set is used (as the classic script without ``-cpe``), which is logged by the
    caller; use ``every`` to enable the story.
    """
    img = parse_image_prompts(images)
    noi = parse_noise_prompts(noises)
    phrases = texts.split("^") if texts and texts.strip() else [""]
    sets = []
    for ph in phrases:
        if len(phrases) > 1 and not ph.strip():
            raise PromptSyntaxError(f"empty phrase set between '^' separators in {texts!r}")
        tps = tuple(TextPrompt(*split_weight_stop(it)) for it in _items(ph, "prompt"))
        sets.append(PromptSet(tps, img, noi))
    if every <= 0 or len(sets) == 1:
        return PromptSchedule([(0, sets[0])])
    return PromptSchedule([(k * every, s) for k, s in enumerate(sets)], period=every * len(sets))
