"""Zoom animation: the frame motion, chunked runs, the animation loop, files and the ``animate`` CLI."""

import dataclasses
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from vqgan_core.animation.animate import AnimationConfig, SourceFrames, frame_transform, run_animation
from vqgan_core.cli.main import main
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import GenerationCallbacks, GenerationLoop, run_generation
from vqgan_core.media.frames import load_frames, save_animation
from vqgan_core.media.image_io import read_png_metadata, to_pil

pytestmark = pytest.mark.usefixtures("one_thread")  # vqgan / clip: the tiny models of conftest.py


def _cfg(**kw):
    base = {"prompts": "a red circle", "width": 32, "height": 32, "steps": 3, "seed": 5, "cutn": 2, "precision": "fp32",
            "log_every": 1}
    return GenerationConfig(**{**base, **kw})


def _img(h=16, w=16):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_frame_transform_motions():
    x = _img()
    assert frame_transform(x, AnimationConfig(zoom=1.0)) is x  # no motion: the frame itself
    shifted = frame_transform(x, AnimationConfig(zoom=1.0, shift_x=2, shift_y=1))
    assert torch.allclose(shifted[..., 1:, 2:], x[..., :-1, :-2], atol=1e-5)  # content moved right 2, down 1
    rot = frame_transform(x, AnimationConfig(zoom=1.0, rotate=90))
    assert torch.allclose(rot, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)  # counter-clockwise on screen
    zoomed = frame_transform(x, AnimationConfig(zoom=2.0))
    for i, j in [(0, 0), (3, 10), (15, 15)]:  # each output pixel shows the source point c + (p - c) / zoom
        assert torch.allclose(zoomed[0, :, i, j], frame_ref(x, i, j), atol=1e-5)
    out = frame_transform(x, AnimationConfig(zoom=0.5, padding="zeros"))
    assert (out[..., 0, 0] == 0).all() and (out[..., 8, 8] > 0).all()  # zooming out reveals the zero padding


def test_wrap_padding_continues_the_image_as_a_tile():
    x = _img()
    for dx, dy in ((3, -2), (20, 37), (-50, 0)):  # any distance, even several tiles: a pure roll
        wrapped = frame_transform(x, AnimationConfig(zoom=1.0, shift_x=dx, shift_y=dy, padding="wrap"))
        assert torch.allclose(wrapped, torch.roll(x, (dy, dx), dims=(2, 3)), atol=1e-4)
    half = frame_transform(x, AnimationConfig(zoom=1.0, shift_x=0.5, padding="wrap"))  # across the seam too
    assert torch.allclose(half[..., 0], (x[..., 0] + x[..., -1]) / 2, atol=1e-5)
    far = frame_transform(x, AnimationConfig(zoom=0.25, padding="wrap"))  # 4 x 4 tiles: periodic, no fill
    assert torch.allclose(far[..., :4], far[..., 4:8], atol=1e-5) and torch.allclose(far[..., :4, :], far[..., 12:, :],
                                                                                      atol=1e-5)
    out = frame_transform(x, AnimationConfig(zoom=0.5, padding="wrap"))  # zooming out shows 2 x 2 tiles:
    assert out.shape == x.shape and torch.allclose(out[..., :8], out[..., 8:], atol=1e-6)  # periodic, no fill
    assert torch.allclose(out[..., :8, :], out[..., 8:, :], atol=1e-6)
    rot = frame_transform(x, AnimationConfig(zoom=1.0, rotate=90, padding="wrap"))
    assert torch.allclose(rot, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)  # inside the tile, as before


def frame_ref(x, i, j, zoom=2.0, c=7.5):
    """Bilinear sample of ``x`` at the source point of output pixel (i, j) under a zoom about the centre."""
    si, sj = c + (i - c) / zoom, c + (j - c) / zoom
    i0, j0 = int(np.floor(si)), int(np.floor(sj))
    di, dj = si - i0, sj - j0
    p = x[0]
    return ((1 - di) * (1 - dj) * p[:, i0, j0] + (1 - di) * dj * p[:, i0, j0 + 1]
            + di * (1 - dj) * p[:, i0 + 1, j0] + di * dj * p[:, i0 + 1, j0 + 1])


