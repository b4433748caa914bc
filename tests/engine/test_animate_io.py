"""Animation files (APNG, WebP, GIF; video through ffmpeg), source frame folders, and the ``animate`` CLI."""

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from vqgan_core.cli.main import main
from vqgan_core.media.frames import load_frames, save_animation
from vqgan_core.media.image_io import read_png_metadata, to_pil

pytestmark = pytest.mark.usefixtures("one_thread")  # the CLI runs load the tiny fixture models


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
