"""The step-memory estimate: what autograd really keeps, measured on fake tensors."""

from __future__ import annotations

import pytest
import torch

from vqgan_core.clip_guide import ClipEnsemble
from vqgan_core.memory_estimate import _OVERHEAD, step_memory_bytes


def _real_saved_bytes(vqgan, clip, size, batch, cutn):
    """The same sum taken from a real forward pass (real tensors, real arithmetic)."""
    saved = {}

    def pack(t):
        saved[id(t)] = t  # kept alive: ids stay unique
        return t

    f = vqgan.downsample_factor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        vqgan.decode(torch.zeros(batch, vqgan.config.embed_dim, size // f, size // f, requires_grad=True))
        s = clip.image_size
        clip.encode_image(torch.zeros(batch * cutn, 3, s, s, requires_grad=True))
    return sum(t.numel() * t.element_size() for t in saved.values())


@pytest.mark.parametrize("size,batch,cutn", [(32, 1, 4), (64, 2, 3)])
def test_estimate_is_what_a_real_step_saves(vqgan, clip, size, batch, cutn):
    est = step_memory_bytes(vqgan, clip, size, size, batch=batch, cutn=cutn) / _OVERHEAD
    real = _real_saved_bytes(vqgan, clip, size, batch, cutn)
    assert est == pytest.approx(real, rel=1e-6)


def test_estimate_scales_with_image_cutouts_precision_and_checkpointing(vqgan, clip):
    base = step_memory_bytes(vqgan, clip, 64, 64, cutn=4)
    assert step_memory_bytes(vqgan, clip, 128, 128, cutn=4) > 3 * base  # the decoder grows with the pixels
    assert step_memory_bytes(vqgan, clip, 64, 64, cutn=8) > base
    assert step_memory_bytes(vqgan, clip, 64, 64, cutn=4, low_precision=True) == pytest.approx(base / 2, abs=1)
    assert step_memory_bytes(vqgan, clip, 64, 64, cutn=4, checkpoint_decoder=True) < base
    two = ClipEnsemble([(clip, 1.0), (clip, 0.5)])
    assert step_memory_bytes(vqgan, two, 64, 64, cutn=4) > base  # every guide sees its own cutouts


def test_estimate_computes_nothing_and_works_under_inference_mode(vqgan, clip):
    before = [p.clone() for p in vqgan.parameters()]
    with torch.inference_mode():  # how ComfyUI calls it
        assert step_memory_bytes(vqgan, clip, 32, 32, cutn=2) > 0
    assert all(torch.equal(a, b) for a, b in zip(before, vqgan.parameters(), strict=True))
