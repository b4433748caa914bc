"""VQ latent files: the latent and the optimiser state that continues its run, without pickle."""

from __future__ import annotations

import pytest
import torch

from vqgan_core.engine.optimizers import make_optimizer, optimizer_names
from vqgan_core.hub.checkpoint import CheckpointError
from vqgan_core.latents.files import LatentFile, load_latent, save_latent
from vqgan_core.util.atomic import atomic_save_file


@pytest.mark.parametrize("name", optimizer_names())
def test_round_trip_continues_every_optimizer(tmp_path, name):
    z = torch.randn(2, 8, 4, 5, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    opt = make_optimizer(name, [z], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (z * z).sum().backward()
        opt.step()
    state = {"optimizer": name, "shape": (2, 8, 4, 5), "steps": 7, "optimizer_state": opt.state_dict()}
    path = save_latent(tmp_path / "a.vqlatent", LatentFile(z, (16, 8), 4, state), {"prompt": "{}"})
    back = load_latent(path)
    assert torch.equal(back.z, z.detach()) and back.codebook_shape == (16, 8) and back.downsample_factor == 4
    assert back.state["steps"] == 7 and back.state["shape"] == (2, 8, 4, 5) and back.state["optimizer"] == name
    z2 = z.detach().clone().requires_grad_(True)
    opt2 = make_optimizer(name, [z2], lr=0.1)
    opt2.load_state_dict(back.state["optimizer_state"])  # continues: same moments, same step count
    for o, p in ((opt, z), (opt2, z2)):
        o.zero_grad()
        (p * p).sum().backward()
        o.step()
    assert torch.equal(z, z2)


def test_foreign_and_damaged_files_are_refused(tmp_path):
    atomic_save_file({"weight": torch.zeros(2)}, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="is not a VQ latent file"):
        load_latent(tmp_path / "w.safetensors")
    (tmp_path / "junk.vqlatent").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="junk.vqlatent"):
        load_latent(tmp_path / "junk.vqlatent")


def test_run_settings_round_trip_and_damaged_ones_are_refused(tmp_path):
    """A CLI latent carries its run's settings (what --resume restores); a ComfyUI one has none."""
    z = torch.randn(1, 8, 4, 4)
    settings = {"config": {"prompts": "red", "cutn": 3, "seed": 2}, "planned_steps": 7}
    back = load_latent(save_latent(tmp_path / "cli.vqlatent", LatentFile(z, (16, 8), 4, {"steps": 3}, settings)))
    assert back.settings == settings
    assert load_latent(save_latent(tmp_path / "comfy.vqlatent", LatentFile(z, (16, 8), 4))).settings is None
    for bad in ("{not json", '["config"]', '{"config": 3}'):
        save_latent(tmp_path / "bad.vqlatent", LatentFile(z, (16, 8), 4), {"vqgan_clip": bad})
        with pytest.raises(CheckpointError, match="bad.vqlatent"):
            load_latent(tmp_path / "bad.vqlatent")
