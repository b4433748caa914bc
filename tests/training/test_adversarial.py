"""PGD in pixel space (training.adversarial) and the demo-CLIP trainer's adversarial option."""

import json

import pytest
import torch

from training import clip_train
from training.adversarial import pgd_l2
from training.shapes import make_dataset
from vqgan_core.clip.guide import load_clip


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 1))


def test_pgd_raises_the_loss_inside_the_ball_and_leaves_parameters_alone():
    m = _model()
    x = torch.rand(5, 3, 16, 16)
    loss = lambda xx: m(xx).sum()  # noqa: E731
    adv = pgd_l2(loss, x, eps=0.5, steps=4, g=torch.Generator().manual_seed(1))
    assert loss(adv) > loss(x) + 0.1  # the attack found a worse image
    assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5  # within the L2 ball of every image
    assert adv.min() >= 0 and adv.max() <= 1  # still images
    assert all(p.grad is None for p in m.parameters())  # only the images got gradients
    again = pgd_l2(loss, x, eps=0.5, steps=4, g=torch.Generator().manual_seed(1))
    assert torch.equal(adv, again)  # same generator, same attack
    with pytest.raises(ValueError, match="eps must be > 0"):
        pgd_l2(loss, x, eps=0, steps=1, g=torch.Generator())


def test_clip_train_adversarial_option(tmp_path, one_thread):
    make_dataset(str(tmp_path / "shapes"), 32, 8, 64, 0)
    base = ["--config", "training/configs/demo_clip_resnet.json", "--data", str(tmp_path / "shapes"), "--steps", "1",
            "--set", "batch_size=8"]
    clip_train.main([*base, "--out", str(tmp_path / "adv"), "--set", "adv_eps=2", "--set", "adv_steps=2"])
    assert json.loads((tmp_path / "adv" / "train_info.json").read_text())["config"]["adv_eps"] == 2
    clip_train.main([*base, "--out", str(tmp_path / "clean")])
    a, b = (load_clip(str(tmp_path / d)).model.state_dict() for d in ("adv", "clean"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the step saw attacked images
    clip_train.main([*base, "--out", str(tmp_path / "later"), "--set", "adv_eps=2", "--set", "adv_after=1"])
    c = load_clip(str(tmp_path / "later")).model.state_dict()
    assert all(torch.equal(b[k], c[k]) for k in b)  # attacks start after step 1: this one step was clean
    with pytest.raises(ValueError, match="adv_frac must be in"):
        clip_train.main([*base, "--out", str(tmp_path / "bad"), "--set", "adv_eps=2", "--set", "adv_frac=0"])
