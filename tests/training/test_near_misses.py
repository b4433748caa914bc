"""Near-miss distractors (oblongs, rounded squares, ellipses, pairs): negatives that teach a shape CLIP what
"one square" (circle, triangle) means."""

import numpy as np
import pytest
import torch

from training import clip_train
from training.clip_data import NEAR_MISSES, distractors, mask_bank, near_miss_mask
from training.shape_judge import components
from training.shapes import PALETTE, make_dataset


def _box(m: np.ndarray) -> tuple[float, float]:
    """(long side / short side, share of the bounding box covered) of a mask's pixels above one half."""
    ys, xs = np.nonzero(m > 0.5)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    return max(h, w) / min(h, w), float((m > 0.5).sum()) / (h * w)


def test_near_misses_are_what_they_say():
    rng = np.random.default_rng(0)
    for _ in range(20):
        aspect, fill = _box(near_miss_mask("oblong", 64, rng))
        assert 1.3 <= aspect <= 2.5 and fill > 0.9  # a full rectangle, clearly longer than wide
        aspect, fill = _box(near_miss_mask("ellipse", 64, rng))
        assert 1.3 <= aspect <= 2.3 and 0.7 < fill < 0.86  # an ellipse fills pi/4 of its box
        m = near_miss_mask("rounded", 64, rng)
        aspect, fill = _box(m)
        ys, xs = np.nonzero(m > 0.5)
        assert aspect <= 1.35 and 0.75 < fill < 0.97  # nearly equal sides, corners cut
        assert m[ys.min(), xs.min()] < 0.5  # the top-left corner of its box is empty
        m = near_miss_mask("pair", 64, rng)
        _, sizes = components(m > 0.5)
        assert len(sizes) == 2 and min(sizes) > 0.5 * max(sizes)  # two separate shapes of about one size
    with pytest.raises(ValueError, match="valid: oblong, rounded, ellipse, pair"):
        near_miss_mask("hexagon", 64, rng)


def test_the_bank_and_distractors_with_near_misses():
    plain = mask_bank(6, 64, np.random.default_rng(1))
    near = mask_bank(6, 64, np.random.default_rng(1), near_misses=("oblong", "pair"))
    assert "near" not in plain and near["near"].shape == (6, 1, 64, 64)
    assert all(torch.equal(plain[k], near[k]) for k in plain)  # the other banks (and old configs) are unchanged
    attrs = [{"fg": "red", "bg": "blue", "shape": "square"}] * 6
    x = distractors(attrs, near, torch.Generator().manual_seed(0), 64, shape_focus=0.0, near_miss=1.0)
    bank = near["near"][:, 0]
    for img in x:  # every distractor is one of the near-miss masks in the sample's colours
        fg, bg = (torch.tensor(PALETTE[c], dtype=torch.float32) / 255 for c in ("red", "blue"))
        m = ((img - bg.view(3, 1, 1)) / (fg - bg).view(3, 1, 1))[0]
        assert min(float((m - b).abs().max()) for b in bank) < 1e-5
    with pytest.raises(ValueError, match="needs a mask bank made with near_misses"):
        distractors(attrs, plain, torch.Generator(), 64, near_miss=0.5)
    assert set(NEAR_MISSES) == {"oblong", "rounded", "ellipse", "pair"}


def test_clip_train_near_miss_option(tmp_path, one_thread):
    make_dataset(str(tmp_path / "shapes"), 32, 8, 64, 0)
    base = ["--config", "training/configs/demo_clip_resnet.json", "--data", str(tmp_path / "shapes"), "--steps", "1",
            "--set", "batch_size=8", "--set", "mask_bank=6"]
    clip_train.main([*base, "--out", str(tmp_path / "plain")])
    clip_train.main([*base, "--out", str(tmp_path / "near"), "--set", "near_miss=0.5"])
    from vqgan_core.clip.guide import load_clip

    a, b = (load_clip(str(tmp_path / d)).model.state_dict() for d in ("plain", "near"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the step saw other negatives
    with pytest.raises(ValueError, match="near_miss must be in"):
        clip_train.main([*base, "--out", str(tmp_path / "bad"), "--set", "near_miss=0.9"])
    with pytest.raises(ValueError, match="near_miss_kinds must be a non-empty JSON list of oblong"):
        clip_train.main([*base, "--out", str(tmp_path / "bad"), "--set", 'near_miss_kinds=["hexagon"]'])
