"""The CUDA fast paths of the VQGAN layers (split GroupNorm, explicit attention) match the reference ops.

They run on CUDA only, so their maths is checked here on CPU against ``F.group_norm`` and SDPA.
"""

import pytest
import torch
import torch.nn.functional as F

from vqgan_core.vqgan.layers import group_norm_split, normalize, spatial_attention


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_split_matches_group_norm_fp32(channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 9, 7, generator=g) * 3 + 1.5
    w, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    w1, w2 = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    b1, b2 = b.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ref = F.group_norm(x1, 32, w1, b1, 1e-6)
    out = group_norm_split(x2, 32, w2, b2, 1e-6)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    gy = torch.randn(ref.shape, generator=g)
    (ref * gy).sum().backward()
    (out * gy).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(w2.grad, w1.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b2.grad, b1.grad, atol=1e-4, rtol=1e-4)


def test_group_norm_split_bf16_close_and_stays_bf16():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 128, 16, 16, generator=g) * 2 - 4
    w, b = torch.rand(128, generator=g) + 0.5, torch.randn(128, generator=g)
    ref = F.group_norm(x, 32, w, b, 1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = group_norm_split(x.bfloat16(), 32, w.bfloat16(), b.bfloat16(), 1e-6)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1  # bf16 input rounding (2^-9 relative) dominates


def test_normalize_keeps_taming_state_dict_keys():
    n = normalize(64)
    assert isinstance(n, torch.nn.GroupNorm) and set(n.state_dict()) == {"weight", "bias"}
    x = torch.randn(1, 64, 4, 4)
    torch.testing.assert_close(n(x), F.group_norm(x, 32, n.weight, n.bias, 1e-6))


def test_explicit_attention_matches_sdpa():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 1, 64, 320, generator=g) for _ in range(3))
    torch.testing.assert_close(spatial_attention(q, k, v, explicit=True), F.scaled_dot_product_attention(q, k, v),
                               atol=1e-5, rtol=1e-4)


def test_group_norm_split_bf16_backward_is_accurate():
    """The written-out backward in bf16 stays within bf16 rounding of an fp64 reference, also for inputs
    whose group means are far from 0 (where the closed form's terms could cancel)."""
    g = torch.Generator().manual_seed(3)
    for offset in (0.0, 5.0):
        x = (torch.randn(2, 128, 16, 16, generator=g) + offset).bfloat16()
        w, b = (torch.rand(128, generator=g) + 0.5).bfloat16(), torch.randn(128, generator=g).bfloat16()
        gy = torch.randn(x.shape, generator=g).bfloat16()
        xr = x.double().requires_grad_(True)
        F.group_norm(xr, 32, w.double(), b.double(), 1e-6).backward(gy.double())
        xx = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        group_norm_split(xx, 32, w, b, 1e-6).backward(gy.contiguous(memory_format=torch.channels_last))
        assert xx.grad.dtype == torch.bfloat16 and xx.grad.is_contiguous(memory_format=torch.channels_last)
        assert (xx.grad.double() - xr.grad).abs().max() / xr.grad.abs().max() < 0.02


def test_group_norm_split_with_fp32_affine_on_bf16_input():
    """The loop's private bf16 decoder keeps GroupNorm parameters fp32: same result, bf16 out."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 64, 8, 8, generator=g).bfloat16()
    w, b = torch.rand(64, generator=g) + 0.5, torch.randn(64, generator=g)
    mixed = group_norm_split(x, 32, w, b, 1e-6)
    same = group_norm_split(x, 32, w.bfloat16(), b.bfloat16(), 1e-6)
    assert mixed.dtype == torch.bfloat16 and (mixed.float() - same.float()).abs().max() < 0.05


def test_group_norm_split_on_inputs_without_spatial_dims():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 64, generator=g)
    w, b = torch.rand(64, generator=g) + 0.5, torch.randn(64, generator=g)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    gy = torch.randn(3, 64, generator=g)
    F.group_norm(x1, 8, w, b, 1e-6).backward(gy)
    out = group_norm_split(x2, 8, w, b, 1e-6)
    out.backward(gy)
    torch.testing.assert_close(out, F.group_norm(x, 8, w, b, 1e-6), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-4, rtol=1e-4)


def test_group_norm_split_bf16_output_rounds_once_for_large_means():
    """Scale and shift stay fp32 up to the one rounding of the output: at |mean|/std = 20 the bf16 output is
    within about one bf16 step of an fp64 reference (rounding scale and shift to bf16 first doubled that)."""
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(1, 128, 32, 32, generator=g) + 20 + 0.5 * torch.randn(1, 128, 1, 1, generator=g)).bfloat16()
    w, b = torch.rand(128, generator=g) + 0.5, torch.randn(128, generator=g)
    ref = F.group_norm(x.double(), 32, w.double(), b.double(), 1e-6)
    out = group_norm_split(x.contiguous(memory_format=torch.channels_last), 32, w, b, 1e-6)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max() < 0.11  # 0.086 now; 0.166 with bf16 scale and shift


def test_group_norm_split_traces_as_one_graph_in_channels_last(monkeypatch):
    """compile="blocks" compiles each decoder block whole: the split GroupNorm (its out= writes in particular)
    must not break the graph for the channels_last bf16 inputs of a CUDA run."""
    from vqgan_core.vqgan import layers
    from vqgan_core.vqgan.layers import ResnetBlock

    monkeypatch.setattr(layers, "FAST_PATH_DEVICES", {"cpu"})
    blk = ResnetBlock(64, 64, 0.0, 32).eval().requires_grad_(False).to(torch.bfloat16)
    blk = blk.to(memory_format=torch.channels_last)
    x = torch.randn(1, 64, 8, 8).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(blk)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
