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


def test_mined_negatives_feed_a_fine_tuning_round(tmp_path, one_thread):
    """mine_negatives records every generation with the judge's verdict; clip_train starts from a folder
    (``init``) and takes the rejected images as extra negatives; a folder of another shape is refused by name."""
    import pytest

    from training import mine_negatives

    make_dataset(str(tmp_path / "shapes"), 48, 12, 64, 0)
    neg = tmp_path / "neg"
    res = mine_negatives.mine("demo", ["demo"], 2, 3, neg, {"steps": 1, "cutn": 2})
    rows = [json.loads(line) for line in (neg / "negatives.jsonl").read_text().splitlines()]
    assert res["made"] == 2 and len(rows) == 2 and {r["shape"] for r in rows} == {"circle", "square"}
    assert all((neg / r["file"]).is_file() and "all_four" in r for r in rows)
    assert mine_negatives.mine("demo", ["demo"], 2, 3, neg, {"steps": 1, "cutn": 2})["made"] == 0  # resumes
    rows[0]["all_four"] = True  # a generation the judge passed is no negative
    (neg / "negatives.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert clip_train.load_negatives([neg], 64).shape == (1, 3, 64, 64)
    with pytest.raises(SystemExit) as e:  # a bad setting is one line, no traceback
        mine_negatives.main(["--clip", "demo", "--out", str(tmp_path / "x"), "--set", "stepz=3"])
    assert e.value.code == 2

    base = ["--config", "training/configs/demo_clip.json", "--data", str(tmp_path / "shapes"), "--steps", "1",
            "--set", "batch_size=8"]
    clip_train.main([*base, "--out", str(tmp_path / "r0")])
    clip_train.main([*base, "--out", str(tmp_path / "r1"), "--set", f'init="{tmp_path / "r0"}"',
                     "--set", f'negatives=["{neg}"]'])
    assert load_clip(str(tmp_path / "r1")).encode_image(torch.rand(1, 3, 64, 64)).isfinite().all()
    clip_train.main([*base, "--steps", "0", "--out", str(tmp_path / "same"), "--set", f'init="{tmp_path / "r0"}"'])
    a, b = (load_clip(str(tmp_path / d)).model.state_dict() for d in ("r0", "same"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # zero steps from init: the init's weights
    with pytest.raises(ValueError, match="negatives must be a JSON list of folders"):
        clip_train.main([*base, "--out", str(tmp_path / "r3"), "--set", f"negatives={neg}"])  # a bare path
    with pytest.raises(ValueError, match="does not fit this config"):
        clip_train.main([*base, "--out", str(tmp_path / "r2"), "--set", f'init="{tmp_path / "r0"}"',
                         "--set", "embed_dim=64"])


def test_freeze_text_trains_the_image_tower_only(tmp_path, one_thread):
    """A colour CLIP retrained with ``freeze_text`` keeps its text embeddings bit for bit (the feed-forward
    network reads them), while its image tower learns."""
    import pytest

    make_dataset(str(tmp_path / "shapes"), 32, 8, 64, 0)
    base = ["--config", "training/configs/demo_clip.json", "--data", str(tmp_path / "shapes"), "--set", "batch_size=8"]
    clip_train.main([*base, "--steps", "1", "--out", str(tmp_path / "r0")])
    clip_train.main([*base, "--steps", "2", "--out", str(tmp_path / "r1"), "--set", f'init="{tmp_path / "r0"}"',
                     "--set", "freeze_text=true"])
    a, b = (load_clip(str(tmp_path / d)) for d in ("r0", "r1"))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("visual.") and k != "logit_scale")
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("visual."))
    text = ["a red circle on a blue background"]
    assert torch.equal(a.encode_text(text), b.encode_text(text))
    with pytest.raises(ValueError, match="freeze_text must be true or false"):
        clip_train.main([*base, "--steps", "1", "--out", str(tmp_path / "bad"), "--set", "freeze_text=1"])
    with pytest.raises(ValueError, match="freeze_text needs init"):
        clip_train.main([*base, "--steps", "1", "--out", str(tmp_path / "bad"), "--set", "freeze_text=true"])


def test_every_shipped_clip_config_is_valid():
    """The configs the README's commands name hold only known keys with valid values (a typo fails here, not
    half an hour into a run)."""
    from pathlib import Path

    configs = sorted(Path("training/configs").glob("demo_clip*.json"))
    assert len(configs) >= 4
    for f in configs:
        c = clip_train.settings(str(f), [])
        assert c["model_name"].startswith("demo-clip"), f
