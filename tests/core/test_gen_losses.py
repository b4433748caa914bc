"""Loss values on known vectors, the stop rule, TV and init pull-back decay."""

import math

import pytest
import torch

from vqgan_core.objective.losses import clamp_with_grad, init_weight_factor, prompt_loss, spherical_dist, tv_loss


def test_spherical_distance_known_values():
    e = torch.eye(3)
    assert spherical_dist(e[0], e[0]).item() == pytest.approx(0.0, abs=1e-6)
    assert spherical_dist(e[0], e[1]).item() == pytest.approx(math.pi**2 / 8, rel=1e-6)  # 90 degrees
    assert spherical_dist(e[0], -e[0]).item() == pytest.approx(math.pi**2 / 2, rel=1e-5)  # 180 degrees
    assert spherical_dist(3 * e[0], 0.5 * e[1]).item() == pytest.approx(math.pi**2 / 8, rel=1e-6)  # scale-free


def test_prompt_loss_weights_signs_and_items():
    e = torch.eye(4)
    img = torch.stack([e[0], e[0]]).view(1, 2, 4)  # 1 item, 2 cutouts, both == e0
    targets = torch.stack([e[0], e[1]])
    w = torch.tensor([[2.0, -0.5]])
    loss = prompt_loss(img, targets, w, torch.full((2,), -math.inf))
    # 2 * d(e0,e0) + 0.5 * (-d(e0,e1)) = -0.5 * pi^2/8
    assert loss.item() == pytest.approx(-0.5 * math.pi**2 / 8, rel=1e-6)
    # two items with disjoint targets (weight 0 = not used by that item)
    img2 = torch.stack([e[0], e[1]]).view(2, 1, 4)
    loss2 = prompt_loss(img2, targets, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.full((2,), -math.inf))
    assert torch.allclose(loss2, torch.zeros(2), atol=1e-6)


def test_stop_cuts_gradient_but_keeps_value():
    a = torch.tensor([[[1.0, 0.2]]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0]])
    w = torch.ones(1, 1)
    d = spherical_dist(a.detach(), t).item()
    free = prompt_loss(a, t, w, torch.tensor([-math.inf]))
    stopped = prompt_loss(a, t, w, torch.tensor([d + 0.1]))  # already closer than stop
    assert stopped.item() == pytest.approx(free.item())
    (g_free,) = torch.autograd.grad(free.sum(), a)
    (g_stop,) = torch.autograd.grad(stopped.sum(), a)
    assert g_free.abs().sum() > 0 and g_stop.abs().sum() == 0


def test_tv_and_init_decay_and_clamp():
    img = torch.zeros(1, 1, 2, 2)
    img[..., 0, 0] = 1.0
    assert tv_loss(img).item() == pytest.approx(0.5 + 0.5)  # one of two pairs differs per axis
    assert init_weight_factor(0, 100, "classic") == 0.5 and init_weight_factor(2, 100, "classic") == pytest.approx(0.1)
    assert init_weight_factor(50, 100, "linear") == 0.5 and init_weight_factor(7, 100, "none") == 1.0
    with pytest.raises(ValueError, match="valid"):
        init_weight_factor(0, 1, "exp")
    x = torch.tensor([1.5, -0.5, 0.5], requires_grad=True)
    y = clamp_with_grad(x, 0.0, 1.0)
    assert y.tolist() == [1.0, 0.0, 0.5]
    y.backward(torch.tensor([1.0, 1.0, 1.0]))  # descent lowers x: 1.5 moves back into range (kept), -0.5 away (cut)
    assert x.grad.tolist() == [1.0, 0.0, 1.0]


def test_circular_tv_sees_the_seam():
    """A tile whose left and right edges differ is rough across the seam: only the circular TV sees it."""
    img = torch.zeros(1, 1, 4, 4)
    img[..., -1] = 1.0  # last column bright: one step inside (0 -> 1), one across the seam (1 -> 0)
    assert tv_loss(img).item() == pytest.approx(4 / 12)
    assert tv_loss(img, circular=True).item() == pytest.approx(8 / 16)
    smooth = torch.ones(1, 1, 4, 4)
    assert tv_loss(smooth, circular=True).item() == 0
