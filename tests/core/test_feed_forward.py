"""The feed-forward text -> latent network: config, shapes, codebook snapping, file round trip, pairing checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vqgan_core import (
    VQGAN,
    FeedForwardConfig,
    FeedForwardError,
    FeedForwardNet,
    GenerationConfig,
    VQGANConfig,
    check_pair,
    feed_forward_latent,
    load_clip,
    load_feed_forward,
    load_vqgan,
    prompt_embedding,
    save_feed_forward,
    vqgan_fingerprint,
)
from vqgan_core.engine.from_config import parts_from_config


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return load_vqgan("demo").eval().requires_grad_(False), load_clip("demo")


def _net(vqgan, guide, output="latent", noise_dim=4) -> FeedForwardNet:
    k, ch = vqgan.codebook.shape
    cfg = FeedForwardConfig(text_dim=guide.embed_dim(), noise_dim=noise_dim, grid=(16, 16), base=(4, 4), width=32,
                            min_width=16, latent_channels=ch, n_embed=k, output=output, vqgan="demo",
                            vqgan_fingerprint=vqgan_fingerprint(vqgan), clip=guide.spec)
    torch.manual_seed(1)
    net = FeedForwardNet(cfg)
    for p in net.parameters():  # zero-initialised layers would hide a broken path: give every weight a value
        torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def test_config_round_trip_and_errors():
    c = FeedForwardConfig(text_dim=96, grid=(16, 8), base=(4, 2), extra={"run": "x"})
    assert FeedForwardConfig.from_json(c.to_json()) == c
    assert c.upsamplings == 2
    with pytest.raises(ValueError, match="power of two"):
        FeedForwardConfig(grid=(12, 12), base=(4, 4))
    with pytest.raises(ValueError, match="unknown output"):
        FeedForwardConfig(output="pixels")
    with pytest.raises(ValueError, match="valid"):
        FeedForwardConfig.from_dict({"text_dim": 8, "widht": 3})


@pytest.mark.parametrize("output", ["latent", "logits"])
def test_output_is_made_of_codebook_vectors_and_trains(demo, output):
    vqgan, guide = demo
    net = _net(vqgan, guide, output).train()
    text = guide.encode_text(["a red circle on a blue background", "a green square on a white background"])
    raw = net(text, net.noise(2, torch.Generator().manual_seed(0)))
    expect = vqgan.codebook.shape[1] if output == "latent" else vqgan.codebook.shape[0]
    assert raw.shape == (2, expect, 16, 16)
    z_q = net.to_latent(raw, vqgan)
    assert z_q.shape == (2, vqgan.codebook.shape[1], 16, 16)
    _, idx = vqgan.quantize_latent(z_q.detach())
    assert torch.allclose(vqgan.indices_to_latent(idx), z_q.detach(), atol=1e-5)  # every cell is a code
    z_q.square().mean().backward()  # the straight-through / soft path reaches the first layer
    assert net.cond[0].weight.grad is not None and net.cond[0].weight.grad.abs().sum() > 0


def test_text_and_noise_steer_the_output(demo):
    vqgan, guide = demo
    net = _net(vqgan, guide)
    a = feed_forward_latent(net, vqgan, guide, ["a red circle on a blue background"], seed=3)
    b = feed_forward_latent(net, vqgan, guide, ["a red circle on a blue background"], seed=3)
    c = feed_forward_latent(net, vqgan, guide, ["a red circle on a blue background"], seed=4)
    d = feed_forward_latent(net, vqgan, guide, ["a white square on a green background"], seed=3)
    assert torch.equal(a, b)  # same seed, same latent
    assert torch.allclose(vqgan.quantize_latent(a)[0], a, atol=1e-6)  # a start of code vectors, as the decoder sees
    assert not torch.allclose(a, c) and not torch.allclose(a, d)
    two = feed_forward_latent(net, vqgan, guide, ["a red circle on a blue background"] * 2, seed=3)
    assert torch.allclose(two[0], a[0], atol=1e-5) and torch.allclose(two[1], c[0], atol=1e-5)  # item b: seed + b


def test_prompt_grammar_weights_texts(demo):
    _, guide = demo
    e = prompt_embedding(guide, "a red circle:1|a blue square:-0.5")
    t = torch.nn.functional.normalize(guide.encode_text(["a red circle", "a blue square"]), dim=-1)
    assert torch.allclose(e, t[0] - 0.5 * t[1], atol=1e-6)
    with pytest.raises(ValueError, match="cancel"):
        prompt_embedding(guide, "x:1|x:-1")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_file_round_trip(demo, tmp_path, dtype):
    vqgan, guide = demo
    net = _net(vqgan, guide)
    path = save_feed_forward(net, tmp_path / "ff.safetensors", dtype=dtype)
    back = load_feed_forward(path, vqgan=vqgan)
    assert back.config == net.config
    text = guide.encode_text(["a red circle on a blue background"])
    atol = 0 if dtype == torch.float32 else 5e-2
    assert torch.allclose(back(text), net(text), atol=atol)


def test_wrong_vqgan_or_clip_is_a_clear_error(demo, tmp_path):
    vqgan, guide = demo
    net = _net(vqgan, guide)
    path = save_feed_forward(net, tmp_path / "ff.safetensors")
    other = VQGAN(vqgan.config)  # same shape, other codes
    with pytest.raises(FeedForwardError, match=r"ff\.safetensors.*other codes"):
        load_feed_forward(path, vqgan=other)
    small = VQGAN(VQGANConfig(resolution=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                              z_channels=8, embed_dim=4, n_embed=16, norm_groups=8))
    with pytest.raises(FeedForwardError, match="predicts 256 codes of 8 channels.*16 of 4"):
        load_feed_forward(path, vqgan=small)
    with pytest.raises(FeedForwardError, match="reads 96-d"):
        check_pair(net.config, vqgan, "ViT-B-32:openai", 512)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FeedForwardError, match="not found"):
        load_feed_forward(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors", metadata={"format": "pt"})
    with pytest.raises(FeedForwardError, match="not a feed-forward model"):
        load_feed_forward(tmp_path / "plain.safetensors")
    cfg = FeedForwardConfig(text_dim=8, grid=(4, 4), base=(4, 4), width=8, min_width=8, latent_channels=4, n_embed=8)
    save_file({"w": torch.zeros(2)}, tmp_path / "bad.safetensors",
              metadata={"format": "pt", "feed_forward_config": cfg.to_json()})
    with pytest.raises(FeedForwardError, match="do not fit its config"):
        load_feed_forward(tmp_path / "bad.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "junk.safetensors",
              metadata={"feed_forward_config": json.dumps({"text_dim": 8, "colour": 1})})
    with pytest.raises(FeedForwardError, match="colour"):
        load_feed_forward(tmp_path / "junk.safetensors")


def test_generation_config_starts_from_the_network(demo, tmp_path):
    vqgan, guide = demo
    net = _net(vqgan, guide)
    path = str(save_feed_forward(net, tmp_path / "ff.safetensors"))
    cfg = GenerationConfig(prompts="a red circle on a blue background", width=64, height=64, seed=5, steps=0,
                           feed_forward=path, batch_size=2)
    parts = parts_from_config(vqgan, guide, cfg)
    want = feed_forward_latent(net, vqgan, guide, ["a red circle on a blue background"] * 2, seed=5)
    assert torch.allclose(parts.latent.latent(), want, atol=1e-5)
    with pytest.raises(FeedForwardError, match="16x16-code latents.*128x64"):
        parts_from_config(vqgan, guide, cfg.replace(width=128))
    with pytest.raises(ValueError, match="two starts"):
        parts_from_config(vqgan, guide, cfg.replace(init="perlin"))
