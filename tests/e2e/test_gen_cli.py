"""``python -m vqgan_core generate``: PNG metadata, --from-png reproduction, --save-every, clear errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqgan_core.cli.main import main
from vqgan_core.media.image_io import read_png_metadata

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]




@pytest.fixture
def base_args(taming_fixtures, tiny_clip_dir):
    return ["generate", "--vqgan", str(taming_fixtures / "tiny_f4" / "last.ckpt"), "--clip", str(tiny_clip_dir),
            "--size", "32", "32", "--cutn", "2", "--precision", "fp32", "--device", "cpu", "--no-progress"]


def test_generate_metadata_and_reproduce(base_args, tmp_path, capsys):
    out = tmp_path / "a.png"
    rc = main([*base_args, "red circle:1|blue:-0.5", "--steps", "3", "--seed", "11", "--out", str(out),
               "--save-every", "2", "--save-sequence", "--optimizer", "adamw", "--image-losses", "symmetry:0.5"])
    assert rc == 0 and out.is_file()
    assert (tmp_path / "a_00000.png").is_file() and (tmp_path / "a_00002.png").is_file()
    meta = read_png_metadata(out)
    cfg = meta["config"]
    assert cfg["seed"] == 11 and cfg["prompts"] == "red circle:1|blue:-0.5" and cfg["optimizer"] == "adamw"
    assert cfg["image_losses"] == {"symmetry": 0.5}
    assert cfg["vqgan"].endswith("last.ckpt") and cfg["clip"] and meta["step"] == 3
    text = Image.open(out).text  # the prompt text in its own chunk: "prompt"/"workflow" are ComfyUI's (JSON graphs)
    assert text["vqgan_clip_prompt"] == "red circle:1|blue:-0.5" and "prompt" not in text and "workflow" not in text
    again = tmp_path / "b.png"
    assert main(["generate", "--trust-png", "--from-png", str(out), "--out", str(again), "--no-progress", "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    assert "wrote" in capsys.readouterr().out
    # an image saved on the way reproduces as itself (the run stops at its step), or runs on with --stop-at
    mid, early = tmp_path / "a_00002.png", tmp_path / "early.png"
    for extra in ([], ["--stop-at", "3"]):
        assert main(["generate", "--trust-png", "--from-png", str(mid), *extra, "--out", str(again), "--no-progress"]) == 0
        assert np.array_equal(np.asarray(Image.open(out if extra else mid)), np.asarray(Image.open(again)))
    assert read_png_metadata(again)["config"]["steps"] == 3
    assert main(["generate", "--trust-png", "--from-png", str(out), "--stop-at", "2", "--out", str(early), "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(mid)), np.asarray(Image.open(early)))
    assert read_png_metadata(early)["step"] == 2 and "step 2 of 3" in capsys.readouterr().out
    assert main(["generate", "--trust-png", "--from-png", str(out), "--stop-at", "4", "--out", str(early)]) == 2
    assert "--stop-at 4 is outside the run's 0..3 steps" in capsys.readouterr().err


def test_batch_outputs(base_args, tmp_path):
    out = tmp_path / "batch.png"
    assert main([*base_args, "--batch-prompts", "red", "blue", "--steps", "1", "--seed", "2", "--out", str(out)]) == 0
    metas = [read_png_metadata(tmp_path / f"batch_{b}.png") for b in (0, 1)]
    assert [m["batch_index"] for m in metas] == [0, 1] and metas[0]["config"]["batch_size"] == 2


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["a cat:", "--steps", "1"], "empty weight"),
        (["a cat", "--optimizer", "diffgrad", "--steps", "1"], "valid names"),
        (["a cat", "--augments", "Af,Zz", "--steps", "1"], "valid names"),
        (["a cat", "--out", "x.jpg"], ".png"),
        (["a cat", "--size", "0", "32"], "width must be between 8 and 16384, got 0"),
        (["a cat", "--region", "/nope/sky.png", "blue"], "mask not found: /nope/sky.png"),
        (["a cat", "--edit-mask", "/nope/m.png"], "mask not found: /nope/m.png"),
        (["a cat", "--save-every", "-3"], "save_every must be between 0 and 100000, got -3"),
        (["a cat", "--change-prompts-every", "-1"], "change_prompts_every must be between 0 and 100000, got -1"),
        (["a ^ b", "--change-prompts-every", "2", "--story-fade", "5"], "story_fade (5) must be at most"),
        (["a cat", "--lr", "-1"], "lr must be between 0.0001 and 10, got -1.0"),
        (["a cat", "--cut-pow", "-0.5"], "cut_pow must be between 0 and 10, got -0.5"),
    ],
)
def test_errors_are_one_line(base_args, tmp_path, capsys, extra, needle):
    assert main([*base_args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err


def test_story_fade_is_recorded_and_reproduced(base_args, tmp_path):
    out, again = tmp_path / "fade.png", tmp_path / "again.png"
    assert main([*base_args, "red ^ blue", "-cpe", "2", "--story-fade", "2", "--steps", "4", "--seed", "1",
                 "--out", str(out)]) == 0
    assert read_png_metadata(out)["config"]["story_fade"] == 2
    assert main([*base_args, "--trust-png", "--from-png", str(out), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_region_prompts_from_the_command_line(base_args, tmp_path, monkeypatch):
    mask = tmp_path / "top.png"
    arr = np.zeros((16, 16), np.uint8)
    arr[:8] = 255
    Image.fromarray(arr, "L").save(mask)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.png"
    assert main([*base_args, "a circle", "--region", "top.png", "blue sky", "--steps", "2", "--seed", "4",
                 "--out", str(out)]) == 0
    regions = read_png_metadata(out)["config"]["region_prompts"]
    assert regions == [[str(mask), "blue sky"]]  # absolute: --from-png works from any folder
    monkeypatch.chdir(REPO)
    again = tmp_path / "again.png"
    assert main(["generate", "--trust-png", "--from-png", str(out), "--out", str(again), "--no-progress", "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_edit_mask_from_the_command_line(base_args, tmp_path, monkeypatch):
    arr = np.zeros((32, 32), np.uint8)
    arr[:, 16:] = 255
    Image.fromarray(arr, "L").save(tmp_path / "right.png")
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "init.png")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "e.png"
    assert main([*base_args, "a red circle", "--init-image", "init.png", "--edit-mask", "right.png",
                 "--steps", "2", "--seed", "2", "--out", str(out)]) == 0
    stored = read_png_metadata(out)["config"]
    assert stored["edit_mask"] == str(tmp_path / "right.png") and stored["init_image"] == str(tmp_path / "init.png")
    monkeypatch.chdir(REPO)
    again = tmp_path / "again.png"
    assert main(["generate", "--trust-png", "--from-png", str(out), "--out", str(again), "--no-progress", "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_generate_video_of_the_run_and_ctrl_c(base_args, tmp_path, capsys, monkeypatch):
    out, video = tmp_path / "v.png", tmp_path / "v.gif"
    assert main([*base_args, "red", "--steps", "3", "--seed", "1", "--out", str(out), "--video", str(video)]) == 0
    with Image.open(video) as im:
        assert im.n_frames == 4  # steps 0, 1, 2 and the result
    assert "wrote" in capsys.readouterr().out
    import signal

    import vqgan_core.engine.loop as gen

    real_step, calls = gen.GenerationLoop.step, []

    def step(self):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: the run stops after this step and still writes
        return real_step(self)

    monkeypatch.setattr(gen.GenerationLoop, "step", step)
    assert main([*base_args, "red", "--steps", "50", "--seed", "1", "--out", str(out)]) == 0
    assert ", interrupted" in capsys.readouterr().out and len(calls) == 2
    assert read_png_metadata(out)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    again = tmp_path / "again.png"  # the interrupted image reproduces: 2 of the planned 50 steps
    assert main(["generate", "--trust-png", "--from-png", str(out), "--out", str(again), "--no-progress"]) == 0
    assert len(calls) == 4 and np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_out_of_memory_is_one_actionable_line(base_args, tmp_path, capsys, monkeypatch):
    import torch

    import vqgan_core.engine.loop as gen

    def oom(self, max_steps=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(gen.GenerationLoop, "run", oom)
    assert main([*base_args, "red", "--steps", "1", "--no-checkpoint-decoder", "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of GPU memory") and "--checkpoint-decoder" in err and err.count("\n") == 1
    out = ["--steps", "1", "--out", str(tmp_path / "o.png")]
    for extra in (["--checkpoint-decoder"], []):  # on, or switched on automatically: not suggested again
        assert main([*base_args, "red", *out, *extra]) == 2
        assert "--checkpoint-decoder" not in capsys.readouterr().err


def test_video_flags_checked_before_the_run(base_args, tmp_path, capsys):
    out = tmp_path / "a.png"
    assert main([*base_args, "red", "--out", str(out), "--video", str(tmp_path / "v.gif"), "--video-fps", "0"]) == 2
    assert "--video-fps > 0" in capsys.readouterr().err
    assert main([*base_args, "red", "--out", str(out), "--video", str(out)]) == 2
    assert "would overwrite the image" in capsys.readouterr().err
    assert not out.exists()


def test_boolean_flags_override_stored_settings_and_threads_work(base_args, tmp_path, capsys):
    import threading

    out = tmp_path / "c.png"
    rc = {}
    t = threading.Thread(target=lambda: rc.setdefault("rc", main([*base_args, "red", "--steps", "1", "--seed", "1",
                                                                   "--checkpoint-decoder", "--out", str(out)])))
    t.start()
    t.join()
    assert rc["rc"] == 0 and read_png_metadata(out)["config"]["checkpoint_decoder"] is True  # no signal in a thread
    again = tmp_path / "d.png"
    assert main(["generate", "--trust-png", "--from-png", str(out), "--no-checkpoint-decoder", "--out", str(again), "--no-progress",
                 "--device", "cpu"]) == 0
    assert read_png_metadata(again)["config"]["checkpoint_decoder"] is False
    third = tmp_path / "e.png"  # a stored False (the old default) allows the automatic switch when reproducing
    assert main(["generate", "--trust-png", "--from-png", str(again), "--out", str(third), "--no-progress", "--device", "cpu"]) == 0
    assert read_png_metadata(third)["config"]["checkpoint_decoder"] is None


def test_default_device_prefers_cuda_then_apple_mps_then_cpu(monkeypatch):
    from vqgan_core.engine.runtime import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert default_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda")


def test_resume_goes_on_exactly_like_one_longer_run(base_args, tmp_path):
    """2 steps + --save-latent, then --resume for 2 more == 4 steps in one go (Adam state, story, random
    stream, the learning-rate schedule and the init pull-back's target and decay carried)."""
    story = [*base_args, "red ^ blue", "-cpe", "1", "--seed", "5", "--lr-schedule", "cosine", "--init-weight", "0.5"]
    whole, half, rest = tmp_path / "whole.png", tmp_path / "half.png", tmp_path / "rest.png"
    assert main([*story, "--steps", "4", "--out", str(whole), "--save-latent", str(tmp_path / "whole.vqlatent")]) == 0
    assert main([*story, "--steps", "4", "--stop-at", "2", "--out", str(half),  # the schedule planned over all 4
                 "--save-latent", str(tmp_path / "half.vqlatent")]) == 0
    assert main([*story, "--steps", "2", "--out", str(rest), "--resume", str(tmp_path / "half.vqlatent"),
                 "--save-latent", str(tmp_path / "rest.vqlatent")]) == 0
    from vqgan_core.latents.files import load_latent

    a, b = load_latent(tmp_path / "whole.vqlatent"), load_latent(tmp_path / "rest.vqlatent")
    assert a.state["steps"] == b.state["steps"] == 4
    assert torch.equal(a.z, b.z)  # the latent itself, not only its codes: every carried piece counts
    assert np.array_equal(np.asarray(Image.open(whole)), np.asarray(Image.open(rest)))
    meta = read_png_metadata(rest)
    assert meta["resumed_from"] == str((tmp_path / "half.vqlatent").resolve())
    again = tmp_path / "again.png"  # --from-png of a resumed image resumes from the same file
    assert main([*base_args, "--trust-png", "--from-png", str(rest), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(rest)))


def test_codebook_sampling_resumes_exactly_and_is_recorded(base_args, tmp_path):
    """--method codebook_sampling: 2 steps + --resume 2 == 4 in one go (the file carries the logits), and the
    PNG's settings reproduce the image."""
    run = [*base_args, "red", "--seed", "4", "--lr", "1.0"]
    codes = [*run, "--method", "codebook_sampling"]
    whole, rest = tmp_path / "whole.png", tmp_path / "rest.png"
    assert main([*codes, "--steps", "4", "--out", str(whole), "--save-latent", str(tmp_path / "whole.vqlatent"),
                 "--save-every", "2", "--save-sequence"]) == 0
    assert main([*codes, "--steps", "4", "--stop-at", "2", "--out", str(tmp_path / "half.png"),
                 "--save-latent", str(tmp_path / "half.vqlatent")]) == 0
    # the method comes from the file, like the seed and size
    assert main([*run, "--steps", "2", "--out", str(rest), "--resume", str(tmp_path / "half.vqlatent"),
                 "--save-latent", str(tmp_path / "rest.vqlatent")]) == 0
    assert np.array_equal(np.asarray(Image.open(whole)), np.asarray(Image.open(rest)))
    from vqgan_core.latents.files import load_latent

    a, b = load_latent(tmp_path / "whole.vqlatent"), load_latent(tmp_path / "rest.vqlatent")
    assert torch.equal(a.state["logits"], b.state["logits"])  # the distribution itself, not only its argmax
    assert not torch.equal(a.state["logits"], load_latent(tmp_path / "half.vqlatent").state["logits"])
    assert read_png_metadata(whole)["config"]["method"] == "codebook_sampling"
    again = tmp_path / "again.png"
    assert main([*base_args, "--trust-png", "--from-png", str(whole), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(whole)), np.asarray(Image.open(again)))
    mid = tmp_path / "mid.png"  # an image saved on the way is the run's (most likely codes), not a random draw
    assert main([*base_args, "--trust-png", "--from-png", str(tmp_path / "whole_00002.png"), "--out", str(mid)]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "whole_00002.png")), np.asarray(Image.open(mid)))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "half.png")), np.asarray(Image.open(mid)))


