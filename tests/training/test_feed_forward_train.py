"""``python -m training.feed_forward``: caption sources, held-out phrases, a short run, exact resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from training import checkpointing as ck
from training.captions import held_out, load_captions, split_held_out
from training.feed_forward import REQUIRED, RESULT, FeedForwardTrainer, main
from training.ff_config import FFTrainConfig
from training.logger import read_metrics
from vqgan_core import load_feed_forward, load_vqgan, read_safetensors

CAPTIONS = [f"a {fg} {shape} on a {bg} background" for fg, bg in (("red", "blue"), ("green", "white"))
            for shape in ("circle", "square")]
TINY = ["model.width=16", "model.min_width=16", "model.noise_dim=2", "batch_size=4", "loss.cutn=2", "warmup=1",
        "threads=1", "tensorboard=false", "device=cpu", "log_every=1"]


@pytest.fixture()
def captions(tmp_path):
    p = tmp_path / "captions.txt"
    p.write_text("\n".join(CAPTIONS + ["", "  a red circle   on a blue background "]) + "\n")
    return p


def test_caption_sources(tmp_path, captions):
    assert load_captions(captions) == sorted(CAPTIONS)  # blank lines and repeats (spacing aside) dropped
    (tmp_path / "list.json").write_text(json.dumps(CAPTIONS[:2]))
    assert load_captions(tmp_path / "list.json") == sorted(CAPTIONS[:2])
    coco = tmp_path / "coco" / "annotations"
    coco.mkdir(parents=True)
    doc = {"images": [{"id": 1, "file_name": "1.jpg"}],
           "annotations": [{"image_id": 1, "id": 9, "caption": "A dog.\n"}, {"image_id": 1, "id": 8, "caption": "A cat"}]}
    (coco / "captions_train2017.json").write_text(json.dumps(doc))
    assert load_captions(tmp_path / "coco") == ["A cat", "A dog."]
    with pytest.raises(FileNotFoundError, match="captions_val2017.json"):
        load_captions(tmp_path / "coco", "val")
    doc["annotations"][0].pop("caption")
    (coco / "captions_train2017.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"annotations\[0\] has no 'caption'"):
        load_captions(tmp_path / "coco")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no captions"):
        load_captions(tmp_path / "empty.txt")


def test_held_out_phrases_are_whole_words():
    assert held_out("a blue background with a red square", ["red square"])
    assert not held_out("a red circle on a square background", ["red square"])
    assert not held_out("a redsquare", ["red square"])
    kept, gone = split_held_out(CAPTIONS, ["red square"])
    assert gone == ["a red square on a blue background"] and len(kept) == 3
    with pytest.raises(ValueError, match="nothing is left"):
        split_held_out(CAPTIONS, ["background"])


def _weights(path):
    return read_safetensors(path)[0]


def test_short_run_writes_a_loadable_model_and_learns(tmp_path, captions):
    cfg = FFTrainConfig.load(None, [*TINY, "steps=12", "lr=0.01", "val_every=12", "save_every=6", "keep_last=1",
                                    "holdout=[red square]"])
    out = tmp_path / "run"
    t = FeedForwardTrainer(cfg, captions, out)
    try:
        first = t.validate()["val_loss"]
        result = t.fit()
    finally:
        t.close()
    assert result == out / RESULT
    net = load_feed_forward(result, vqgan=load_vqgan("demo"))  # checked against the VQGAN it was trained for
    assert net.config.clip == "demo" and net.config.extra["holdout"] == ["red square"]
    assert net.config.grid == (16, 16) and net.config.noise_dim == 2
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[-1]["val_loss"] < first  # the fixed captions' loss went down
    assert "val_loss_held_out" in rows[-1]  # the held-out caption was drawn and scored
    assert (out / "val" / "step_00000012.png").is_file()
    assert [p.name for p in ck.list_checkpoints(out, REQUIRED)] == ["step_00000012"]  # keep_last=1


def test_resume_is_exact(tmp_path, captions):
    base = [*TINY, "steps=4", "val_every=0", "save_every=2"]
    straight = tmp_path / "straight"
    assert main(["--data", str(captions), "--out", str(straight), *base]) == 0
    split = tmp_path / "split"
    t = FeedForwardTrainer(FFTrainConfig.load(None, base), captions, split)
    try:
        t.train_step()
        t.train_step()
        t.save()
    finally:
        t.close()
    assert main(["--data", str(captions), "--out", str(split), "--resume", *base]) == 0
    a, b = _weights(straight / RESULT), _weights(split / RESULT)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_metrics(split)]
    assert steps == [3, 4]  # the resumed run logs from where it went on


def test_resume_refuses_another_model(tmp_path, captions, capsys):
    out = tmp_path / "run"
    assert main(["--data", str(captions), "--out", str(out), *TINY, "steps=1", "val_every=0"]) == 0
    assert main(["--data", str(captions), "--out", str(out), "--resume", *TINY, "model.width=32", "steps=2"]) == 2
    assert "model" in capsys.readouterr().err


def test_bad_settings_are_clear(tmp_path, captions, capsys):
    assert main(["--data", str(captions), "--out", str(tmp_path / "r"), "loss.cutns=3"]) == 2
    assert "unknown config keys ['loss.cutns']" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "caption data not found" in capsys.readouterr().err


def test_two_process_gloo_run(tmp_path, captions):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "training.feed_forward", "--data", str(captions), "--out", str(tmp_path / "run"), *TINY, "steps=2",
           "val_every=0"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    state = ck.load_state(ck.find_latest(tmp_path / "run", REQUIRED))
    assert sorted(state["generators"]) == ["0", "1"]  # both ranks' streams kept for an exact resume
    assert not torch.equal(state["generators"]["0"]["data"], state["generators"]["1"]["data"])
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]  # rank 0 alone logs
    assert (tmp_path / "run" / RESULT).is_file()


@pytest.mark.parametrize("name", ["ff_demo_shapes.yaml", "ff_coco_vitb32.yaml"])
def test_shipped_configs_load(name):
    cfg = FFTrainConfig.load(f"training/configs/{name}")
    assert cfg.holdout and cfg.val_captions  # both show generalisation on captions never trained on
    assert any(held_out(c, cfg.holdout) for c in cfg.val_captions)


def test_coco_config_builds_a_network_for_the_released_models():
    """The COCO config's network for f16-16384 (256 channels, 16384 codes) and ViT-B/32 (512-d) at 256x256."""
    from vqgan_core import FeedForwardConfig, FeedForwardNet

    cfg = FFTrainConfig.load("training/configs/ff_coco_vitb32.yaml")
    m = cfg.model
    net = FeedForwardNet(FeedForwardConfig(text_dim=512, noise_dim=m.noise_dim, grid=(16, 16), base=tuple(m.base),
                                           width=m.width, min_width=m.min_width, blocks=m.blocks,
                                           latent_channels=256, n_embed=16384, output=m.output))
    n = sum(p.numel() for p in net.parameters())
    assert 5e6 < n < 40e6  # small beside the VQGAN (~90 M) and CLIP (~150 M) it learns from
    with torch.no_grad():
        assert net(torch.randn(2, 512), torch.randn(2, m.noise_dim)).shape == (2, 256, 16, 16)