def test_animation_config_errors():
    with pytest.raises(ValueError, match="valid: reflection, border, zeros, wrap"):
        AnimationConfig(padding="mirror")
    with pytest.raises(ValueError, match="zoom must be between 0.1 and 10"):
        AnimationConfig(zoom=0)
    with pytest.raises(ValueError, match="frames must be between 1 and 1000000"):
        AnimationConfig(frames=0)
    with pytest.raises(ValueError, match="zooom"):
        AnimationConfig.from_dict({"zooom": 1.1})


def test_run_in_chunks_equals_one_run(vqgan, clip):
    whole = run_generation(vqgan, clip, _cfg(steps=5))
    loop = GenerationLoop(vqgan, clip, _cfg(steps=5))
    vqgan.requires_grad_(True).train()
    first = loop.run(max_steps=2)
    assert first.steps_done == 2 and not first.interrupted
    assert vqgan.training and all(p.requires_grad for p in vqgan.parameters())  # handed back between chunks
    rest = loop.run()
    assert rest.steps_done == 5 and torch.equal(rest.latent, whole.latent) and rest.losses == whole.losses
    vqgan.requires_grad_(False).eval()


def test_set_latent_copies_in_place_and_restarts_optimiser(vqgan, clip):
    loop = GenerationLoop(vqgan, clip, _cfg(steps=4, init_weight=0.5))
    loop.run(max_steps=2)
    assert loop.opt.state  # Adam has moments now
    z_before = loop.z
    target = loop.encode_images(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    loop.set_latent(target)
    assert loop.z is z_before and torch.equal(loop.z.detach(), target) and torch.equal(loop.z_init, target)
    assert not loop.opt.state
    with pytest.raises(ValueError, match=r"needs shape \(1, 16, 8, 8\)"):
        loop.set_latent(torch.zeros(1, 3, 4, 4))


def test_animation_frames_steps_seed_and_interrupt(vqgan, clip):
    anim = AnimationConfig(frames=4, steps_per_frame=2, zoom=1.25, rotate=10)
    progress, streamed = [], []
    cb = GenerationCallbacks(progress=lambda s, t, loss: progress.append((s, t)))
    a = run_animation(vqgan, clip, _cfg(), anim, cb, on_frame=lambda i, im: streamed.append(i))
    assert a.frames.shape == (4, 1, 3, 32, 32) and a.frames_done == 4 and not a.interrupted
    assert streamed == [0, 1, 2, 3] and progress[-1] == (3 + 3 * 2, 9) and len(progress) == 9
    assert a.config.steps == 3 and a.config.seed == 5 and a.latent.shape == (1, 16, 8, 8)
    assert not torch.equal(a.frames[0], a.frames[1])
    b = run_animation(vqgan, clip, _cfg(), anim)
    assert torch.equal(a.frames, b.frames)  # same seed, same frames
    # frame 0 is exactly the plain generation of the same settings
    assert torch.equal(a.frames[0], run_generation(vqgan, clip, _cfg()).images)
    stop = GenerationCallbacks(progress=lambda s, t, loss: progress.append(s), should_stop=lambda: len(progress) >= 8)
    progress.clear()
    c = run_animation(vqgan, clip, _cfg(), anim, stop)
    assert c.interrupted and c.frames_done == 3 and torch.equal(c.frames, a.frames[:3])


def test_story_prompts_span_frames(vqgan, clip):
    anim = AnimationConfig(frames=3, steps_per_frame=2, zoom=1.1)
    a = run_animation(vqgan, clip, _cfg(prompts="red ^ blue", change_prompts_every=3), anim)
    b = run_animation(vqgan, clip, _cfg(prompts="red"), anim)
    assert torch.equal(a.frames[0], b.frames[0]) and not torch.equal(a.frames[2], b.frames[2])


@pytest.mark.parametrize("suffix", [".webp", ".gif", ".png"])
def test_save_animation_formats(tmp_path, suffix):
    frames = [to_pil(torch.full((3, 8, 8), v)) for v in (0.0, 0.5, 1.0)]
    out = save_animation(tmp_path / f"a{suffix}", frames, fps=10, prompt="p", settings={"k": 1})
    with Image.open(out) as im:
        assert im.n_frames == 3 and im.size == (8, 8)
        im.seek(1)
        assert suffix == ".webp" or im.info.get("duration") == 100  # Pillow reads no WebP frame duration
    if suffix == ".png":
        assert read_png_metadata(out) == {"k": 1}
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # atomic: no temporary file left


@pytest.mark.ffmpeg
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
def test_save_animation_mp4_with_ffmpeg(tmp_path):
    frames = [to_pil(torch.full((3, 9, 7), v)) for v in (0.0, 0.5, 1.0)]  # odd size: padded to even for yuv420p
    out = save_animation(tmp_path / "a.mp4", frames, fps=10)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,width,height", "-of", "csv=p=0", str(out)],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "8,10,3"
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


@pytest.mark.ffmpeg
@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="ffmpeg not on PATH")
def test_video_round_trip_with_ffmpeg(tmp_path):
    frames = [to_pil(torch.full((3, 16, 24), v)) for v in (0.1, 0.5, 0.9)]
    out = save_animation(tmp_path / "v.mp4", frames, fps=10)
    back = load_frames(out)
    assert back.shape == (3, 3, 16, 24) and back.dtype == torch.uint8
    assert torch.allclose(back.float().mean((1, 2, 3)) / 255, torch.tensor([0.1, 0.5, 0.9]), atol=0.03)
    assert load_frames(out, max_frames=2, size=(8, 8)).shape == (2, 3, 8, 8)  # fitted while decoding
    gradient = torch.linspace(0, 1, 24).expand(3, 16, 24)
    rotated = tmp_path / "rotated.mp4"  # a phone video: stored 24x16, shown (and decoded) 16x24
    save_animation(tmp_path / "plain.mp4", [to_pil(gradient)] * 2, fps=10)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "plain.mp4"), "-c", "copy", "-metadata:s:v",
                    "rotate=90", str(rotated)], check=True)
    wide = tmp_path / "anamorphic.mp4"  # stored 24x16 with 2:1 pixels: shown 48x16
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "plain.mp4"), "-vf", "setsar=2", str(wide)],
                   check=True)
    assert load_frames(wide).shape == (2, 3, 16, 48)
    turned = load_frames(rotated)
    assert turned.shape == (2, 3, 24, 16)  # width and height swapped, not scrambled
    col = turned[0].float().mean((0, 2))
    assert (col[1:] - col[:-1]).abs().max() < 40  # a smooth gradient along the new height
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="no video stream"):
        load_frames(tmp_path / "bad.mp4")


