"""Hostile input and faults on the command line and in the engine: a standing corpus (issue: no silent NaN, no
work lost, bounded memory, no trust in data from elsewhere). Every case must end in one clear ``error:`` line
(exit 2) or a clean run, never a traceback, a crash, a black image or lost work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqgan_core.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]
DEMO = ["generate", "--size", "64", "64", "--cutn", "2", "--device", "cpu", "--no-progress", "--seed", "1"]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error:") or "\nerror:" in err, err
    assert "Traceback" not in err
    return err


# -- bounded memory ----------------------------------------------------------------------------------------------
def test_huge_size_is_refused_before_allocating(tmp_path, capsys):
    t0 = time.monotonic()
    assert main([*DEMO[:1], "red", "--size", "16384", "16384", "--steps", "1", "--out", str(tmp_path / "x.png"),
                 "--device", "cpu", "--no-progress"]) == 2
    assert "GiB" in _error(capsys) and time.monotonic() - t0 < 60
    assert not (tmp_path / "x.png").exists()


def test_budget_uses_free_memory(monkeypatch):
    from vqgan_core import load_vqgan
    from vqgan_core.clip.guide import load_clip
    from vqgan_core.engine import memory_budget as mb
    from vqgan_core.engine.config import GenerationConfig

    vq, clip = load_vqgan("demo"), load_clip("demo")
    cfg = GenerationConfig(prompts="x", width=64, height=64, cutn=4)
    need = mb.check_run_fits(vq, clip, cfg, torch.device("cpu"))
    assert need > 0
    monkeypatch.setattr(mb, "free_bytes", lambda device: need)  # 10 % headroom: no longer fits
    with pytest.raises(mb.MemoryBudgetError, match="64x64"):
        mb.check_run_fits(vq, clip, cfg, torch.device("cpu"))


def _latent_file(tmp_path, name="l.vqlatent", **changes):
    """A valid --save-latent file of the demo VQGAN, then ``changes`` written over its tensors / metadata."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / name
    assert main([*DEMO, "red", "--steps", "1", "--out", str(tmp_path / "src.png"), "--save-latent", str(path)]) == 0
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    state = json.loads(meta["state"])
    for key, value in changes.items():
        if value == "nan-like":  # the same tensor, all NaN
            tensors[key] = torch.full_like(tensors[key], float("nan"))
        elif key in tensors or isinstance(value, torch.Tensor):
            tensors[key] = value
        elif key in state:
            state[key] = value
        else:
            meta[key] = value
    meta["state"] = json.dumps(state)
    save_file(tensors, str(path), meta)
    return path


@pytest.mark.parametrize(("changes", "needle"), [
    ({"z": torch.zeros(1, 1, 700, 700)}, "'z' is (1, 1, 700, 700)"),  # 2 MB that would decode to 11200 px
    ({"z": torch.zeros(1, 7, 4, 4)}, "'z' is (1, 7, 4, 4)"),
    ({"z": "nan-like"}, "NaN"),
    ({"seed": "seven"}, "'seed'"),
    ({"rng_state": torch.zeros(8)}, "'rng_state'"),
    ({"optimizer_state": json.dumps({"state": {}, "param_groups": "all"})}, "param_groups"),
])
def test_crafted_latent_files_are_refused(tmp_path, capsys, changes, needle):
    path = _latent_file(tmp_path, **changes)
    capsys.readouterr()
    assert main([*DEMO, "--resume", str(path), "--steps", "1", "--out", str(tmp_path / "r.png")]) == 2
    err = _error(capsys)
    assert needle in err and str(path) in err


