"""Cutout shapes, augmentation codes, generator-driven determinism, registries that reject unknown names."""

import pytest
import torch

from vqgan_core.views.augment import AUGMENTS, Augmenter, parse_augments
from vqgan_core.views.cutouts import Cutouts, cutout_names

pytestmark = pytest.mark.usefixtures("one_thread")


def _img(b=2, h=24, w=40):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, h, w, generator=g)


@pytest.mark.parametrize("method", ["latest", "crops", "mixed"])
def test_cutout_shapes_and_determinism(method):
    cut = Cutouts(method, cutn=5, cut_pow=1.0, augmenter=Augmenter("Af,Pe,Ji,Er"))
    x = _img()
    a = cut(x, 16, torch.Generator().manual_seed(3))
    b = cut(x, 16, torch.Generator().manual_seed(3))
    c = cut(x, 16, torch.Generator().manual_seed(4))
    assert a.shape == (10, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cutouts_are_item_major_and_differentiable():
    x = _img().requires_grad_(True)
    out = Cutouts("crops", cutn=3, augmenter=None)(x, 8, torch.Generator().manual_seed(0))
    out[:3].sum().backward()  # the first 3 cutouts belong to item 0 only
    assert x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() == 0


def test_latest_without_augments_is_pooled_image():
    x = _img(1, 16, 16)
    out = Cutouts("latest", cutn=2, augmenter=None)(x, 16, torch.Generator())
    assert torch.allclose(out[0], x[0]) and torch.equal(out[0], out[1])


def test_cut_pow_shapes_crop_sizes():
    x = torch.zeros(1, 1, 64, 64)
    x[..., 28:36, 28:36] = 1.0  # a small bright centre
    g = torch.Generator().manual_seed(0)
    big = Cutouts("crops", cutn=64, cut_pow=0.05)(x, 8, g).mean().item()
    small = Cutouts("crops", cutn=64, cut_pow=20.0)(x, 8, torch.Generator().manual_seed(0)).mean().item()
    assert abs(big - 64 / 4096) < 0.01  # near-full crops average the whole image
    assert small != pytest.approx(big, abs=1e-3)


@pytest.mark.parametrize("code", sorted(AUGMENTS.names()))
def test_every_augment_code_runs_and_is_deterministic(code):
    x = _img(4, 32, 32)
    aug = Augmenter([code], noise_fac=0.0)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.isfinite(a).all() and torch.equal(a, b)


def test_geometric_identity_and_flip():
    x = _img(3, 8, 8)
    flipped = Augmenter(["Hf"], noise_fac=0.0)
    g = torch.Generator().manual_seed(0)
    out = flipped(x, g)
    for i in range(3):  # each cutout is either untouched or exactly mirrored
        assert torch.allclose(out[i], x[i], atol=1e-5) or torch.allclose(out[i], x[i].flip(-1), atol=1e-5)
    assert torch.equal(Augmenter("none", noise_fac=0.0)(x, g), x)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*Af.*Er"):
        parse_augments("Af,Xx")
    with pytest.raises(ValueError, match="valid names: crops, latest, mixed"):
        Cutouts("nope")
    with pytest.raises(ValueError, match="valid"):
        Augmenter("Af", padding="wrap")
    assert cutout_names() == ["crops", "latest", "mixed"]


def test_color_matrix_identity_luma_and_gray():
    from vqgan_core.views.augment import color_matrix

    z, o = torch.zeros(3), torch.ones(3)
    a, b = color_matrix(z, o, o, z)
    torch.testing.assert_close(a, torch.eye(3).expand(3, 3, 3), atol=1e-6, rtol=0)
    assert b.abs().max() < 1e-7
    luma = torch.tensor([0.299, 0.587, 0.114])
    a, b = color_matrix(z, o, o, torch.tensor([0.3, 1.0, -2.0]))  # hue rotation keeps luma
    torch.testing.assert_close(luma @ a, luma.expand(3, 3), atol=1e-5, rtol=0)
    a, b = color_matrix(torch.full((1,), 0.1), torch.full((1,), 0.5), torch.zeros(1), torch.zeros(1))
    rgb = torch.tensor([0.9, 0.2, 0.4])
    out = a[0] @ rgb + b[0]  # saturation 0: gray of (rgb + 0.1) * 0.5
    gray = float(luma @ (rgb + 0.1)) * 0.5
    torch.testing.assert_close(out, torch.full((3,), gray), atol=1e-5, rtol=0)
