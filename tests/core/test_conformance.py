"""Conformance against golden tensors produced by the real taming-transformers code (tests/fixtures/taming)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from vqgan_core import VQGAN, VQGANConfig, load_vqgan
from vqgan_core.hub.checkpoint import generator_state_dict

H_ATOL, DEC_ATOL = 1e-5, 1e-4
PL_CHECKPOINT_CLASS = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"


def _golden(fx, name):
    return load_file(str(fx / name / "golden.safetensors"))


def _taming_torch_load(path):
    """What torch.load(weights_only=True) gives a user of taming: a Lightning <= 1.4 checkpoint keys its callback
    state by the ModelCheckpoint class, which is allowed here under an alias (no vqgan_core code involved)."""
    alias = type("ModelCheckpoint", (), {})
    with torch.serialization.safe_globals([(alias, PL_CHECKPOINT_CLASS)]):
        return torch.load(path, weights_only=True)


@pytest.mark.parametrize("fname", ["last.ckpt", "weights.safetensors"])
def test_tiny_f4_golden(taming_fixtures, fname, tmp_path):
    path = taming_fixtures / "tiny_f4" / fname
    if fname == "weights.safetensors":  # taming's state_dict (its key names) as safetensors, beside its model.yaml
        path = tmp_path / fname
        save_file(_taming_torch_load(taming_fixtures / "tiny_f4" / "last.ckpt")["state_dict"], path, {"format": "pt"})
        shutil.copy(taming_fixtures / "tiny_f4" / "model.yaml", tmp_path)
    model = load_vqgan(path)
    g = _golden(taming_fixtures, "tiny_f4")
    with torch.no_grad():
        enc = model.encoder(g["x"])
        h = model.encode_to_prequant(g["x"])
        z_q, idx = model.encode(g["x"])
        dec = model.decode(z_q)
        zi = model.indices_to_latent(g["indices"])
        dec_i = model.decode_indices(g["indices"])
        _, qloss, _ = model.quantize(h)
    assert idx.dtype == torch.int64 and idx.shape == g["indices"].shape
    assert torch.equal(idx, g["indices"])
    torch.testing.assert_close(enc, g["enc"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(h, g["h"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(z_q, g["z_q"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(model.post_quant_conv(z_q), g["post_quant"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(dec, g["dec"], atol=DEC_ATOL, rtol=0)
    torch.testing.assert_close(zi, g["z_q_from_indices"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(dec_i, g["dec_from_indices"], atol=DEC_ATOL, rtol=0)
    torch.testing.assert_close(qloss, g["qloss"], rtol=1e-5, atol=0)


def test_tiny_f4_non_square_input(taming_fixtures):
    """Attention placement comes from the config resolution, so 48x32 on a res-32 model matches taming."""
    model = load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt")
    g = _golden(taming_fixtures, "tiny_f4")
    with torch.no_grad():
        h = model.encode_to_prequant(g["alt_x"])
        z_q, idx = model.encode(g["alt_x"])
        dec = model.decode(z_q)
        _, qloss, _ = model.quantize(h)
    assert torch.equal(idx, g["alt_indices"])
    torch.testing.assert_close(h, g["alt_h"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(z_q, g["alt_z_q"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(dec, g["alt_dec"], atol=DEC_ATOL, rtol=0)
    torch.testing.assert_close(qloss, g["alt_qloss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(model.decode_indices(idx), g["alt_dec_from_indices"], atol=DEC_ATOL, rtol=0)


@pytest.mark.parametrize("legacy", [True, False])
def test_quantizer_loss_gradients_legacy_semantics(taming_fixtures, legacy):
    """legacy=True weights commitment 1 / codebook beta; legacy=False the reverse. Same forward value."""
    model = load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt")
    g = _golden(taming_fixtures, "tiny_f4")
    tag = "legacy" if legacy else "nonlegacy"
    q = model.quantize
    q.legacy = legacy
    q.requires_grad_(True)
    h = g["h"].clone().requires_grad_(True)
    _, loss, _ = q(h)
    loss.backward()
    torch.testing.assert_close(loss.detach(), g[f"qloss_{tag}"], rtol=1e-5, atol=0)
    torch.testing.assert_close(h.grad, g[f"grad_h_{tag}"], atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(q.embedding.weight.grad, g[f"grad_codebook_{tag}"], atol=1e-7, rtol=1e-4)


def test_tiny_gumbel_argmax_path(taming_fixtures):
    model = load_vqgan(taming_fixtures / "tiny_gumbel_f8" / "last.ckpt")
    g = _golden(taming_fixtures, "tiny_gumbel_f8")
    assert model.config.quantizer == "gumbel" and model.downsample_factor == 2  # f2 (the folder keeps its name)
    with torch.no_grad():
        h = model.encode_to_prequant(g["x"])
        logits = model.quantize.proj(h)
        z_q, idx = model.encode(g["x"])
        again = model.encode(g["x"])[1]
        dec = model.decode(z_q)
        kl = model.quantize.kl_loss(logits)
    assert torch.equal(idx, g["indices"]) and torch.equal(again, idx), "eval tokenisation must be deterministic"
    torch.testing.assert_close(h, g["h"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(logits, g["logits"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(z_q, g["z_q"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(dec, g["dec"], atol=DEC_ATOL, rtol=0)
    torch.testing.assert_close(model.decode_indices(g["indices"]), g["dec_from_indices"], atol=DEC_ATOL, rtol=0)
    torch.testing.assert_close(kl, g["qloss"], rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(kl / model.config.kl_weight, g["kl_unweighted"], rtol=1e-5, atol=0)


def test_tiny_gumbel_sampled_path(taming_fixtures):
    """The reference's stochastic eval output, reproduced from the stored noise and from an explicit generator."""
    model = load_vqgan(taming_fixtures / "tiny_gumbel_f8" / "last.ckpt")
    g = _golden(taming_fixtures, "tiny_gumbel_f8")
    with torch.no_grad():
        h = model.encode_to_prequant(g["x"])
        z_q, _, idx = model.quantize(h, gumbel_noise=g["gumbel_noise"])
        dec = model.decode(z_q)
        gen = torch.Generator().manual_seed(777)
        z_q2, idx2 = model.encode(g["x"], generator=gen)
    assert torch.equal(idx, g["indices_sampled"])
    assert torch.equal(idx2, g["indices_sampled"]), "a generator seeded like the reference reproduces its sample"
    torch.testing.assert_close(z_q, g["z_q_sampled"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(z_q2, g["z_q_sampled"], atol=H_ATOL, rtol=0)
    torch.testing.assert_close(dec, g["dec_sampled"], atol=DEC_ATOL, rtol=0)
    torch.testing.assert_close(model.decode_indices(idx), g["dec_from_indices_sampled"], atol=DEC_ATOL, rtol=0)


@pytest.mark.parametrize("ckpt", ["last.ckpt", "last_pl_legacy.ckpt"])
def test_training_checkpoints_give_generator_weights_bit_exactly(taming_fixtures, ckpt, tmp_path):
    d = taming_fixtures / "tiny_f4_train"
    obj = _taming_torch_load(d / "last_pl_legacy.ckpt")
    path = d / ckpt
    if ckpt == "last.ckpt":  # the same checkpoint as Lightning >= 1.5 writes it: no class-keyed callback state
        path = tmp_path / ckpt
        torch.save({k: v for k, v in obj.items() if k != "callbacks"}, path)
        shutil.copy(d / "model.yaml", tmp_path)
    model = load_vqgan(path)
    ref = generator_state_dict(obj["state_dict"])
    sd = model.state_dict()
    assert set(sd) == set(ref)
    for k, v in ref.items():
        assert torch.equal(sd[k], v), k
    g = _golden(taming_fixtures, "tiny_f4_train")
    with torch.no_grad():
        z_q, idx = model.encode(g["x"])
    assert torch.equal(idx, g["indices"])
    torch.testing.assert_close(model.decode(z_q), g["dec"], atol=DEC_ATOL, rtol=0)


def _reference_key_files(fx):
    return sorted((fx / "reference_keys").glob("*.yaml"))


def test_reference_configs_build_exact_generator_keys(taming_fixtures):
    """Every released config, built on the meta device, has exactly taming's generator keys and shapes."""
    yamls = _reference_key_files(taming_fixtures)
    assert len(yamls) >= 5
    for y in yamls:
        ref = json.loads(y.with_suffix(".json").read_text())["keys"]
        want = {k: v["shape"] for k, v in ref.items() if not k.startswith("loss.")}
        cfg = VQGANConfig.from_taming_yaml(y)
        with torch.device("meta"):
            model = VQGAN(cfg)
        got = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert got == want, f"{y.name}: missing {sorted(set(want) - set(got))[:5]} extra {sorted(set(got) - set(want))[:5]}"
        n_params = sum(v.numel() for k, v in model.state_dict().items() if k != "colorize")
        assert n_params + (model.colorize.numel() if cfg.n_labels else 0) == json.loads(y.with_suffix(".json").read_text())["n_elements_without_loss"]


_ARCH = ("in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "double_z",
         "embed_dim", "n_embed", "quantizer", "n_labels")


def test_released_architectures_are_read_from_their_weights(taming_fixtures):
    """Without a yaml, the keys and shapes alone give each released model's config (f16-1024, f16-16384,
    Gumbel f8, COCO-8k, the S-FLCKR segmentation VQGAN); the tiny fixtures decode the same either way."""
    from vqgan_core.vqgan.config_infer import infer_config

    for y in _reference_key_files(taming_fixtures):
        ref = json.loads(y.with_suffix(".json").read_text())["keys"]
        sd = {k: torch.empty(v["shape"], device="meta") for k, v in ref.items()}
        got, want = infer_config(generator_state_dict(sd)), VQGANConfig.from_taming_yaml(y)
        assert {f: getattr(got, f) for f in _ARCH} == {f: getattr(want, f) for f in _ARCH}, y.name
        assert got.resolution == want.resolution == 256
    for name in ("tiny_f4", "tiny_gumbel_f8"):  # resolution 32 / 16: attention where the side is 8, other numbers
        folder = taming_fixtures / name
        sd = generator_state_dict(torch.load(folder / "last.ckpt", weights_only=True)["state_dict"])
        got = infer_config(sd)
        with torch.device("meta"):
            model = VQGAN(got)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
        assert got.quantizer == ("gumbel" if "gumbel" in name else "vq")


@pytest.mark.parametrize("resolution", [64, 100, 200, 256, 360])
def test_architecture_from_weights_for_any_training_resolution(resolution):
    """taming counts encoder resolutions down and decoder ones up: at sizes not divisible by the factor they
    disagree about where attention sits. The weights alone still give a config with exactly these keys."""
    from vqgan_core.vqgan.config_infer import infer_config

    for ch_mult in ((1, 2), (1, 1, 2, 2, 4)):
        bottom = resolution // 2 ** (len(ch_mult) - 1)
        for attn in ((), (resolution,), (bottom,), (resolution // 8, bottom), (25, 24)):
            cfg = VQGANConfig(resolution=resolution, ch=32, ch_mult=ch_mult, num_res_blocks=1, attn_resolutions=attn,
                              z_channels=8, embed_dim=8, n_embed=16)
            with torch.device("meta"):
                want = {k: tuple(v.shape) for k, v in VQGAN(cfg).state_dict().items()}
                got = VQGAN(infer_config(VQGAN(cfg).state_dict()))
            assert {k: tuple(v.shape) for k, v in got.state_dict().items()} == want, (resolution, ch_mult, attn)
