"""Seamless (tileable) generation: a circular-padded VQGAN that shares weights, and the loop using it."""

import pytest
import torch

from vqgan_core import load_vqgan
from vqgan_core.cli.main import main
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import GenerationLoop, run_generation
from vqgan_core.media.image_io import read_png_metadata
from vqgan_core.vqgan.seamless import is_seamless, random_roll, seamless_copy

pytestmark = pytest.mark.usefixtures("one_thread")  # vqgan / clip: the tiny models of conftest.py


def _cfg(**kw):
    base = {"prompts": "a red circle", "width": 32, "height": 32, "steps": 3, "seed": 2, "cutn": 2,
            "precision": "fp32", "log_every": 1}
    return GenerationConfig(**{**base, **kw})


def _rolls(model, z, cells=(2, 3)):
    """Max difference between decode(roll(z)) and roll(decode(z)): 0 for a seamless decoder."""
    f = model.downsample_factor
    with torch.no_grad():
        a = model.decode(torch.roll(z, cells, (2, 3)))
        b = torch.roll(model.decode(z), (cells[0] * f, cells[1] * f), (2, 3))
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", ["demo", "gumbel"])
def test_seamless_copy_shares_weights_and_tiles(name, taming_fixtures):
    vq = load_vqgan("demo" if name == "demo" else taming_fixtures / "tiny_gumbel_f8" / "last.ckpt").eval()
    twin = seamless_copy(vq)
    assert is_seamless(twin) and not is_seamless(vq)  # the original keeps its zero padding
    assert all(a is b for a, b in zip(vq.parameters(), twin.parameters(), strict=True))  # no extra memory
    z = vq.indices_to_latent(torch.randint(0, vq.codebook.shape[0], (1, 6, 6), generator=torch.Generator().manual_seed(0)))
    assert _rolls(twin, z) < 1e-5 < _rolls(vq, z)  # decoding commutes with rolling: no seams
    f, x = vq.downsample_factor, torch.rand(1, 3, 8 * vq.downsample_factor, 8 * vq.downsample_factor) * 2 - 1
    with torch.no_grad():  # the encoder (stride-2 pads included) wraps too
        e = twin.encode_to_prequant(torch.roll(x, (2 * f, 3 * f), (2, 3))) - torch.roll(twin.encode_to_prequant(x), (2, 3), (2, 3))
    assert e.abs().max() < 1e-5


def test_random_roll_is_a_seeded_circular_shift():
    img = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    a = random_roll(img, torch.Generator().manual_seed(1))
    assert torch.equal(a, random_roll(img, torch.Generator().manual_seed(1)))
    shifts = [(dy, dx) for dy in range(5) for dx in range(7) if torch.equal(a, torch.roll(img, (-dy, -dx), (2, 3)))]
    assert len(shifts) == 1 and shifts[0] != (0, 0)


def test_seamless_run_uses_the_circular_decoder_and_rolled_views(vqgan, clip, monkeypatch):
    import vqgan_core.engine.clip_loss as gen  # CLIP terms roll their view of a tiling image

    rolled = []
    monkeypatch.setattr(gen, "random_roll", lambda img, g: rolled.append(1) or random_roll(img, g))
    r = run_generation(vqgan, clip, _cfg(seamless=True))
    assert len(rolled) == 3 and not is_seamless(vqgan)  # one rolled view per step; the caller's model is untouched
    twin = seamless_copy(vqgan)
    with torch.no_grad():
        z_q, _ = twin.quantize_latent(r.latent)
        expected = twin.decode(z_q).add(1).div(2).clamp(0, 1)
    assert torch.allclose(r.images, expected, atol=1e-5)  # the result is decoded circularly: it tiles
    assert _rolls(twin, z_q) < 1e-5
    plain = run_generation(vqgan, clip, _cfg())
    assert not torch.equal(plain.images, r.images) and len(rolled) == 3
    loop = GenerationLoop(twin, clip, _cfg())  # a seamless model (the ComfyUI node) makes a seamless run
    assert loop.config.seamless and loop.vqgan is twin


def test_seamless_tv_weight_smooths_across_the_edges(vqgan, clip, monkeypatch):
    import vqgan_core.engine.terms as gen  # the TV term
    from vqgan_core.objective.losses import tv_loss

    seen = []
    monkeypatch.setattr(gen, "tv_loss", lambda img, circular=False: seen.append(circular) or tv_loss(img, circular))
    run_generation(vqgan, clip, _cfg(seamless=True, tv_weight=0.1))
    run_generation(vqgan, clip, _cfg(tv_weight=0.1))
    assert seen == [True] * 3 + [False] * 3


def test_cli_seamless_is_recorded_and_reproduced(taming_fixtures, tiny_clip_dir, tmp_path):
    base = ["generate", "red", "--vqgan", str(taming_fixtures / "tiny_f4" / "last.ckpt"), "--clip", str(tiny_clip_dir),
            "--size", "32", "32", "--cutn", "2", "--steps", "2", "--seed", "3", "--precision", "fp32", "--device",
            "cpu", "--no-progress"]
    out, again = tmp_path / "tile.png", tmp_path / "again.png"
    assert main([*base, "--seamless", "--out", str(out)]) == 0
    assert read_png_metadata(out)["config"]["seamless"] is True
    assert main(["generate", "--trust-png", "--from-png", str(out), "--out", str(again), "--no-progress"]) == 0
    assert out.read_bytes() == again.read_bytes()
