"""``generate --feed-forward``: the one-pass image, refinement from it, reproduction from the PNG, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vqgan_core import decode01, feed_forward_latent, load_clip, load_feed_forward, load_vqgan
from vqgan_core.cli.main import main
from vqgan_core.hub import demo
from vqgan_core.media.image_io import read_png_metadata

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "a red circle on a blue background"
BASE = ["generate", PROMPT, "--device", "cpu", "--no-progress", "--seed", "3"]


def test_demo_feed_forward_ships_beside_the_demo_models():
    files = [demo.vqgan_path(), demo.feed_forward_path(), *demo.clip_dir().iterdir(), *demo.robust_clip_dir().iterdir()]
    assert sum(f.stat().st_size for f in files) <= 10 * 2**20  # all demo models together stay under 10 MB
    vq = load_vqgan("demo")
    net = load_feed_forward("demo", vqgan=vq)  # trained for the demo VQGAN and CLIP
    assert net.config.clip == "demo" and net.config.grid == (16, 16) and net.config.extra["holdout"]


def test_one_pass_image_is_the_network_output_and_reproduces(tmp_path, capsys):
    out = tmp_path / "one.png"
    assert main([*BASE, "--feed-forward", "demo", "--steps", "0", "--out", str(out)]) == 0
    meta = read_png_metadata(out)
    assert meta["config"]["feed_forward"] == "demo" and meta["step"] == 0
    vq, clip = load_vqgan("demo"), load_clip("demo")
    net = load_feed_forward("demo", vqgan=vq)
    with torch.no_grad():
        want = decode01(vq, vq.quantize_latent(feed_forward_latent(net, vq, clip, [PROMPT], seed=3))[0])[0]
    got = torch.from_numpy(np.asarray(Image.open(out))).permute(2, 0, 1).float() / 255
    assert (got - want).abs().max() <= 1 / 255 + 1e-6  # the PNG is the decoded one-pass latent
    again = tmp_path / "again.png"
    assert main(["generate", "--trust-png", "--from-png", str(out), "--out", str(again), "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    refined = tmp_path / "refined.png"
    assert main([*BASE, "--feed-forward", "demo", "--steps", "3", "--out", str(refined)]) == 0
    scratch = tmp_path / "scratch.png"
    assert main([*BASE, "--steps", "3", "--out", str(scratch)]) == 0
    a, b, c = (np.asarray(Image.open(p)).astype(int) for p in (out, refined, scratch))
    # refined from the one-pass start, not from random codes: nearer the one-pass image than a run from scratch
    assert 0 < np.abs(a - b).mean() < 0.75 * np.abs(a - c).mean()
    assert "wrote" in capsys.readouterr().out


def test_refusals_are_one_line(tmp_path, capsys, taming_fixtures):
    other = str(taming_fixtures / "tiny_f4" / "last.ckpt")
    assert main([*BASE, "--feed-forward", "demo", "--vqgan", other, "--clip", "demo", "--steps", "0",
                 "--size", "64", "64", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "trained for VQGAN demo" in err and "Traceback" not in err
    assert main([*BASE, "--feed-forward", "demo", "--size", "128", "128", "--steps", "0",
                 "--out", str(tmp_path / "y.png")]) == 2
    assert "64x64 pixels with this VQGAN" in capsys.readouterr().err
    assert main([*BASE, "--feed-forward", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "z.png")]) == 2
    assert "feed-forward model not found" in capsys.readouterr().err