def test_save_animation_errors(tmp_path, monkeypatch):
    frames = [to_pil(torch.zeros(3, 8, 8))]
    with pytest.raises(ValueError, match=r"use one of \.webp, \.gif"):
        save_animation(tmp_path / "a.avi", frames, fps=10)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ValueError, match="needs ffmpeg on PATH"):
        save_animation(tmp_path / "a.mp4", frames, fps=10)


@pytest.fixture
def anim_args(taming_fixtures, tiny_clip_dir):
    return ["animate", "--vqgan", str(taming_fixtures / "tiny_f4" / "last.ckpt"), "--clip", str(tiny_clip_dir),
            "--size", "32", "32", "--cutn", "2", "--precision", "fp32", "--device", "cpu", "--no-progress"]


def test_cli_animate_apng_reproduces_from_png(anim_args, tmp_path, capsys):
    out = tmp_path / "zoom.png"
    rc = main([*anim_args, "red circle", "--steps", "2", "--seed", "9", "--frames", "3", "--steps-per-frame", "1",
               "--zoom", "1.2", "--shift", "1", "0", "--fps", "8", "--out", str(out), "--frames-dir", str(tmp_path / "f")])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    meta = read_png_metadata(out)
    assert meta["config"]["seed"] == 9 and meta["config"]["steps"] == 2 and meta["frames"] == 3
    assert meta["animation"]["zoom"] == 1.2 and meta["animation"]["shift_x"] == 1.0 and meta["animation"]["fps"] == 8
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [f"frame_{i:05d}.png" for i in range(3)]
    assert read_png_metadata(tmp_path / "f" / "frame_00001.png")["frame"] == 1
    for png in (out, tmp_path / "f" / "frame_00001.png"):  # no ComfyUI chunk names: no graph makes an animation
        with Image.open(png) as im:
            assert im.text["vqgan_clip_prompt"] == "red circle" and not {"prompt", "workflow"} & set(im.text)
    again = tmp_path / "again.png"
    assert main(["animate", "--trust-png", "--from-png", str(out), "--out", str(again), "--no-progress", "--device", "cpu"]) == 0
    with Image.open(out) as a, Image.open(again) as b:
        assert a.n_frames == b.n_frames == 3
        for i in range(3):
            a.seek(i)
            b.seek(i)
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_cli_seamless_animation_wraps_by_default(anim_args, tmp_path):
    out = tmp_path / "tile.png"
    assert main([*anim_args, "red circle", "--seamless", "--steps", "1", "--seed", "2", "--frames", "2",
                 "--steps-per-frame", "1", "--zoom", "1.0", "--shift", "4", "0", "--out", str(out)]) == 0
    assert read_png_metadata(out)["animation"]["padding"] == "wrap"  # what leaves the tile comes back in
    plain = tmp_path / "plain.png"
    assert main([*anim_args, "red circle", "--seamless", "--anim-padding", "border", "--steps", "1", "--frames", "1",
                 "--out", str(plain)]) == 0
    assert read_png_metadata(plain)["animation"]["padding"] == "border"  # an explicit choice wins


