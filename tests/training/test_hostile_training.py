"""Hostile inputs for training: changed resumes, concurrent runs, kill -9 leftovers, corrupt or unwritable
checkpoints, missing optional packages and damaged or malicious COCO files. Each must end in a clear message or a
safe recovery, never in silently wrong output or a traceback from deep inside torch.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from tests.train_helpers import make_coco, tiny_config
from training import checkpointing as ck
from training.cli import main
from training.clip_data import load_coco
from training.config import DataConfig, TrainConfig
from training.data import ImageDataset, coco_split, resolve_splits
from training.logger import read_metrics
from training.runlock import LOCK_NAME, RunLockError
from training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread(_torch_threads):
    """Tiny models: one thread is as fast and far steadier when other processes share the cores."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp("data") / "coco", n_train=8, n_val=2, odd=False)


def _cfg(coco: Path, run: Path, **over: object) -> TrainConfig:
    return tiny_config(coco, run, **{"train__max_steps": 2, "log__image_every": 0, **over})


def _yaml(tmp_path: Path, cfg: TrainConfig) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _train_steps(out: Path) -> list[int]:
    return [r["step"] for r in read_metrics(out) if "train/total_loss" in r]


# -- A: a resume keeps the checkpoint's architecture ----------------------------------------------------------
def test_resume_refuses_changed_architecture(coco, tmp_path, capsys):
    run = tmp_path / "run"
    path = _yaml(tmp_path, _cfg(coco, run))
    assert main(["--config", path, "--out", str(run)]) == 0
    before = _snapshot(run)
    changed = ["model.ch=64", "model.n_embed=64", "loss.disc_ndf=16"]
    assert main(["--config", path, "--out", str(run), "--resume", "--max-steps", "3", *changed]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume") and "Traceback" not in err
    for text in ("model.ch: checkpoint 32, given 64", "model.n_embed: checkpoint 32, given 64", "loss.disc_ndf: checkpoint 8"):
        assert text in err, err
    assert "step_00000002" in err and "learning rate" in err  # names the checkpoint and what may change
    assert _snapshot(run) == before  # nothing written: no step 3, same configs and metrics, no lock left
    # Settings a resume may change are honoured, not refused (the optimiser keeps its moments, takes our values).
    tr = Trainer(_cfg(coco, run, optim__learning_rate=5e-4, optim__betas=[0.9, 0.99], log__every=2), resume=True)
    try:
        assert tr.step == 2 and tr.opt_ae.state
        assert tr.opt_ae.param_groups[0]["lr"] == 5e-4 and tuple(tr.opt_ae.param_groups[0]["betas"]) == (0.9, 0.99)
        # the CPU gets the fused Adam kernel (6x the for-loop one), resumed moments included
        assert tr.opt_ae.param_groups[0]["fused"] and tr.opt_d.param_groups[0]["fused"]
    finally:
        tr.close()


# -- B: one training per run folder ---------------------------------------------------------------------------
def _write_lock(run: Path, pid: int, host: str) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    lock = run / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host, "token": "other", "started": "earlier"}))
    return lock


def test_second_run_refused_stale_lock_taken_over_and_lock_released(coco, tmp_path, caplog):
    run, host = tmp_path / "run", socket.gethostname()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = _write_lock(run, other.pid, host)
        with pytest.raises(RunLockError, match=f"PID {other.pid} on host {host}"):
            Trainer(_cfg(coco, run))
        assert json.loads(lock.read_text())["pid"] == other.pid  # the live owner's lock is left alone
        assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    finally:
        other.kill()
        other.wait()
    _write_lock(run, 1, "elsewhere.invalid")  # another machine: cannot be checked, so refused
    with pytest.raises(RunLockError, match="PID 1 on host elsewhere.invalid.*another host"):
        Trainer(_cfg(coco, run))

    _write_lock(run, other.pid, host)  # that process is gone now: a stale lock from a kill -9
    caplog.set_level(logging.WARNING)
    tr = Trainer(_cfg(coco, run, train__max_steps=3))
    assert "stale lock" in caplog.text and str(other.pid) in caplog.text
    step = tr.train_step
    seen = []

    def step_then_signal(micro):
        seen.append(json.loads((run / LOCK_NAME).read_text())["pid"])
        logs = step(micro)
        if tr.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # stop request: checkpoint, then release
        return logs

    tr.train_step = step_then_signal
    tr.fit()
    assert seen == [os.getpid()] and not (run / LOCK_NAME).exists()
    assert ck.find_latest(run).name == "step_00000001"

    tr = Trainer(_cfg(coco, run), resume=True)  # an exception out of fit() releases it too

    def interrupted(micro):
        raise KeyboardInterrupt

    tr.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    assert not (run / LOCK_NAME).exists()
    with pytest.raises(ValueError, match="data.path is empty"):  # and an error during setup
        Trainer(_cfg(coco, run, data__path=""))
    assert not (run / LOCK_NAME).exists()


