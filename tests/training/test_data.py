"""Datasets, sampler and config: bad images never stop a run, order is resumable, typos are errors."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from PIL import Image

from tests.train_helpers import BAD_KINDS, ODD_KINDS, make_coco
from training.config import DataConfig, TrainConfig, TrainConfigError
from training.data import ImageDataset, ResumableSampler, coco_split, collate, resolve_splits, to_rgb


def test_coco_layout_bad_and_odd_images(tmp_path):
    root = make_coco(tmp_path / "coco", n_train=12, n_val=3)
    train, val = resolve_splits(DataConfig(path=str(root), resolution=16, min_size=16))
    assert len(train) == 12 and len(val) == 3
    _, caps = coco_split(root, "train")
    assert all(len(c) == 1 for c in caps.values())
    ds = ImageDataset(train, 16, min_size=16)
    stats: Counter = Counter()
    for i in range(len(ds)):
        x, s = ds[(i, 0)]
        assert x.dtype == torch.uint8 and x.shape == (3, 16, 16)
        stats.update(s)
    assert stats["skipped_too_small"] >= 1
    assert sum(v for k, v in stats.items() if k.startswith("skipped_")) >= len(BAD_KINDS)  # corrupt + truncated too
    for mode in ("L", "CMYK", "RGBA", "P", "I;16"):
        assert stats[f"converted_{mode}"] >= 1, (mode, stats)
    batch, bstats = collate([ds[(i, 0)] for i in range(4)])
    assert batch.shape == (4, 3, 16, 16) and sum(bstats.values()) >= 1
    assert len(ODD_KINDS) == 5


def test_alpha_composited_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    out = to_rgb(img, Counter())
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_plain_folder_holds_out_validation(tmp_path):
    for i in range(30):
        Image.new("RGB", (20, 24), (i * 8, 0, 0)).save(tmp_path / f"{i}.png")
    train, val = resolve_splits(DataConfig(path=str(tmp_path), val_fraction=0.1))
    assert len(val) >= 1 and not set(train) & set(val) and len(train) + len(val) == 30
    with pytest.raises(ValueError, match="data.path is empty"):
        resolve_splits(DataConfig())


def test_crops_depend_on_key_only(tmp_path):
    Image.new("RGB", (64, 40)).save(tmp_path / "a.png")
    Image.effect_noise((64, 40), 50).convert("RGB").save(tmp_path / "a.png")
    ds = ImageDataset([tmp_path / "a.png"], 16)
    assert torch.equal(ds[(0, 3)][0], ds[(0, 3)][0])
    assert not torch.equal(ds[(0, 3)][0], ds[(0, 4)][0])


def test_sampler_resumes_midway_and_shards():
    full = ResumableSampler(10, seed=1)
    it = iter(full)
    seq = [next(it) for _ in range(25)]
    later = iter(ResumableSampler(10, seed=1, start=13))
    assert [next(later) for _ in range(12)] == seq[13:]
    assert sorted(i for i, _ in seq[:10]) == list(range(10))
    r0, r1 = iter(ResumableSampler(7, 0, 0, 2)), iter(ResumableSampler(7, 0, 1, 2))
    both = [next(r0)[0] for _ in range(4)] + [next(r1)[0] for _ in range(4)]
    assert set(both) == set(range(7))  # padded to 8 like DistributedSampler


def test_config_overrides_and_unknown_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {n_embed: 64}\ntrain: {batch_size: 2}\n")
    cfg = TrainConfig.load(p, ["train.batch_size=5", "optim.betas=[0.9, 0.99]", "loss.disc_start=1e3"])
    assert cfg.train.batch_size == 5 and cfg.optim.betas == (0.9, 0.99) and cfg.loss.disc_start == 1000
    assert cfg.model == {"n_embed": 64}
    with pytest.raises(TrainConfigError, match="valid keys.*batch_size"):
        TrainConfig.load(p, ["train.batch=3"])
    with pytest.raises(TrainConfigError, match="expected int"):
        TrainConfig.load(p, ["train.batch_size=abc"])
    with pytest.raises(TrainConfigError, match="not found"):
        TrainConfig.load(tmp_path / "missing.yaml")
