"""The memory estimate: what autograd really keeps in a step, measured on weight-less meta twins."""

from __future__ import annotations

import pytest
import torch

from vqgan_core.clip.guide import ClipEnsemble
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.memory_estimate import _OVERHEAD, run_memory_bytes, step_memory_bytes


def _real_saved_bytes(vqgan, clip, size, batch, cutn):
    """The same sum from a real forward pass on the CPU (real tensors, real arithmetic), weights excluded."""
    weights = {t.untyped_storage()._cdata for m in (vqgan, clip.model) for t in (*m.parameters(), *m.buffers())}
    saved, alive = {}, []

    def pack(t):
        if t.untyped_storage()._cdata not in weights:
            saved[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
            alive.append(t)
        return t

    f = vqgan.downsample_factor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        vqgan.decode(torch.zeros(batch, vqgan.config.embed_dim, size // f, size // f, requires_grad=True))
        s = clip.image_size
        clip.encode_image(torch.zeros(batch * cutn, 3, s, s, requires_grad=True))
    return sum(saved.values())


@pytest.mark.parametrize("size,batch,cutn", [(32, 1, 4), (64, 2, 3)])
def test_estimate_is_what_a_real_step_saves(vqgan, clip, size, batch, cutn):
    est = step_memory_bytes(vqgan, clip, size, size, batch=batch, cutn=cutn) / _OVERHEAD
    assert est == pytest.approx(_real_saved_bytes(vqgan, clip, size, batch, cutn), rel=1e-6)


def test_weights_are_not_counted(vqgan, clip):
    """A frozen layer saves its weight for backward; the weight is not memory the run adds."""
    from vqgan_core.engine.memory_estimate import _meta_twin, _saved_bytes

    net = torch.nn.Sequential(torch.nn.Linear(1000, 1000), torch.nn.SiLU()).requires_grad_(False)
    twin, weights = _meta_twin(net, torch.float32)
    x = torch.zeros(1, 1000, device="meta", requires_grad=True)
    assert _saved_bytes(lambda: twin(x), weights) == 4000  # SiLU's input row only, not the 4 MB weight


def test_estimate_scales_with_image_cutouts_views_precision_and_checkpointing(vqgan, clip):
    base = step_memory_bytes(vqgan, clip, 64, 64, cutn=4)
    assert step_memory_bytes(vqgan, clip, 128, 128, cutn=4) > 3 * base  # the decoder grows with the pixels
    assert step_memory_bytes(vqgan, clip, 64, 64, cutn=8) > base
    assert step_memory_bytes(vqgan, clip, 64, 64, cutn=4, views=3) > base  # each region is another CLIP pass
    half = step_memory_bytes(vqgan, clip, 64, 64, cutn=4, vqgan_dtype=torch.bfloat16, clip_dtype=torch.bfloat16)
    assert half == pytest.approx(base / 2, rel=0.1)  # normalisation statistics stay fp32
    assert step_memory_bytes(vqgan, clip, 64, 64, cutn=4, checkpoint_decoder=True) < base
    two = ClipEnsemble([(clip, 1.0), (clip, 0.5)])
    assert step_memory_bytes(vqgan, two, 64, 64, cutn=4) > base  # every guide sees its own cutouts


def test_run_memory_follows_the_runs_precision(vqgan, clip):
    cfg = GenerationConfig(width=64, height=64, cutn=4, precision="fp32")
    cpu = torch.device("cpu")
    assert run_memory_bytes(vqgan, clip, cfg, cpu) == step_memory_bytes(vqgan, clip, 64, 64, cutn=4)
    cfg.precision = "bf16"  # bf16 activations plus the run's bf16 copies of the CLIP and decoder weights
    copies = sum(p.numel() * 2 for m in (clip.model, vqgan.decoder) for p in m.parameters())
    bf16 = step_memory_bytes(vqgan, clip, 64, 64, cutn=4, vqgan_dtype=torch.bfloat16, clip_dtype=torch.bfloat16)
    assert run_memory_bytes(vqgan, clip, cfg, cpu) == bf16 + copies
    cfg.precision = "auto"  # fp32 on MPS
    assert run_memory_bytes(vqgan, clip, cfg, torch.device("mps")) == step_memory_bytes(vqgan, clip, 64, 64, cutn=4)
    codes = cfg.replace(method="codebook_sampling", batch_size=2)  # + fp32 logits over K codes per cell, x8
    k, cells = vqgan.codebook.shape[0], 2 * (64 // vqgan.downsample_factor) ** 2
    assert run_memory_bytes(vqgan, clip, codes, cpu) - run_memory_bytes(vqgan, clip, codes.replace(
        method="z_quantize"), cpu) == 8 * 4 * k * cells


def test_estimate_touches_no_weights_wherever_they_are(vqgan, clip):
    before = [p.clone() for p in vqgan.parameters()]
    with torch.inference_mode():  # how ComfyUI calls it
        assert step_memory_bytes(vqgan, clip, 32, 32, cutn=2) > 0
    assert all(torch.equal(a, b) for a, b in zip(before, vqgan.parameters(), strict=True))
    import copy

    split = copy.deepcopy(vqgan)
    split.decoder.to("meta")  # weights on two devices (a host's partial unload): the estimate does not care
    assert step_memory_bytes(split, clip, 32, 32, cutn=2) == step_memory_bytes(vqgan, clip, 32, 32, cutn=2)


def test_estimate_is_traced_once_per_models_and_sizes(vqgan, clip, monkeypatch):
    """A host asks before every run: the same models and sizes reuse the answer, other sizes trace anew."""
    from vqgan_core.engine import memory_estimate

    calls = []
    real = memory_estimate._step_memory_bytes
    monkeypatch.setattr(memory_estimate, "_step_memory_bytes", lambda *a: calls.append(a) or real(*a))
    first = step_memory_bytes(vqgan, clip, 48, 48, cutn=3)
    assert step_memory_bytes(vqgan, clip, 48, 48, cutn=3) == first and len(calls) == 1
    assert step_memory_bytes(vqgan, clip, 96, 48, cutn=3) > first and len(calls) == 2
