"""The demo-CLIP trainer end to end on a tiny shapes world: the folder it writes loads as a CLIP guide."""

import json

import torch

from training import clip_train
from training.shapes import make_dataset
from vqgan_core.clip.guide import load_clip


def test_clip_train_writes_a_loadable_open_clip_folder(tmp_path, one_thread):
    make_dataset(str(tmp_path / "shapes"), 48, 12, 64, 0)
    out = tmp_path / "clip"
    clip_train.main(["--config", "training/configs/demo_clip.json", "--data", str(tmp_path / "shapes"),
                     "--out", str(out), "--steps", "2", "--set", "batch_size=16"])
    info = json.loads((out / "train_info.json").read_text())
    assert set(info["zero_shot_val"]) >= {"fg", "bg", "shape"}
    guide = load_clip(str(out))
    assert guide.image_size == 64
    e = guide.encode_image(torch.rand(2, 3, 64, 64))
    t = guide.encode_text(["a red circle on a blue background"])
    assert e.shape == (2, t.shape[-1]) and torch.isfinite(e).all()