def test_cli_animate_bad_output_is_one_line_error(anim_args, tmp_path, capsys):
    assert main([*anim_args, "red", "--out", str(tmp_path / "x.avi")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unsupported animation format '.avi'") and err.count("\n") == 1
    assert main([*anim_args, "red", "--zoom", "-1"]) == 2
    assert "zoom must be between 0.1 and 10" in capsys.readouterr().err


def _recon(vqgan, img01):
    with torch.no_grad():
        return vqgan.decode(vqgan.encode(img01 * 2 - 1)[0]).add(1).div(2).clamp(0, 1)


def test_restyle_source_frames_wiring(vqgan, clip):
    src = torch.rand(5, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    anim = AnimationConfig(frames=4, steps_per_frame=0, zoom=1.0)
    r = run_animation(vqgan, clip, _cfg(steps=0), anim, source=src)
    assert r.frames.shape == (4, 1, 3, 32, 32) and r.frames_done == 4  # min(frames, source frames)
    fitted = SourceFrames(src, 32, 32, 1)
    for f in range(4):  # no steps, no blend: each frame is the VQGAN's reconstruction of its source frame
        assert torch.allclose(r.frames[f], _recon(vqgan, fitted[f]), atol=1e-5)
    other = src.clone()
    other[1:] = torch.rand(4, 3, 40, 48, generator=torch.Generator().manual_seed(3))
    carried = run_animation(vqgan, clip, _cfg(steps=0), dataclasses.replace(anim, blend=1.0), source=other)
    same_start = run_animation(vqgan, clip, _cfg(steps=0), dataclasses.replace(anim, blend=1.0), source=src)
    assert torch.equal(carried.frames, same_start.frames)  # blend 1: later source frames are not used
    styled = run_animation(vqgan, clip, _cfg(steps=2), dataclasses.replace(anim, steps_per_frame=2, blend=0.3),
                           source=src)
    assert styled.frames.shape == (4, 1, 3, 32, 32) and not torch.equal(styled.frames, r.frames)


def test_smooth_shows_an_ewma_of_the_latents_and_leaves_the_run_alone(vqgan, clip, monkeypatch):
    src = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    anim = AnimationConfig(frames=4, steps_per_frame=2, zoom=1.0, blend=0.2)
    plain = run_animation(vqgan, clip, _cfg(steps=2), anim, source=src)
    raw, shown = [], []  # each frame's optimised latent; the latents decoded for the frames shown
    real_run, real_decode, real_result = GenerationLoop.run, GenerationLoop.decode, GenerationLoop.result
    in_result = []

    def run(self, max_steps=None):
        r = real_run(self, max_steps=max_steps)
        raw.append(r.latent)
        return r

    def result(self, interrupted=False):
        in_result.append(True)
        try:
            return real_result(self, interrupted)
        finally:
            in_result.pop()

    def decode(self, z):
        if not in_result:  # not the end-of-run decode of the loop's own latent
            shown.append(z.detach().clone())
        return real_decode(self, z)

    monkeypatch.setattr(GenerationLoop, "run", run)
    monkeypatch.setattr(GenerationLoop, "result", result)
    monkeypatch.setattr(GenerationLoop, "decode", decode)
    smooth = run_animation(vqgan, clip, _cfg(steps=2), dataclasses.replace(anim, smooth=0.6), source=src)
    assert torch.equal(smooth.latent, plain.latent)  # the optimisation runs on the unsmoothed latents
    assert torch.equal(smooth.frames[0], plain.frames[0]) and not torch.equal(smooth.frames[1:], plain.frames[1:])
    assert len(raw) == len(shown) == 4 and torch.equal(shown[0], raw[0])
    for f in range(1, 4):
        assert torch.allclose(shown[f], torch.lerp(raw[f], shown[f - 1], 0.6))
    with pytest.raises(ValueError, match="smooth averages latents of frames that stay in place"):
        AnimationConfig(zoom=1.05, smooth=0.5)
    with pytest.raises(ValueError, match="smooth must be between 0 and 0.99"):
        AnimationConfig(zoom=1.0, smooth=1.0)


def test_restyle_errors(vqgan, clip):
    with pytest.raises(ValueError, match="do not also give an init latent or init image"):
        run_animation(vqgan, clip, _cfg(), AnimationConfig(), source=torch.rand(2, 3, 8, 8),
                      init_latent=torch.zeros(1, 16, 8, 8))
    with pytest.raises(ValueError, match=r"\[F,3,H,W\] or \[F,B,3,H,W\]"):
        SourceFrames(torch.rand(2, 4, 8, 8), 32, 32, 1)
    with pytest.raises(ValueError, match="batch size is 3"):
        SourceFrames(torch.rand(2, 2, 3, 8, 8), 32, 32, 3)
    with pytest.raises(ValueError, match="blend must be between 0 and 1"):
        AnimationConfig(blend=1.5)


def test_load_frames_folder_animated_file_and_errors(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, v in enumerate((0.2, 0.6, 1.0)):
        to_pil(torch.full((3, 6, 10), v)).save(folder / f"{2 - i:03d}.png")  # names sort in reverse order
    (folder / "notes.txt").write_text("skip me")
    frames = load_frames(folder)
    assert frames.shape == (3, 3, 6, 10) and frames[0, 0, 0, 0] == 255  # uint8, sorted by name
    assert load_frames(folder, size=(4, 4)).shape == (3, 3, 4, 4)
    assert load_frames(folder, max_frames=2).shape[0] == 2
    gif = save_animation(tmp_path / "a.gif", [to_pil(torch.full((3, 6, 10), v)) for v in (0.0, 1.0)], fps=5)
    assert load_frames(gif).shape == (2, 3, 6, 10)
    to_pil(torch.zeros(3, 7, 10)).save(folder / "999.png")
    with pytest.raises(ValueError, match="differ in size"):
        load_frames(folder)
    (tmp_path / "v.mp4").write_bytes(b"x")
    with monkeypatch.context() as m:
        m.setattr("shutil.which", lambda name: None)
        with pytest.raises(ValueError, match="needs ffmpeg and ffprobe on PATH"):
            load_frames(tmp_path / "v.mp4")
    with pytest.raises(FileNotFoundError, match="source frames not found"):
        load_frames(tmp_path / "missing")


def test_cli_animate_restyles_a_folder(anim_args, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for i in range(3):
        to_pil(torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i))).save(folder / f"{i}.png")
    out = tmp_path / "styled.png"
    assert main([*anim_args, "red circle", "--source", str(folder), "--steps", "1", "--steps-per-frame", "1",
                 "--blend", "0.25", "--smooth", "0.5", "--seed", "1", "--out", str(out)]) == 0
    meta = read_png_metadata(out)
    anim = meta["animation"]
    assert anim["frames"] == 3 and anim["blend"] == 0.25 and anim["zoom"] == 1.0 and anim["source"] == str(folder)
    assert anim["smooth"] == 0.5
    again = tmp_path / "again.png"
    assert main(["animate", "--trust-png", "--from-png", str(out), "--out", str(again), "--no-progress", "--device", "cpu"]) == 0
    with Image.open(out) as a, Image.open(again) as b:
        assert a.n_frames == b.n_frames == 3
        b.seek(2)
        a.seek(2)
        assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_init_weight_decay_restarts_every_frame(vqgan, clip, monkeypatch):
    import vqgan_core.engine.terms as gen  # the init pull-back term

    calls = []
    real = gen.init_weight_factor
    monkeypatch.setattr(gen, "init_weight_factor", lambda i, total, decay: calls.append((i, total)) or real(i, total, decay))
    run_animation(vqgan, clip, _cfg(steps=3, init_weight=0.5), AnimationConfig(frames=3, steps_per_frame=2, zoom=1.1))
    assert calls == [(0, 7), (1, 7), (2, 7), (0, 2), (1, 2), (0, 2), (1, 2)]  # each frame pulls from its start


def test_cli_animate_rejects_save_every_and_keeps_frames_on_ctrl_c(anim_args, tmp_path, capsys, monkeypatch):
    assert main([*anim_args, "red", "--save-every", "1", "--out", str(tmp_path / "x.webp")]) == 2
    assert "--frames-dir" in capsys.readouterr().err
    import signal

    import vqgan_core.engine.loop as gen

    real_step, calls, fired = gen.GenerationLoop.step, [], []

    def step(self):
        calls.append(1)
        if len(calls) == 4 and not fired:  # Ctrl-C during the last step of frame 1 (2 steps for frame 0, then 2
            fired.append(1)  # per frame), once
            signal.raise_signal(signal.SIGINT)
        return real_step(self)

    monkeypatch.setattr(gen.GenerationLoop, "step", step)
    out, frames_dir = tmp_path / "partial.png", tmp_path / "frames"
    assert main([*anim_args, "red", "--steps", "2", "--frames", "5", "--steps-per-frame", "2", "--seed", "1",
                 "--out", str(out), "--frames-dir", str(frames_dir)]) == 0
    assert "interrupted after 2 of 5" in capsys.readouterr().out and len(calls) == 4  # that step still finished
    with Image.open(out) as im:
        assert im.n_frames == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    # reproducing it makes the 2 frames it holds, of the same planned 5-frame animation; a frame file makes
    # the frames up to it; --stop-after-frames sets the count
    again = tmp_path / "again.png"
    for src, frames, steps in ((out, 2, 4), (frames_dir / "frame_00000.png", 1, 2)):
        calls.clear()
        assert main(["animate", "--trust-png", "--from-png", str(src), "--out", str(again), "--no-progress"]) == 0
        assert f"{frames} of 5" in capsys.readouterr().out and len(calls) == steps
        with Image.open(out) as a, Image.open(again) as b:
            assert b.n_frames == frames
            for f in range(frames):
                a.seek(f)
                b.seek(f)
                assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    calls.clear()
    assert main(["animate", "--trust-png", "--from-png", str(out), "--stop-after-frames", "3", "--out", str(again),
                 "--no-progress"]) == 0
    assert len(calls) == 6 and "3 of 5" in capsys.readouterr().out