# -- C: leftovers of a killed run ---------------------------------------------------------------------------
def test_start_removes_leftovers_but_never_a_complete_checkpoint(coco, tmp_path, caplog):
    run = tmp_path / "run"
    Trainer(_cfg(coco, run, log__ckpt_every=1, log__keep_last=0)).fit()
    root = run / "checkpoints"
    (root / "step_00000001" / ck.WEIGHTS).unlink()  # killed while pruning step 1
    (root / ".step_00000000.prune77").mkdir()
    os.replace(root / "step_00000002", root / ".step_00000002.old4242")  # killed while re-saving step 2 ...
    tmp = root / ".step_00000002.tmp4242"
    tmp.mkdir()
    (tmp / ck.WEIGHTS).write_bytes(b"half")  # ... with its new copy half written
    (root / ".latest.x1y2.tmp").write_text("step_000")
    caplog.set_level(logging.INFO)
    tr = Trainer(_cfg(coco, run, train__max_steps=3), resume=True)
    tr.close()
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002"]
    assert ck.is_complete(root / "step_00000002") and tr.step == 2  # the complete aside copy came back
    for name in ("step_00000001 (incomplete", ".step_00000002.tmp4242", ".step_00000000.prune77", ".latest.x1y2.tmp"):
        assert name in caplog.text, name


# -- D: metrics logged after the last checkpoint -------------------------------------------------------------
def test_resume_drops_metrics_logged_after_the_checkpoint(coco, tmp_path):
    run = tmp_path / "run"
    Trainer(_cfg(coco, run, train__max_steps=4, log__ckpt_every=2, log__val_every=2, log__keep_last=0)).fit()
    shutil.rmtree(run / "checkpoints" / "step_00000004")  # as if killed after logging steps 3-4, before saving 4
    (run / "checkpoints" / "latest").write_text("step_00000002\n")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "train/tot')  # and mid-line
    Trainer(_cfg(coco, run, train__max_steps=4, log__ckpt_every=2, log__val_every=2), resume=True).fit()
    assert _train_steps(run) == [1, 2, 3, 4]
    assert [r["step"] for r in read_metrics(run) if "val/psnr" in r] == [2, 4]


# -- E: a broken newest checkpoint -----------------------------------------------------------------------------
def test_corrupt_latest_checkpoint_falls_back_to_an_older_one(coco, tmp_path, caplog):
    run = tmp_path / "run"
    over = {"train__max_steps": 4, "log__ckpt_every": 2, "log__keep_last": 0}
    Trainer(_cfg(coco, run, **over)).fit()
    root = run / "checkpoints"
    (root / "step_00000004" / ck.WEIGHTS).write_bytes(b"\x00garbage")
    caplog.set_level(logging.WARNING)
    tr = Trainer(_cfg(coco, run, **over), resume=True)
    assert tr.step == 2 and tr.resume_from.name == "step_00000002"
    assert "step_00000004" in caplog.text and ck.WEIGHTS in caplog.text  # names the bad one and why
    tr.fit()
    assert ck.find_latest(run).name == "step_00000004" and ck.load_state(root / "step_00000004")["step"] == 4
    (root / "step_00000004" / ck.STATE).write_bytes(b"not a torch file")
    tr = Trainer(_cfg(coco, run, **over), resume=True)  # a broken state.pt too
    tr.close()
    assert tr.step == 2
    (root / "step_00000002" / ck.STATE).write_bytes(b"\x80")
    with pytest.raises(ValueError, match="no loadable checkpoint.*step_00000004.*step_00000002"):
        Trainer(_cfg(coco, run, **over), resume=True)


