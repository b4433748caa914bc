"""Image-space loss terms: values on known images, the weight convention, parsing and use in a run."""

import pytest
import torch

from vqgan_core import load_vqgan
from vqgan_core.clip.guide import load_clip
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import run_generation
from vqgan_core.engine.terms import ImageLoss
from vqgan_core.objective.image_losses import IMAGE_LOSSES, image_loss_names, image_losses, parse_image_losses

pytestmark = pytest.mark.usefixtures("one_thread")


def test_values_on_known_images():
    mirror = torch.rand(2, 3, 8, 4)
    sym = torch.cat([mirror, mirror.flip(-1)], -1)
    assert torch.allclose(IMAGE_LOSSES.get("symmetry")(sym), torch.zeros(2))
    assert (IMAGE_LOSSES.get("symmetry_vertical")(sym) > 0).all()
    grey, red = torch.full((1, 3, 4, 4), 0.5), torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1
    sat = IMAGE_LOSSES.get("saturation")
    assert sat(grey).item() == 0 and sat(red).item() == -1  # positive weight -> more saturated
    assert IMAGE_LOSSES.get("brightness")(torch.ones(1, 3, 2, 2)).item() == pytest.approx(-1)
    flat, checker = torch.full((1, 3, 4, 4), 0.3), torch.zeros(1, 3, 4, 4)
    checker[..., ::2, ::2] = 1
    assert IMAGE_LOSSES.get("contrast")(flat).item() == pytest.approx(0, abs=1e-6)
    assert IMAGE_LOSSES.get("contrast")(checker).item() < -0.1
    assert IMAGE_LOSSES.get("smoothness")(flat).item() == 0
    inside, cut = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    inside[..., 8:24, 8:24] = 1  # a square well inside: the 2-pixel frame is one flat colour
    cut[..., 8:32, 8:24] = 1  # the same square reaching the bottom edge
    border = IMAGE_LOSSES.get("plain_border")
    assert border(inside).item() == 0 and border(cut).item() > 0.01  # positive weight -> a plain frame
    both = image_losses(red, {"saturation": 2.0, "brightness": -1.0})
    assert both.item() == pytest.approx(2 * -1 + -1 * -0.299)


def test_parsing_and_errors():
    assert parse_image_losses("symmetry:0.5, saturation") == {"symmetry": 0.5, "saturation": 1.0}
    assert parse_image_losses("") == {} and parse_image_losses({"contrast": 2}) == {"contrast": 2.0}
    with pytest.raises(ValueError, match="valid names: brightness, contrast, plain_border, saturation, smoothness, symmetry"):
        parse_image_losses("symetry:1")
    with pytest.raises(ValueError, match="must be a number"):
        parse_image_losses("symmetry:lots")
    with pytest.raises(ValueError, match="finite"):
        parse_image_losses("symmetry:nan")
    with pytest.raises(ValueError, match="given twice"):
        parse_image_losses("symmetry:1,symmetry:2")
    assert GenerationConfig(image_losses="symmetry:2").image_losses == {"symmetry": 2.0}
    assert GenerationConfig(image_losses="").image_losses is None
    assert "symmetry_vertical" in image_loss_names()


def _runs(taming_fixtures, tiny_clip_dir, *extras: dict) -> list[torch.Tensor]:  # noqa: ANN001
    """Images of one short tiny-model run per ``extras`` (settings over a shared base)."""
    vq, clip = load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt"), load_clip(str(tiny_clip_dir))
    base = {"prompts": "a red circle", "width": 32, "height": 32, "steps": 12, "seed": 1, "cutn": 2,
            "precision": "fp32", "lr": 0.2}
    return [run_generation(vq, clip, GenerationConfig(**base, **extra)).images for extra in extras]


def test_symmetry_weight_makes_the_image_more_symmetric(taming_fixtures, tiny_clip_dir):
    plain, sym = _runs(taming_fixtures, tiny_clip_dir, {}, {"image_losses": {"symmetry": 500.0}})
    asym = IMAGE_LOSSES.get("symmetry")
    # measured 0.70 of the plain run's asymmetry (codes snap to the codebook, which limits how symmetric it gets)
    assert asym(sym).item() < 0.8 * asym(plain).item()


def test_plain_border_weight_flattens_the_frame(taming_fixtures, tiny_clip_dir):
    border = {"image_losses": {"plain_border": 500.0}}
    # image_losses_from: the term waits for that fraction of the run; at 1.0 it never switches on
    plain, flat, late = _runs(taming_fixtures, tiny_clip_dir, {}, border, {**border, "image_losses_from": 1.0})
    busy = IMAGE_LOSSES.get("plain_border")
    assert busy(flat).item() < 0.5 * busy(plain).item()
    assert torch.equal(late, plain)
    with pytest.raises(ValueError, match="start is a fraction of the run"):
        ImageLoss("plain_border", 1.0, start=1.5)
