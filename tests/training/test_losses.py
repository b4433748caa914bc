"""Loss, LPIPS, discriminator and optimiser step against the real taming code (fixture tiny_f4_train)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.train_helpers import taming_ckpt_with_adam_moments, taming_param_order
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


def _setup(train_fix, weights: str = "last_pl_legacy.ckpt"):
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


@pytest.mark.parametrize("step", [0, 1])
def test_adam_step_replays_taming(train_fix, step):
    """One taming training step from the checkpoint with fresh Adams: AE step, new forward, D step (global_step 0:
    D idle, 1: D active). The golden (float64) holds every trained tensor's gradient norm and sum, and the small
    tensors' gradients and stepped weights in full."""
    model, loss, cfg = _setup(train_fix)
    x = load_file(train_fix / "train_step_input.safetensors")["x_train_step"]
    g = {k.removeprefix(f"step{step}_"): v for k, v in load_file(train_fix / "train_step_golden.safetensors").items()
         if k.startswith(f"step{step}_")}
    opt_ae, opt_d = build_optimizers(cfg, model, loss.discriminator, LR)
    loss.discriminator.requires_grad_(False)
    xrec, qloss, _ = model(x)
    ae, _ = loss.generator_loss(x, xrec, qloss, step, model.get_last_layer(), gan_when_inactive=True)
    ae.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt_ae.step()
    loss.discriminator.requires_grad_(True)
    xrec = model(x)[0]  # taming recomputes the forward for the discriminator step
    d, _ = loss.discriminator_loss(x, xrec, step)
    opt_d.zero_grad()
    d.backward()
    grads.update({f"loss.discriminator.{n}": p.grad.clone() for n, p in loss.discriminator.named_parameters()})
    opt_d.step()
    torch.testing.assert_close(ae.detach(), g["aeloss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(d.detach(), g["discloss"], rtol=1e-5, atol=1e-12)

    ae_names, d_names = taming_param_order(train_fix)
    assert set(grads) == set(ae_names + d_names)
    for names, tag in ((ae_names, "ae"), (d_names, "disc")):
        norms, sums = g[f"{tag}_grad_norm"], g[f"{tag}_grad_sum"]
        eps = 1e-5 * norms.max() + 1e-30
        for i, n in enumerate(names):
            torch.testing.assert_close(grads[n].norm(), norms[i], rtol=1e-4, atol=eps, msg=n)
            torch.testing.assert_close(grads[n].sum(), sums[i], rtol=1e-4, atol=eps * grads[n].numel() ** 0.5, msg=n)
    d_active = int((g["disc_grad_norm"] > 0).sum())
    assert d_active > len(d_names) // 2 if step else d_active == 0  # disc_start 1: D idles at global_step 0
    got = {**model.state_dict(), **{f"loss.discriminator.{k}": v for k, v in loss.discriminator.state_dict().items()}}
    full = [k for k in g if k.startswith(("grad.", "after."))]
    assert len(full) > 100
    scale = g["ae_grad_norm"].max()
    for k in full:
        n = k.split(".", 1)[1]
        if k.startswith("grad."):  # (a bias before a one-channel GroupNorm gets only rounding noise)
            torch.testing.assert_close(grads[n], g[k], rtol=1e-4, atol=1e-7 * scale, msg=k)
        elif g[k].is_floating_point():  # Adam's first step moves a weight by ~lr: compare far below that, except
            tol = LR / 100  # where the gradient is float noise (then lr * g / (|g| + eps) is noise too)
            if f"grad.{n}" in g:
                tol = torch.where(g[f"grad.{n}"].abs() > 1e-6, tol, 2 * LR)
            assert ((got[n] - g[k]).abs() <= tol + 1e-6 * g[k].abs()).all(), k
        else:
            assert int(got[n]) == int(g[k]) == 3, k  # num_batches_tracked: 3 D forwards, as in taming


def test_taming_checkpoint_start_point(train_fix, tmp_path):
    """Fine-tuning a taming .ckpt brings generator, D, LPIPS and both Adam states (AE state re-indexed)."""
    cfg = TrainConfig(loss=LossConfig(**FIX_LOSS))
    cfg.init.taming_yaml = str(train_fix / "model.yaml")
    fresh = _from_taming(cfg, train_fix / "last_pl_legacy.ckpt")  # saved before the first step: no moments yet
    assert [o["state"] for o in fresh.optimizer_states] == [{}, {}]
    sp = _from_taming(cfg, taming_ckpt_with_adam_moments(train_fix, tmp_path / "trained.ckpt"))
    sd = read_state_dict(train_fix / "last_pl_legacy.ckpt")
    assert sp.disc_state is not None and len(sp.disc_state) == 16
    assert sp.lpips_state is not None and len(sp.lpips_state) == 33
    torch.testing.assert_close(sp.model.codebook, sd["quantize.embedding.weight"])
    opt_ae, opt_d = sp.optimizer_states
    taming_ae, taming_d = taming_param_order(train_fix)
    for i, (n, p) in enumerate(sp.model.named_parameters()):  # each moment lands on the parameter it belongs to
        assert opt_ae["state"][i]["exp_avg"].shape == p.shape, n
        assert (opt_ae["state"][i]["exp_avg"] == taming_ae.index(n) + 1).all(), n
    loss = build_loss(cfg, sp.lpips_state, sp.disc_state, "fixture")
    for i, (n, _) in enumerate(loss.discriminator.named_parameters()):
        assert (opt_d["state"][i]["exp_avg"] == taming_d.index(f"loss.discriminator.{n}") + 1).all(), n
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