# -- no silent NaN -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "needle"), [
    (["red:3e38"], "too large"),
    (["red:1e308"], "too large"),
    (["red", "--tv-weight", "nan"], "tv_weight"),
    (["red", "--init-weight", "nan"], "init_weight"),
    (["red", "--lr", "inf"], "lr"),
    (["red", "--clip-weights", "nan"], "clip_weights"),
])
def test_non_finite_settings_are_refused(tmp_path, capsys, extra, needle):
    assert main([*DEMO, *extra, "--steps", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert needle in _error(capsys)
    assert not (tmp_path / "x.png").exists()


def test_nan_loss_stops_with_the_step_and_keeps_the_last_finite_image(tmp_path, capsys, monkeypatch):
    import vqgan_core.engine.terms as terms

    real, calls = terms.tv_loss, []

    def tv(img, circular=False):  # finite for 3 steps, then NaN
        calls.append(1)
        out = real(img, circular)
        return out * float("nan") if len(calls) > 3 else out

    monkeypatch.setattr(terms, "tv_loss", tv)
    out = tmp_path / "x.png"
    assert main([*DEMO, "red", "--tv-weight", "0.1", "--steps", "8", "--log-every", "2", "--out", str(out)]) == 2
    err = _error(capsys)
    assert "at step 4" in err and "step 2" in err  # the NaN step, and the last finite image kept
    with Image.open(out) as im:
        meta = json.loads(im.text["vqgan_clip"])
        assert meta["step"] == 2 and np.asarray(im.convert("L")).std() > 1  # a picture, not a black image


def test_animation_settings_reject_nan():
    from vqgan_core.animation.animate import AnimationConfig

    for field in ("rotate", "zoom", "shift_x"):
        with pytest.raises(ValueError, match=field):
            AnimationConfig(**{field: float("nan")})


# -- no work lost ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("out", ["/proc/no_such_dir/x.png", "/etc/hostname/x.png"])
def test_unwritable_output_is_found_before_the_run(capsys, out):
    t0 = time.monotonic()
    assert main([*DEMO, "red", "--steps", "500", "--out", out]) == 2
    assert "cannot write" in _error(capsys) and time.monotonic() - t0 < 30


def test_full_disk_at_the_end_keeps_the_image(tmp_path, capsys, monkeypatch):
    import errno

    import vqgan_core.media.image_io as image_io

    real = image_io.save_png

    def full(path, *a, **kw):
        if Path(path).parent == tmp_path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **kw)

    monkeypatch.setattr(image_io, "save_png", full)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "spare"))
    (tmp_path / "spare").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert main([*DEMO, "red", "--steps", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert "No space left" in _error(capsys)
    assert (tmp_path / "spare" / "x.png").is_file()


def test_sigterm_writes_the_image_like_ctrl_c(tmp_path):
    out = tmp_path / "x.png"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vqgan_core", *DEMO, "red", "--steps", "5000", "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:  # the loop has started once it logs its seed (the handler is in place)
        line = proc.stderr.readline()
        seen.append(line)
        if not line or "seed 1," in line:
            break
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    stderr = "".join(seen) + stderr
    assert proc.returncode == 0, stderr[-2000:]
    assert "terminated" in stderr and out.is_file() and "interrupted" in stdout


# -- raw tracebacks --------------------------------------------------------------------------------------------
@pytest.fixture
def not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is text, not a picture")
    return p


@pytest.mark.parametrize("flag", ["--init-image", "--image-prompts", "--edit-mask", "--region"])
def test_non_images_get_a_clear_error(tmp_path, capsys, not_an_image, flag):
    args = [flag, str(not_an_image), *(["red"] if flag == "--region" else [])]
    assert main([*DEMO, "red", *args, "--steps", "1", "--out", str(tmp_path / "x.png")]) == 2
    err = _error(capsys)
    assert "not a readable image" in err and "notes.png" in err


def test_decompression_bomb_is_refused(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64*64 > 2 * 100: PIL's bomb limit
    assert main([*DEMO, "red", "--init-image", str(big), "--steps", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert "too large to open safely" in _error(capsys)


def test_legacy_pickle_refusal_never_suggests_weights_only_false(tmp_path):
    from vqgan_core import load_vqgan
    from vqgan_core.hub.checkpoint import CheckpointError

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _Evil()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as e:
        load_vqgan(str(path))
    msg = str(e.value)
    assert "GLOBAL print" in msg and "weights_only" not in msg and "likely succeed" not in msg


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


# -- data from elsewhere -----------------------------------------------------------------------------------------
def _png_with(tmp_path, **config):
    from vqgan_core.engine.config import GenerationConfig
    from vqgan_core.media.image_io import save_png

    cfg = GenerationConfig(prompts="red", width=64, height=64, steps=1, seed=1, cutn=2, **config)
    path = tmp_path / "theirs.png"
    save_png(path, torch.rand(3, 64, 64), "red", {"config": {**cfg.to_dict(), "vqgan": "demo", "clip": ["demo"]},
                                                  "step": 1})
    return path


@pytest.mark.parametrize(("config", "named"), [
    ({"init": "image", "init_image": "http://127.0.0.1:9/steal.png"}, "http://127.0.0.1:9/steal.png"),
    ({"image_prompts": "/etc/hostname:1"}, "/etc/hostname"),
    ({"region_prompts": [["/etc/shadow", "red"]]}, "/etc/shadow"),
    ({"edit_mask": "/root/.ssh/id_rsa"}, "/root/.ssh/id_rsa"),
    ({"feed_forward": "/srv/their_model.safetensors"}, "feed-forward model /srv/their_model.safetensors"),
])
def test_from_png_does_not_read_or_fetch_what_it_names(tmp_path, capsys, config, named):
    png = _png_with(tmp_path, **config)
    assert main(["generate", "--from-png", str(png), "--out", str(tmp_path / "x.png"), "--no-progress"]) == 2
    err = _error(capsys)
    assert named in err and "--trust-png" in err


def test_from_png_with_known_models_only_runs(tmp_path):
    png = _png_with(tmp_path)
    assert main(["generate", "--from-png", str(png), "--out", str(tmp_path / "x.png"), "--no-progress"]) == 0


@pytest.mark.parametrize(("change", "needle"), [("nan", "NaN"), ("int32", "int32")])
def test_vqgan_weights_must_be_finite_floats(tmp_path, capsys, change, needle):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from vqgan_core.hub import demo

    with safe_open(str(demo.vqgan_path()), "pt") as fh:
        meta, tensors = dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    key = next(k for k in tensors if k.endswith("conv_in.weight"))
    tensors[key] = tensors[key].clone().fill_(float("nan")) if change == "nan" else tensors[key].to(torch.int32)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), meta)
    assert main([*DEMO, "red", "--vqgan", str(bad), "--steps", "1", "--out", str(tmp_path / "x.png")]) == 2
    err = _error(capsys)
    assert needle in err and key in err and not (tmp_path / "x.png").exists()
