"""The trainer on CPU: the loss falls, checkpoints load in vqgan_core, resume is exact, signals checkpoint."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors import safe_open

from tests.train_helpers import make_coco, taming_ckpt_with_adam_moments, tiny_config
from training import checkpointing as ck
from training.export import export
from training.logger import read_metrics
from training.trainer import Trainer
from vqgan_core import load_vqgan


@pytest.fixture(autouse=True)
def _one_thread(_torch_threads):
    """Tiny models: one thread is as fast and far steadier when other processes share the cores."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp("data") / "coco", n_train=24, n_val=4)


def _losses(out):
    return [
        {k: v for k, v in r.items() if k.startswith("train/")} for r in read_metrics(out) if "train/total_loss" in r
    ]


def test_loss_falls_checkpoint_loads_and_exports(coco, tmp_path):
    cfg = tiny_config(
        coco,
        tmp_path / "run",
        train__max_steps=30,
        train__ema=True,
        optim__learning_rate=2e-3,
        loss__disc_start=1000,
        log__val_every=30,
        log__tensorboard=True,
    )
    tr = Trainer(cfg)
    x = tr.to_input(torch.stack([tr.train_set[(i, 0)][0] for i in range(8)]))

    def l1() -> float:
        with torch.no_grad():
            return float((tr.model.eval()(x)[0] - x).abs().mean())

    before = l1()
    tr.model.train()
    tr.fit()
    after = l1()
    assert after < 0.9 * before, (before, after)  # per-batch losses are noisy; a fixed batch is not
    recs = read_metrics(tmp_path / "run")
    train = [r for r in recs if "train/nll_loss" in r]
    assert len(train) == 30
    assert train[-1]["data/skipped_images"] >= 3  # corrupt, truncated, too small: counted, run not stopped
    val = [r for r in recs if "val/psnr" in r]
    assert val and val[-1]["val/codebook_usage"] > 0 and "val/rfid" not in val[-1]
    assert any((tmp_path / "run" / "tb").iterdir())
    last = ck.find_latest(tmp_path / "run")
    assert last is not None and last.name == "step_00000030"
    model = load_vqgan(last / ck.WEIGHTS)
    with safe_open(str(last / ck.WEIGHTS), "pt") as f:
        assert f.metadata()["train_step"] == "30" and "vqgan_config" in f.metadata()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert model.decode_indices(model.encode(x)[1]).shape == x.shape
    out = export(tmp_path / "run", tmp_path / "ema.safetensors", ema=True)
    ema = load_vqgan(out)
    assert not torch.equal(ema.codebook, model.codebook)
    state = ck.load_state(last)
    assert {"optimizers", "scaler", "rng", "samples_seen", "step"} <= set(state)


def test_resume_reproduces_uninterrupted_loss_curve(coco, tmp_path):
    over = {
        "train__max_steps": 6,
        "train__ema": True,
        "codebook__kmeans_init": True,
        "codebook__kmeans_batches": 2,
        "codebook__dead_code_restart": True,
        "codebook__dead_code_every": 2,
        "model__quantizer": "vq",
    }
    over.pop("model__quantizer")
    Trainer(tiny_config(coco, tmp_path / "full", **over)).fit()
    Trainer(tiny_config(coco, tmp_path / "part", **over)).fit(max_steps=3)
    assert ck.find_latest(tmp_path / "part").name == "step_00000003"
    Trainer(tiny_config(coco, tmp_path / "part", **over), resume=True).fit()
    full, part = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert len(full) == len(part) == 6
    assert full[-1]["train/disc_factor"] == 1.0 and full[-1]["train/disc_loss"] > 0  # GAN active from step 2
    for a, b in zip(full, part, strict=True):
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-6), k
    wa = load_vqgan(ck.find_latest(tmp_path / "full") / ck.WEIGHTS).state_dict()
    wb = load_vqgan(ck.find_latest(tmp_path / "part") / ck.WEIGHTS).state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_sigterm_writes_checkpoint(coco, tmp_path):
    tr = Trainer(tiny_config(coco, tmp_path / "sig", train__max_steps=50))
    step = tr.train_step

    def step_then_signal(micro):
        logs = step(micro)
        if tr.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return logs

    tr.train_step = step_then_signal
    before = signal.getsignal(signal.SIGTERM)
    tr.fit()
    assert ck.find_latest(tmp_path / "sig").name == "step_00000002"
    assert signal.getsignal(signal.SIGTERM) is before  # fit() put the previous handler back


def test_taming_mode_l2_lookup_and_finetune_from_ours(coco, tmp_path):
    """Taming's recompute-forward step, the l2-normalised low-dim lookup, then fine-tuning from that checkpoint."""
    cfg = tiny_config(
        coco,
        tmp_path / "a",
        train__max_steps=2,
        train__shared_forward=False,
        loss__disc_start=0,
        model={
            "resolution": 16,
            "ch": 32,
            "ch_mult": [1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "z_channels": 32,
            "embed_dim": 4,
            "l2_normalize": True,
            "n_embed": 16,
        },
    )
    Trainer(cfg).fit()
    src = ck.find_latest(tmp_path / "a")
    cfg2 = tiny_config(coco, tmp_path / "b", train__max_steps=1, init={"from_checkpoint": str(src)})
    tr = Trainer(cfg2)
    assert tr.model.config.l2_normalize and tr.model.config.embed_dim == 4
    torch.testing.assert_close(tr.model.codebook, load_vqgan(src / ck.WEIGHTS).codebook)
    assert len(tr.opt_ae.state) > 0 and len(tr.opt_d.state) > 0  # optimiser moments came along
    tr.fit()


def test_finetune_from_taming_checkpoint(taming_fixtures, coco, tmp_path):
    fix = taming_fixtures / "tiny_f4_train"
    cfg = tiny_config(
        coco,
        tmp_path / "t",
        train__max_steps=1,
        data__resolution=32,
        data__min_size=16,
        loss__lpips_chns=[4, 8, 16, 32, 32],
        loss__disc_ndf=8,
        loss__lpips_random=False,
        init={"from_checkpoint": str(taming_ckpt_with_adam_moments(fix, tmp_path / "last.ckpt")),
              "taming_yaml": str(fix / "model.yaml")},
    )
    tr = Trainer(cfg)
    assert tr.opt_ae.state and tr.opt_d.state
    tr.fit()
    assert load_vqgan(ck.find_latest(tmp_path / "t") / ck.WEIGHTS).config.n_embed == 32
    cfg.train.max_steps = 2
    Trainer(cfg, resume=True).fit()  # LPIPS weights still come from the taming .ckpt (no lpips files given)
    assert ck.find_latest(tmp_path / "t").name == "step_00000002"
