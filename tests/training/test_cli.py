"""CLI entry points and validation metrics (rFID with user-provided Inception weights)."""

from __future__ import annotations

import pytest
import torch
import yaml

from tests.train_helpers import make_coco, tiny_config
from training.cli import main
from training.validate import InceptionFeatures, frechet_distance
from vqgan_core import load_vqgan


@pytest.fixture(autouse=True)
def _one_thread(_torch_threads):
    """Tiny models: one thread is as fast and far steadier when other processes share the cores."""
    torch.set_num_threads(1)


def test_cli_train_resume_and_export(tmp_path):
    data = make_coco(tmp_path / "coco", n_train=8, n_val=2, odd=False)
    cfg = tiny_config(data, tmp_path / "unused", train__max_steps=100)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    run = tmp_path / "run"
    assert main(["--config", str(path), "--data", str(data), "--out", str(run), "--max-steps", "2"]) == 0
    assert main(["--config", str(path), "--out", str(run), "--max-steps", "3", "--resume", "train.batch_size=4"]) == 0
    assert (run / "checkpoints" / "step_00000003").is_dir()
    assert main(["export", str(run), str(tmp_path / "model.safetensors")]) == 0
    assert load_vqgan(tmp_path / "model.safetensors").config.n_embed == 32
    from vqgan_core.hub.checkpoint import read_safetensors

    origin = read_safetensors(tmp_path / "model.safetensors")[1]["exported_from"]
    assert origin == "step_00000003/weights.safetensors" and str(tmp_path) not in origin
    assert main(["--config", str(path), "train.no_such_key=1"]) == 2


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    data = make_coco(tmp_path / "coco", n_train=2, n_val=0, odd=False)
    cfg = tiny_config(data, tmp_path / "unused", train__max_steps=1)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--config", str(path), "--data", str(empty), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(empty) in err and "Traceback" not in err
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "Traceback" not in err
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "m.ckpt")]) == 2
    assert ".safetensors" in capsys.readouterr().err


def test_shipped_configs_parse():
    from pathlib import Path

    from training.config import TrainConfig
    from vqgan_core import VQGANConfig

    for name in ("coco_f16_16384", "coco_f8", "tiny_cpu"):
        cfg = TrainConfig.load(Path("training/configs") / f"{name}.yaml")
        VQGANConfig.from_dict(dict(cfg.model))
    f16 = TrainConfig.load("training/configs/coco_f16_16384.yaml")
    assert f16.model["n_embed"] == 16384 and f16.data.resolution == 256 and f16.loss.disc_num_layers == 2


def test_frechet_distance_and_inception_from_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 4, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=1e-6)  # pure mean shift: |mu|^2
    from torchvision.models.inception import Inception3

    torch.save(Inception3(init_weights=False).state_dict(), tmp_path / "inception.pth")
    feats = InceptionFeatures(tmp_path / "inception.pth")(torch.zeros(1, 3, 32, 32))
    assert feats.shape == (1, 2048)
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="inception_v3"):
        InceptionFeatures(tmp_path / "bad.pth")
