"""Loss, LPIPS, discriminator and optimiser step against the real taming code (fixture tiny_f4_train)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from training.build import _from_taming, build_loss, build_optimizers
from training.config import LossConfig, TrainConfig
from training.discriminator import NLayerDiscriminator
from training.lpips import LPIPS, build_lpips
from vqgan_core import load_vqgan
from vqgan_core.hub.checkpoint import read_state_dict


@pytest.fixture(autouse=True)
def _one_thread(_torch_threads):
    """Tiny models: one thread is as fast and far steadier when other processes share the cores."""
    torch.set_num_threads(1)


FIX_LOSS = {"disc_start": 1, "disc_weight": 0.75, "disc_num_layers": 2, "disc_ndf": 8, "lpips_chns": (4, 8, 16, 32, 32)}
LR = 9e-6


@pytest.fixture(scope="module")
def train_fix(taming_fixtures):
    return taming_fixtures / "tiny_f4_train"


def _setup(train_fix, weights: str = "last.ckpt"):
    """Generator, loss (LPIPS + D from the checkpoint's loss.* keys) in taming's training modes."""
    sd = read_state_dict(train_fix / weights)
    model = load_vqgan(train_fix / weights, config=train_fix / "model.yaml").train().requires_grad_(True)
    cfg = TrainConfig(loss=LossConfig(**FIX_LOSS))
    loss = build_loss(
        cfg,
        lpips_state={k: v for k, v in sd.items() if k.startswith("loss.perceptual_loss.")},
        disc_state={k[len("loss.discriminator.") :]: v for k, v in sd.items() if k.startswith("loss.discriminator.")},
        disc_source=str(train_fix),
    )
    loss.train()  # D BatchNorm uses batch statistics; LPIPS stays in eval by construction
    return model, loss, cfg


@pytest.mark.parametrize("step", [0, 1])
def test_loss_matches_taming_golden(train_fix, step):
    g = load_file(train_fix / "loss_golden.safetensors")
    model, loss, _ = _setup(train_fix)
    x = g["x"]
    xrec, qloss, _ = model(x)
    torch.testing.assert_close(xrec, g[f"step{step}_xrec"], atol=1e-4, rtol=1e-5)
    ae, logs = loss.generator_loss(x, xrec, qloss, step, model.get_last_layer(), gan_when_inactive=True)
    d, dlogs = loss.discriminator_loss(x, xrec, step)
    logs.update(dlogs)
    for k, v in logs.items():
        torch.testing.assert_close(v.float(), g[f"step{step}_{k}"], atol=2e-6, rtol=2e-6, msg=k)
    torch.testing.assert_close(ae.detach(), g[f"step{step}_aeloss"], atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(d.detach(), g[f"step{step}_discloss"], atol=2e-6, rtol=2e-6)
    p = loss.perceptual_loss(xrec, x)
    torch.testing.assert_close(p, g[f"step{step}_p_loss_per_sample"], atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(loss.discriminator(x), g[f"step{step}_logits_real_map"], atol=1e-5, rtol=1e-5)


def test_adam_step_replays_taming(train_fix):
    """weights_before_step + x_train_step -> one AE Adam step, one D Adam step == weights.safetensors (atol 2 lr)."""
    model, loss, cfg = _setup(train_fix, "weights_before_step.safetensors")
    x = load_file(train_fix / "train_step_input.safetensors")["x_train_step"]
    opt_ae, opt_d = build_optimizers(cfg, model, loss.discriminator, LR)
    loss.discriminator.requires_grad_(False)
    xrec, qloss, _ = model(x)
    ae, _ = loss.generator_loss(x, xrec, qloss, 0, model.get_last_layer(), gan_when_inactive=True)
    ae.backward()
    opt_ae.step()
    loss.discriminator.requires_grad_(True)
    xrec = model(x)[0]  # taming recomputes the forward for the discriminator step
    d, _ = loss.discriminator_loss(x, xrec, 0)
    opt_d.zero_grad()
    d.backward()
    opt_d.step()
    want = load_file(train_fix / "weights.safetensors")
    got = {**model.state_dict(), **{f"loss.discriminator.{k}": v for k, v in loss.discriminator.state_dict().items()}}
    before = load_file(train_fix / "weights_before_step.safetensors")
    changed = 0
    for k, v in got.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, want[k], atol=2 * LR, rtol=0, msg=k)
            changed += int(not torch.equal(before[k], want[k]))
        else:
            assert int(v) == int(want[k]) == 3, k  # num_batches_tracked: 3 D forwards, as in taming
    assert changed > 100


def test_taming_checkpoint_start_point(train_fix):
    """Fine-tuning a taming .ckpt brings generator, D, LPIPS and both Adam states (AE state re-indexed)."""
    cfg = TrainConfig(loss=LossConfig(**FIX_LOSS))
    cfg.init.taming_yaml = str(train_fix / "model.yaml")
    sp = _from_taming(cfg, train_fix / "last_pl_legacy.ckpt")
    sd = read_state_dict(train_fix / "last.ckpt")
    assert sp.disc_state is not None and len(sp.disc_state) == 16
    assert sp.lpips_state is not None and len(sp.lpips_state) == 33
    torch.testing.assert_close(sp.model.codebook, sd["quantize.embedding.weight"])
    opt_ae = sp.optimizer_states[0]
    params = dict(sp.model.named_parameters())
    for i, (n, _) in enumerate(sp.model.named_parameters()):
        assert opt_ae["state"][i]["exp_avg"].shape == params[n].shape
    loss = build_loss(cfg, sp.lpips_state, sp.disc_state, "fixture")
    torch.testing.assert_close(loss.discriminator.main[0].weight, sd["loss.discriminator.main.0.weight"])
    torch.testing.assert_close(
        loss.perceptual_loss.lin0.model[1].weight, sd["loss.perceptual_loss.lin0.model.1.weight"]
    )


def test_lpips_and_discriminator_key_names(taming_fixtures):
    """Full-size key sets equal the reference taming ones (LPIPS 14.72 M params, D n_layers 3: 2.77 M)."""
    import json

    ref = json.loads((taming_fixtures / "reference_keys" / "vqgan_imagenet_f16_1024.json").read_text())
    ref_keys = ref["keys"]
    for prefix, module in (("loss.perceptual_loss.", LPIPS()), ("loss.discriminator.", NLayerDiscriminator(3, 64, 3))):
        ours = {prefix + k: list(v.shape) for k, v in module.state_dict().items()}
        assert ours == {k: v["shape"] for k, v in ref_keys.items() if k.startswith(prefix)}
    assert sum(p.numel() for p in LPIPS().parameters()) == pytest.approx(14.72e6, rel=1e-3)


def test_lpips_needs_weights_unless_random():
    with pytest.raises(ValueError, match="vgg_weights"):
        build_lpips()
    a, b = build_lpips(allow_random=True), build_lpips(allow_random=True)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())  # seeded: resumable


def test_unknown_disc_loss_lists_names():
    with pytest.raises(ValueError, match="hinge"):
        build_loss(TrainConfig(loss=LossConfig(perceptual_weight=0, disc_loss="wasserstein")))


def _tiny_vqgan(n_embed: int):
    from vqgan_core import VQGAN, VQGANConfig

    cfg = VQGANConfig(resolution=16, ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[], n_embed=n_embed,
                      z_channels=8, embed_dim=8)
    return VQGAN(cfg)


def test_resave_same_step_replaces_folder_and_leaves_no_temporaries(tmp_path):
    from training import checkpointing as ck

    model = _tiny_vqgan(8)
    disc = NLayerDiscriminator(3, 8, 1)
    ck.save_checkpoint(tmp_path, 3, model, disc, {"samples_seen": 1})
    final = ck.save_checkpoint(tmp_path, 3, model, disc, {"samples_seen": 2})
    assert ck.load_state(final)["samples_seen"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_00000003"]


def test_kmeans_runs_in_float32_outside_autocast(monkeypatch):
    from training import codebook

    seen = []
    real = codebook.kmeans

    def spy(rows, *a, **k):
        seen.append((rows.dtype, torch.is_autocast_enabled("cpu")))
        return real(rows, *a, **k)

    monkeypatch.setattr(codebook, "kmeans", spy)
    model = _tiny_vqgan(4)
    x = [torch.rand(2, 3, 16, 16) * 2 - 1]
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    codebook.kmeans_init(model, x, 2, torch.Generator().manual_seed(0), autocast=bf16)
    assert seen == [(torch.float32, False)]