def test_resume_takes_seed_size_and_batch_from_the_file_and_checks_the_rest(base_args, tmp_path, capsys):
    """Without --seed, --size, --batch the file's are used (image prompts are seeded too); given ones must match;
    --from-png refuses a latent file rewritten since; the optimiser name's case does not matter."""
    img = tmp_path / "p.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(img)
    i = base_args.index("--size")
    base_args = base_args[:i] + base_args[i + 3:]  # no --size
    run = [*base_args, "red", "--image-prompts", str(img), "--batch", "2", "--size", "16", "16", "--seed", "9"]
    whole, half = tmp_path / "whole.png", tmp_path / "half.vqlatent"
    assert main([*run, "--steps", "3", "--out", str(whole)]) == 0
    assert main([*run, "--steps", "1", "--out", str(tmp_path / "h.png"), "--save-latent", str(half),
                 "--optimizer", "Adam"]) == 0
    rest = tmp_path / "rest.png"  # no --seed / --size / --batch: the file's
    assert main([*base_args, "red", "--image-prompts", str(img), "--steps", "2", "--out", str(rest),
                 "--resume", str(half)]) == 0
    for b in (0, 1):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"whole_{b}.png")),
                              np.asarray(Image.open(tmp_path / f"rest_{b}.png")))
    for extra, needle in ((["--batch", "3"], "holds a batch of 2, not --batch 3"),
                          (["--size", "32", "32"], "holds 16x16 images, not --size 32 32")):
        assert main([*base_args, "red", "--steps", "1", "--out", str(tmp_path / "x.png"), "--resume", str(half),
                     "--trust-png", *extra]) == 2  # (the file's stored image prompt is a local file)
        assert needle in capsys.readouterr().err
    assert main([*run, "--steps", "1", "--out", str(tmp_path / "h2.png"), "--save-latent", str(half)]) == 0
    assert main([*base_args, "--trust-png", "--from-png", str(tmp_path / "rest_0.png"), "--out", str(tmp_path / "y.png")]) == 2
    assert "which was rewritten since" in capsys.readouterr().err


def test_resume_with_another_vqgan_is_refused(base_args, tmp_path, capsys, taming_fixtures):
    assert main([*base_args, "red", "--steps", "1", "--out", str(tmp_path / "a.png"),
                 "--save-latent", str(tmp_path / "a.vqlatent")]) == 0
    gumbel = ["--vqgan", str(taming_fixtures / "tiny_gumbel_f8" / "last.ckpt")]
    assert main([*base_args, *gumbel, "red", "--steps", "1", "--out", str(tmp_path / "b.png"),
                 "--resume", str(tmp_path / "a.vqlatent")]) == 2
    assert "was saved with a VQGAN with codebook" in capsys.readouterr().err
