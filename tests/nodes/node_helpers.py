"""What the node tests share: the stub-ComfyUI harness, ``run`` (execute a node like ComfyUI) and small inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("comfy_stub_harness", REPO / "tests" / "comfy_stubs" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def run(node_cls, **kw):
    """Execute like ComfyUI: under torch.inference_mode(), returning the output tuple."""
    with torch.inference_mode():
        out = node_cls.execute(**kw)
    return out.args


def image(b=1, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, 3, generator=g)


OPT = {"steps": 3, "optimizer": "adam", "lr": 0.1, "cutouts": 2, "cutout_method": "latest", "augmentations": "Af,Ji",
       "seed": 0, "init_weight": 0.0, "tv_weight": 0.0, "continue_run": True, "preview_every": 2}


def _start(pack, vqgan, batch=1, seed=0):
    (lat,) = run(pack.latent.RandomVQLatent, vqgan=vqgan, width=16, height=16, seed=seed, init="random",
                 batch_size=batch)
    return lat
