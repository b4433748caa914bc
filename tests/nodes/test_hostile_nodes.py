"""Hostile requests to the nodes' engine (ComfyUI stubs): a run too large for the server is refused before it
allocates anything, with a message that says what to change."""

from __future__ import annotations

import pytest
import torch

from tests.nodes.node_helpers import harness

GEN = {"prompt": "red", "steps": 1, "optimizer": "adam", "lr": 0.1, "cutouts": 2, "cutout_method": "latest",
       "augmentations": "none", "seed": 0, "preview_every": 0}


MODELS = {}


def _generate(pack, **kw):
    if not MODELS:  # built outside inference mode, as a loader node builds them
        MODELS.update(vqgan=harness.tiny_vqgan(), clip_guide=harness.tiny_guide())
    with torch.inference_mode():
        return pack.optimize.VQGANCLIPGenerate.execute(**MODELS, **{**GEN, **kw}).args


def test_pixel_cap_refuses_before_the_run(pack, monkeypatch):
    allocated = []
    monkeypatch.setattr(pack.memory, "use", lambda *a, **k: allocated.append(1))
    with pytest.raises(ValueError, match="VQGAN_CLIP_MAX_PIXELS"):
        _generate(pack, width=4096, height=4096)
    assert not allocated  # nothing loaded, nothing allocated
    monkeypatch.setenv("VQGAN_CLIP_MAX_PIXELS", str(16 * 16))
    with pytest.raises(ValueError, match="at most 256"):
        _generate(pack, width=32, height=32)


def test_ram_budget_on_the_cpu(pack, monkeypatch):
    from vqgan_core.engine import memory_budget

    monkeypatch.setattr(memory_budget, "free_bytes", lambda device: 1024)
    with pytest.raises(memory_budget.MemoryBudgetError, match="GiB of RAM"):
        _generate(pack, width=32, height=32)
    monkeypatch.undo()
    image, _, _ = _generate(pack, width=32, height=32)
    assert image.shape == (1, 32, 32, 3)
