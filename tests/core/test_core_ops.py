"""Unit tests of the small pure-torch helpers the ComfyUI nodes call: scores, codebook edits, latent shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vqgan_core.latents.codebook_edit import code_colors, edit_region, mask_region, pick_codes, rect_region
from vqgan_core.latents.ops import crop_to_multiple, resize_latent
from vqgan_core.objective.score import clip_scores

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("comfy_stub_harness", REPO / "tests" / "comfy_stubs" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


# -- score -------------------------------------------------------------------------------------------------
def test_clip_scores_is_weighted_cosine_times_100():
    g = harness.tiny_guide()
    imgs = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        s_self = clip_scores(g, [(imgs[1:2], 1.0)], imgs)
        s_mix = clip_scores(g, [(imgs[0:1], 2.0), ("red", -1.0)], imgs)
        e_img = F.normalize(g.encode_image(imgs), dim=-1)
        e_t0 = F.normalize(g.encode_image(imgs[0:1])[0], dim=-1)
        e_txt = F.normalize(g.encode_text(["red"])[0], dim=-1)
        ens = clip_scores([(g, 1.0), (g, 3.0)], [(imgs[0:1], 2.0), ("red", -1.0)], imgs)
    assert s_self.shape == (3,) and float(s_self[1]) == pytest.approx(100, abs=1e-3)
    assert int(s_self.argmax()) == 1
    expected = 100 * (2 * e_img @ e_t0 - e_img @ e_txt) / 3
    torch.testing.assert_close(s_mix, expected)
    torch.testing.assert_close(ens, s_mix)  # same guide twice: the weighted mean is unchanged
    with pytest.raises(ValueError, match="at least one target"):
        clip_scores(g, [], imgs)


def test_clip_scores_of_regional_targets_see_the_region():
    g = harness.tiny_guide()
    imgs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    top = torch.zeros(16, 16)
    top[:8] = 1
    with torch.no_grad():
        region = clip_scores(g, [("red", 1.0, top)], imgs)
        cropped = clip_scores(g, [("red", 1.0)], imgs[..., :8, :])
        mixed = clip_scores(g, [("red", 1.0, top), (imgs[0:1], 3.0, None)], imgs)
        whole = clip_scores(g, [(imgs[0:1], 1.0)], imgs)
    torch.testing.assert_close(region, cropped)  # a rectangle: its box, nothing greyed
    torch.testing.assert_close(mixed, (region + 3 * whole) / 4)  # weighted over all targets


# -- codebook ops ------------------------------------------------------------------------------------------
def test_code_colors_fixed_hash():
    idx = torch.tensor([[[0, 1], [1, 255]]])
    c = code_colors(idx)
    assert c.shape == (1, 3, 2, 2) and float(c.min()) >= 0 and float(c.max()) <= 1
    assert torch.equal(c[0, :, 0, 1], c[0, :, 1, 0]) and torch.equal(c[0, :, 0, 0], torch.zeros(3))
    torch.testing.assert_close(c[0, :, 0, 1], torch.tensor([97, 57, 23]) / 255)


def test_rect_region_covers_touched_tokens_and_clips():
    m = rect_region(2, 4, 5, 4, x=2, y=0, width=4, height=5)  # pixels 2..5 x 0..4 -> token cols 0-1, rows 0-1
    assert m.shape == (2, 4, 5) and m.dtype == torch.bool and int(m.sum()) == 2 * 4
    assert m[:, :2, :2].all()
    assert int(rect_region(1, 4, 4, 4, x=8, y=8, width=100, height=100).sum()) == 4  # clipped to the grid
    assert int(rect_region(1, 4, 4, 4, x=100, y=0, width=8, height=8).sum()) == 0


def test_mask_region_area_threshold_and_batch():
    mask = torch.zeros(16, 16)
    mask[:, 8:] = 1
    mask[0:4, 4:6] = 1  # half a token: area 0.5 is not > 0.5
    m = mask_region(mask, 3, 4, 4)
    assert m.shape == (3, 4, 4) and torch.equal(m[0], m[2])
    assert m[0, :, 2:].all() and not m[0, :, :2].any()
    per_item = torch.stack([torch.ones(8, 8), torch.zeros(8, 8)])
    assert mask_region(per_item, 2, 2, 2).flatten(1).sum(1).tolist() == [4, 0]


def test_pick_codes_tile_random_and_errors():
    assert pick_codes([3, 5], 5, "tile").tolist() == [3, 5, 3, 5, 3]
    r1, r2 = pick_codes([1, 7, 9], 50, "random", seed=4), pick_codes([1, 7, 9], 50, "random", seed=4)
    assert torch.equal(r1, r2) and set(r1.tolist()) == {1, 7, 9} and r1.shape == (50,)
    assert not torch.equal(r1, pick_codes([1, 7, 9], 50, "random", seed=5))
    with pytest.raises(ValueError, match="tile, random"):
        pick_codes([1], 3, "spiral")
    with pytest.raises(ValueError, match="at least one code"):
        pick_codes([], 3, "tile")


def test_edit_region_sets_vectors_without_touching_input():
    cb = torch.arange(12.0).view(4, 3)
    z = torch.randn(2, 3, 2, 2)
    z0 = z.clone()
    region = torch.zeros(2, 2, 2, dtype=torch.bool)
    region[1, 0, :] = True
    out = edit_region(z, cb, region, torch.tensor([2, 3]))
    assert torch.equal(z, z0) and out.is_contiguous() and out.shape == z.shape
    assert torch.equal(out[1, :, 0, 0], cb[2]) and torch.equal(out[1, :, 0, 1], cb[3])
    assert torch.equal(out[0], z[0]) and torch.equal(out[1, :, 1], z[1, :, 1])


# -- latent ops --------------------------------------------------------------------------------------------
def test_crop_to_multiple_centre_crops_and_explains():
    x = torch.arange(7 * 10.0).view(1, 1, 7, 10)
    y = crop_to_multiple(x, 4)
    assert y.shape == (1, 1, 4, 8) and torch.equal(y, x[..., 1:5, 1:9])
    assert crop_to_multiple(x[..., :4, :8], 4).shape == (1, 1, 4, 8)
    with pytest.raises(ValueError, match="needs at least 8x8"):
        crop_to_multiple(x, 8)


def test_resize_latent_modes():
    z = torch.randn(1, 2, 3, 4)
    big = resize_latent(z, 2.0, "nearest")
    assert torch.equal(big, z.repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert resize_latent(z, 1.5, "bilinear").shape == (1, 2, 4, 6)
    assert resize_latent(z, 0.25).shape == (1, 2, 1, 1)
    assert resize_latent(z.double(), 1.0).dtype == torch.float32
    with pytest.raises(ValueError, match="nearest, bilinear"):
        resize_latent(z, 2.0, "bicubic")


def test_interpolate_latents_ends_midpoint_and_slerp_norm():
    from vqgan_core.latents.ops import interpolate_latents

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    lin = interpolate_latents(a, b, 5, "linear").view(5, 2, 4, 3, 3)
    assert torch.equal(lin[0], a) and torch.equal(lin[-1], b)  # frame-major, both ends exact
    assert torch.allclose(lin[2], (a + b) / 2, atol=1e-6)
    b = b / b.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * a.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # equal norms
    sl = interpolate_latents(a, b, 7, "slerp").view(7, 2, -1)
    assert torch.allclose(sl.norm(dim=2), a.flatten(1).norm(dim=1).expand(7, 2), rtol=1e-4)  # on the sphere
    mid = interpolate_latents(a, b, 3, "linear").view(3, 2, -1)[1]
    assert mid.norm(dim=1).lt(0.9 * a.flatten(1).norm(dim=1)).all()  # the straight line dips inside the sphere
    same = interpolate_latents(a, a.clone(), 3, "slerp")  # parallel ends: no division by sin(0)
    assert torch.isfinite(same).all() and torch.allclose(same.view(3, 2, 4, 3, 3)[1], a)
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate_latents(a, b[:1], 3)
    with pytest.raises(ValueError, match="at least 2 frames"):
        interpolate_latents(a, b, 1)
    with pytest.raises(ValueError, match="valid: linear, slerp"):
        interpolate_latents(a, b, 3, "cubic")
