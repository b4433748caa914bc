"""End-to-end proof that the text steers the image: prompt -> demo CLIP pair's loss -> optimiser -> demo VQGAN decode.

The images are judged by pixel statistics measured on the output (nearest shapes-world palette colour per
pixel), never by the demo CLIP's own score: the background colour named in the prompt must cover the most
pixels, the foreground colour must be present and mostly in one connected region, and swapping the two
colours in the prompt must swap the statistics. The shape check (the largest foreground region must have the
named shape, ``training.shape_judge``: best IoU against circle / square / triangle templates, checked on real
drawings by ``bench/demo_quality.py``) runs on one fast prompt per shape. Not checked: that no third colour
appears. The whole grid (24 prompts x 2 seeds) is ``bench/demo_quality.py``.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pytest
import torch

from training.shape_judge import judge
from training.shapes import PALETTE
from vqgan_core import load_vqgan
from vqgan_core.clip.guide import load_clip_ensemble
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import run_generation
from vqgan_core.hub import demo

NAMES = list(PALETTE)
RGB = np.array([PALETTE[n] for n in NAMES], dtype=np.float32)

# (foreground, shape, background); pairs with swapped colours are checked against each other.
FAST_CASES = [("red", "circle", "blue"), ("blue", "circle", "red"), ("red", "triangle", "yellow"),
              ("yellow", "square", "cyan")]
# one prompt per shape whose shape is checked too (seed 0); the demo draws triangles in every one of the grid's
# runs, circles and squares in 7 of 8 (bench/demo_quality.py), so these are runs whose shape the grid judged right
# (the red circle's seed 0 is two patches: its largest holds 68 % of the red, above this file's 50 % bound)
SHAPE_CASES = [("red", "circle", "blue"), ("red", "triangle", "yellow"), ("yellow", "square", "cyan")]
SLOW_CASES = FAST_CASES + [("purple", "triangle", "yellow"), ("green", "square", "white"),
                           ("orange", "circle", "cyan"), ("cyan", "triangle", "orange")]


def palette_labels(img01: torch.Tensor) -> np.ndarray:
    """[3,H,W] in [0,1] -> [H,W] index of the nearest palette colour (RGB distance)."""
    px = img01.permute(1, 2, 0).numpy().astype(np.float32) * 255
    return ((px[:, :, None, :] - RGB[None, None]) ** 2).sum(-1).argmin(-1)


def fractions(labels: np.ndarray) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=len(NAMES)) / labels.size
    return dict(zip(NAMES, counts.tolist(), strict=True))


def largest_component_share(mask: np.ndarray) -> float:
    """Share of the True pixels that lie in the largest 4-connected region (1.0 = one clean blob)."""
    total = int(mask.sum())
    if total == 0:
        return 0.0
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    best = 0
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        q, n = deque([(y0, x0)]), 0
        while q:
            y, x = q.popleft()
            n += 1
            for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    q.append((yy, xx))
        best = max(best, n)
    return best / total


def measure(img01: torch.Tensor, fg: str, bg: str) -> dict[str, float]:
    """Pixel statistics of one generated image for the prompt's two colours."""
    labels = palette_labels(img01)
    fr = fractions(labels)
    others = {k: v for k, v in fr.items() if k not in (fg, bg)}
    return {"bg": fr[bg], "fg": fr[fg], "max_other": max(others.values()),
            "fg_blob": largest_component_share(labels == NAMES.index(fg)),
            "bg_is_top": float(max(fr, key=fr.get) == bg)}


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return load_vqgan("demo"), load_clip_ensemble(["demo"])  # what the CLI's default run uses: the demo pair


def generate(models, prompt: str, seed: int) -> tuple[torch.Tensor, float]:
    vqgan, clip = models
    cfg = GenerationConfig.from_dict({**demo.preset(), "prompts": prompt, "seed": seed})
    t = time.perf_counter()
    res = run_generation(vqgan, clip, cfg)
    return res.images[0], time.perf_counter() - t


def check_case(models, fg: str, shape: str, bg: str, seed: int) -> dict[str, float]:
    img, secs = generate(models, f"a {fg} {shape} on a {bg} background", seed)
    m = measure(img, fg, bg)
    m["seconds"] = secs
    v = judge((img.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8), fg, shape, bg)
    m["shape_seen"], m["shape_iou"], m["shape_right"] = v.shape_seen, v.iou, float(v.shape_right)
    return m


def assert_matches(m: dict[str, float], fg: str, shape: str, bg: str) -> None:
    prompt = f"a {fg} {shape} on a {bg} background"
    assert m["bg_is_top"] == 1.0, f"{prompt}: background colour {bg} is not the most frequent: {m}"
    assert m["bg"] >= 0.35, f"{prompt}: background {bg} covers only {m['bg']:.0%}: {m}"
    assert m["fg"] >= 0.02, f"{prompt}: foreground {fg} covers only {m['fg']:.1%}: {m}"
    assert m["fg_blob"] >= 0.5, f"{prompt}: foreground {fg} is scattered (largest region {m['fg_blob']:.0%}): {m}"


_FAST: dict = {}


def fast_results(models) -> dict:
    """The four fast prompts' measurements, generated once per session (two tests judge them)."""
    if not _FAST:
        _FAST.update({case: check_case(models, *case, seed=0) for case in FAST_CASES})
    return _FAST


def test_palette_stats_on_dataset_render():
    """The measurement itself: a clean shapes-world drawing passes, its colour swap fails."""
    from training.shapes import ShapeSpec, render

    img = torch.from_numpy(np.array(render(ShapeSpec("red", "blue", "circle", 30, 34, 14)))).permute(2, 0, 1) / 255
    m = measure(img, "red", "blue")
    assert m["bg_is_top"] == 1.0 and m["fg"] > 0.1 and m["fg_blob"] > 0.95
    assert_matches(m, "red", "circle", "blue")
    with pytest.raises(AssertionError):
        assert_matches(measure(img, "blue", "red"), "blue", "circle", "red")


def test_demo_text_steers_image(models):
    """Four prompts incl. swapped foreground/background colours, one seed each (~1-2 min on 2 cores)."""
    results = fast_results(models)
    for case, m in results.items():
        assert_matches(m, *case)
    red_on_blue, blue_on_red = results[FAST_CASES[0]], results[FAST_CASES[1]]
    # swapping the words swaps the colours: red (fg of the first) becomes the dominant colour of the second
    assert blue_on_red["bg"] > 2 * red_on_blue["fg"] and red_on_blue["bg"] > 2 * blue_on_red["fg"], results


def test_demo_draws_the_named_shape(models):
    """One fast prompt per shape: the largest foreground region must be that shape (pixel judge, IoU >= 0.7)."""
    assert {shape for _, shape, _ in SHAPE_CASES} == {"circle", "square", "triangle"}
    results = fast_results(models)
    for fg, shape, bg in SHAPE_CASES:
        m = results[(fg, shape, bg)]
        assert m["shape_right"] == 1.0, f"a {fg} {shape} on a {bg} background: drew a {m['shape_seen']}: {m}"


@pytest.mark.slow
def test_demo_text_steers_image_more(models):
    """Eight prompts x two more seeds (~5 min): at least 3 in 4 runs must pass every check."""
    failures = []
    for seed in (1, 2):
        for case in SLOW_CASES:
            try:
                assert_matches(check_case(models, *case, seed=seed), *case)
            except AssertionError as e:
                failures.append(str(e))
    assert len(failures) <= 2 * len(SLOW_CASES) // 4, "\n".join(failures)
