"""The shipped workflows look right in the editor: no node box (with its title bar and pack label) overlaps
another, computed from the saved positions and sizes (the editor keeps a saved size when it is at least the
node's own minimum, which ``workflows/make_workflows.py`` computes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
ABOVE = 30 + 22  # title bar + the pack's label drawn above it


def _boxes(path: Path) -> list[tuple[int, str, tuple[float, float, float, float]]]:
    data = json.loads(path.read_text())
    return [(n["id"], n["type"], (n["pos"][0], n["pos"][1] - ABOVE, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]))
            for n in data["nodes"]]


def test_there_are_workflows():
    assert len(WORKFLOWS) >= 17


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_no_two_nodes_overlap(path):
    boxes = _boxes(path)
    clashes = []
    for i, (ia, ta, (ax0, ay0, ax1, ay1)) in enumerate(boxes):
        for ib, tb, (bx0, by0, bx1, by1) in boxes[i + 1:]:
            if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
                clashes.append(f"#{ia} {ta} and #{ib} {tb}")
    assert not clashes, clashes


def test_saved_heights_fit_the_widgets():
    """A node's saved height is at least the editor's minimum for its widgets (as measured in the editor)."""
    minimum = {"VQGAN_CLIPOptimize": 546, "VQClip_Loss": 198, "VQGAN_CLIPOptimizeSteps": 234,
               "VQGAN_CombineLosses": 190, "VQGAN_Optimizer": 130, "VQClip_StoryPace": 82}
    for path in WORKFLOWS:
        for n in json.loads(path.read_text())["nodes"]:
            assert n["size"][1] >= minimum.get(n["type"], 0), (path.stem, n["type"], n["size"])