# -- F: disk full while checkpointing -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full? (No space left on device)"),
        (RuntimeError("basic_ios::clear: iostream error"), "disk full? (basic_ios::clear"),
    ],
)
def test_checkpoint_write_failure_is_one_clear_line(coco, tmp_path, capsys, monkeypatch, exc, reason):
    run = tmp_path / "run"
    path = _yaml(tmp_path, _cfg(coco, run))
    assert main(["--config", path, "--out", str(run)]) == 0

    def disk_full(*_a: object, **_k: object) -> None:
        raise exc

    monkeypatch.setattr(ck, "atomic_torch_save", disk_full)
    assert main(["--config", path, "--out", str(run), "--resume", "--max-steps", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not write checkpoint to {run / 'checkpoints' / 'step_00000003'}: ")
    assert reason in err and "Traceback" not in err
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002"]  # no half-written temp folder
    assert ck.find_latest(run).name == "step_00000002" and ck.load_state(root / "step_00000002")["step"] == 2
    assert not (run / LOCK_NAME).exists()


# -- G: every shipped config runs with what the README installs (no tensorboard) --------------------------------
def test_tiny_cpu_config_trains_without_tensorboard(coco, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    caplog.set_level(logging.INFO)
    run = tmp_path / "run"
    config = str(REPO / "training" / "configs" / "tiny_cpu.yaml")
    argv = ["--config", config, "--data", str(coco), "--out", str(run), "--max-steps", "2", "log.progress=false"]
    assert main(argv) == 0
    assert caplog.text.count("tensorboard not installed: logging to metrics.jsonl only") == 1
    assert _train_steps(run) == [2] and not (run / "tb").exists()
    assert ck.find_latest(run).name == "step_00000002"


# -- H: damaged or malicious COCO files, folders without a usable image -----------------------------------------
def _edit_captions(root: Path, edit) -> Path:
    ann = root / "annotations" / "captions_train2017.json"
    doc = json.loads(ann.read_text())
    edit(doc)
    ann.write_text(json.dumps(doc))
    return ann


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["images"][1].pop("file_name"), r"images\[1\] has no 'file_name' key"),
        (lambda d: d["images"].__setitem__(1, "000000000002.png"), r"images\[1\] is a str, expected an object"),
        (lambda d: d["images"][2].pop("id"), r"images\[2\] has no 'id' key"),
        (lambda d: d["annotations"].__setitem__(0, 7), r"annotations\[0\] is a int"),
        (lambda d: d.__setitem__("images", {"a": 1}), r"expected an object with an 'images' list"),
    ],
)
def test_coco_damaged_entries_name_file_and_entry(tmp_path, edit, match):
    root = make_coco(tmp_path / "coco", n_train=3, n_val=1, odd=False)
    ann = _edit_captions(root, edit)
    with pytest.raises(ValueError, match=match) as e:
        coco_split(root, "train")
    assert str(ann) in str(e.value)


def test_coco_file_names_outside_the_image_folder_are_never_opened(tmp_path, monkeypatch, capsys):
    root = make_coco(tmp_path / "coco", n_train=3, n_val=1, odd=False)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (40, 40), (1, 2, 3)).save(secret)
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    def point_at(doc: dict, name: str) -> None:
        doc["images"][1]["file_name"] = name
        for im in doc["images"]:  # what the demo CLIP's reader also needs
            im["shapes"] = {"fg": "red", "bg": "blue", "shape": "circle"}

    for bad in ("../../secret.png", str(secret), "sub/../../../secret.png"):
        _edit_captions(root, lambda d, bad=bad: point_at(d, bad))
        with pytest.raises(ValueError, match=r"captions_train2017.json: images\[1\]: file_name .* outside"):
            resolve_splits(DataConfig(path=str(root)))
        with pytest.raises(ValueError, match=r"images\[1\]: file_name .* outside"):
            load_coco(root, "train")  # the demo CLIP's reader of the same files
    cfg = _yaml(tmp_path, tiny_config(root, tmp_path / "run"))
    assert main(["--config", cfg]) == 2
    err = capsys.readouterr().err
    assert "images[1]" in err and "outside" in err and "Traceback" not in err
    assert not any("secret" in p for p in opened)


def test_folder_without_a_usable_image_says_so(tmp_path, capsys, caplog):
    data = tmp_path / "broken"
    data.mkdir()
    for i in range(6):
        (data / f"x{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    Image.new("RGB", (4, 4)).save(data / "tiny.png")  # readable but below data.min_size
    train, _ = resolve_splits(DataConfig(path=str(data)))
    with pytest.raises(ValueError, match=rf"no usable image in {re.escape(str(data))}: tried all {len(train)} files") as e:
        ImageDataset(train, 16, min_size=16)
    assert "tiny.png (too_small)" in str(e.value) and "x0.png (UnidentifiedImageError)" in str(e.value)
    cfg = _yaml(tmp_path, tiny_config(data, tmp_path / "run"))
    assert main(["--config", cfg]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no usable image") and "Traceback" not in err
    good = tmp_path / "good"
    good.mkdir()
    for i in range(4):
        Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(good / f"{i}.png")
    caplog.set_level(logging.WARNING)  # a validation folder without a usable image only turns validation off
    tr = Trainer(tiny_config(good, tmp_path / "run2", data__val_path=str(data), train__max_steps=1, log__val_every=1))
    tr.fit()
    assert tr.val_loader is None and "validation off: no usable image" in caplog.text