def test_a_signal_checkpoints_and_stops(tmp_path, captions):
    out = tmp_path / "run"
    t = FeedForwardTrainer(FFTrainConfig.load(None, [*TINY, "steps=5", "val_every=0", "save_every=0"]), captions, out)
    step = t.train_step

    def step_then_signal() -> float:
        loss = step()
        if t.step == 2:
            t.request_stop()  # what SIGINT / SIGTERM call
        return loss

    t.train_step = step_then_signal
    try:
        assert t.fit() == out
    finally:
        t.close()
    assert ck.find_latest(out, REQUIRED).name == "step_00000002" and not (out / RESULT).exists()
    assert main(["--data", str(captions), "--out", str(out), "--resume", *TINY, "steps=5", "val_every=0",
                 "save_every=0"]) == 0
    assert (out / RESULT).is_file() and ck.find_latest(out, REQUIRED).name == "step_00000005"
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5]  # the steps before the stop are kept once


def test_bf16_autocast_run(tmp_path, captions):
    """precision=bf16: the decode and the CLIP loss run under bf16 autocast; the weights and AdamW stay fp32."""
    out = tmp_path / "run"
    assert main(["--data", str(captions), "--out", str(out), *TINY, "steps=2", "val_every=0", "precision=bf16"]) == 0
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_metrics(out))
    fp32 = tmp_path / "fp32"
    assert main(["--data", str(captions), "--out", str(fp32), *TINY, "steps=2", "val_every=0"]) == 0
    a, b = _weights(out / RESULT), _weights(fp32 / RESULT)
    assert all(v.dtype == torch.float32 for v in a.values())
    assert any(not torch.equal(a[k], b[k]) for k in a)  # bf16 really changed the arithmetic
    with pytest.raises(Exception, match="precision must be"):
        FFTrainConfig.load(None, ["precision=fp16"])
