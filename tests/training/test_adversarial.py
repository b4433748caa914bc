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


def test_attack_towards_moves_wrong_images_to_their_caption():
    model = load_clip("demo-robust").model.float().eval()
    txt = torch.nn.functional.normalize(torch.randn(4, model.text_projection.shape[1], generator=torch.Generator().manual_seed(0)), dim=-1)
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    c = {"adv_eps": 1.5, "adv_steps": 3}

    def sim(xx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (torch.nn.functional.normalize(model.encode_image(clip_train.normalize(xx)), dim=-1) * txt).sum(1)

    pushed = clip_train.attack_towards(model, x, txt, c, torch.Generator().manual_seed(2))
    assert (sim(pushed) > sim(x)).all()  # every image now matches its text better
    assert (pushed - x).flatten(1).norm(dim=1).max() <= 1.5 + 1e-5


def test_clip_train_attacks_distractors_when_asked(tmp_path, one_thread):
    make_dataset(str(tmp_path / "shapes"), 32, 8, 64, 0)
    base = ["--config", "training/configs/demo_clip_resnet.json", "--data", str(tmp_path / "shapes"), "--steps", "1",
            "--set", "batch_size=8", "--set", "adv_eps=2", "--set", "adv_steps=1"]
    clip_train.main([*base, "--out", str(tmp_path / "plain")])
    clip_train.main([*base, "--out", str(tmp_path / "pushed"), "--set", "adv_distract=1"])
    a, b = (load_clip(str(tmp_path / d)).model.state_dict() for d in ("plain", "pushed"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the negatives the step saw were the pushed ones
    with pytest.raises(ValueError, match="adv_distract must be in"):
        clip_train.main([*base, "--out", str(tmp_path / "bad"), "--set", "adv_distract=2"])
