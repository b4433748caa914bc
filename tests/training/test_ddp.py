"""Two-process DDP training on CPU (gloo) through torchrun, as a multi-GPU run would be launched."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.train_helpers import make_coco, tiny_config
from training import checkpointing as ck
from training.logger import read_metrics
from vqgan_core import load_vqgan


def test_two_process_gloo_run(tmp_path):
    data = make_coco(tmp_path / "coco", n_train=16, n_val=2)
    cfg = tiny_config(
        data,
        tmp_path / "run",
        train__max_steps=3,
        train__grad_accum=2,
        loss__disc_start=1,
        codebook__dead_code_restart=True,
        codebook__dead_code_every=2,
        log__val_every=3,
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training",
        "--config",
        str(path),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "[rank 1]" in res.stderr and "DDP rank 1/2" in res.stderr  # the second process really trained
    last = ck.find_latest(tmp_path / "run")
    assert last is not None and last.name == "step_00000003"
    state = ck.load_state(last)
    assert len(state["rng"]) == 2  # every rank's RNG is saved for an exact resume
    assert state["samples_seen"] == 3 * 4 * 2 * 2  # steps x batch x grad_accum x world
    train = [r for r in read_metrics(tmp_path / "run") if "train/total_loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]  # rank 0 alone writes logs
    load_vqgan(last / ck.WEIGHTS)
