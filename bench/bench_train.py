"""Training-step throughput: our step vs taming's fp32 step, in one run, on the same machine.

Default: VQGAN f16-16384 at 256x256, batch 8, LPIPS-VGG (random weights, real shapes) and the PatchGAN active
from step 0, as in PERF_ANCHORS.md (taming on one H100: 38.6 img/s, 20.2 GiB peak).

- ``taming``: fp32, NCHW, the autoencoder forward recomputed for the discriminator step, D run before
  ``disc_start`` too, float batch copied from the host each step (PyTorch-Lightning 1.0 semantics).
- ``ours``: bf16 autocast on CUDA, channels_last, fused Adam, one shared forward, uint8 batch upload
  (optionally ``--compile``).

Examples::

    python bench/bench_train.py                                  # GPU: the full comparison
    python bench/bench_train.py --resolution 128 --batch 2 --steps 2 --warmup 1   # a size a 2-core CPU finishes
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import TrainConfig  # noqa: E402
from training.trainer import Trainer  # noqa: E402

ARCHS = {
    "f16_16384": {
        "resolution": 256,
        "ch": 128,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "z_channels": 256,
        "embed_dim": 256,
        "n_embed": 16384,
    },
    "f8_8192": {
        "resolution": 256,
        "ch": 128,
        "ch_mult": [1, 2, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [32],
        "z_channels": 256,
        "embed_dim": 8,
        "l2_normalize": True,
        "n_embed": 8192,
    },
}


def build(mode: str, args: argparse.Namespace, data: Path, out: Path) -> Trainer:
    """A trainer configured like taming (``taming``) or with our speed path (``ours``)."""
    ours = mode == "ours"
    d = {
        "out": str(out / mode),
        "model": ARCHS[args.arch],
        "data": {"path": str(data), "resolution": args.resolution, "num_workers": 0},
        "loss": {"perceptual_weight": 1.0, "lpips_random": True, "disc_start": 0, "disc_num_layers": 2},
        "train": {
            "batch_size": args.batch,
            "device": args.device,
            "precision": "auto" if ours else "fp32",
            "channels_last": ours,
            "shared_forward": ours,
            "compile": ours and args.compile,
        },
        "log": {"tensorboard": False, "progress": False, "val_every": 0, "ckpt_every": 0, "every": 10**9},
    }
    return Trainer(TrainConfig.from_dict(d))


def run(mode: str, args: argparse.Namespace, data: Path, out: Path) -> dict[str, float | str]:
    """Time ``args.steps`` optimiser steps after ``args.warmup`` untimed ones."""
    tr = build(mode, args, data, out)
    cuda = tr.device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    host = torch.randint(0, 256, (args.batch, 3, args.resolution, args.resolution), dtype=torch.uint8, generator=gen)
    if cuda:
        host = host.pin_memory()
        torch.cuda.reset_peak_memory_stats(tr.device)

    def batch() -> torch.Tensor:
        if mode == "ours":
            return tr.to_input(host)
        return (host.float() / 127.5 - 1).to(tr.device)  # taming: float batch from the host

    for _ in range(args.warmup):
        tr.train_step([batch()])
    if cuda:
        torch.cuda.synchronize(tr.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        logs = tr.train_step([batch()])
    float(logs["total_loss"])  # one host sync at the end, like a logging step
    if cuda:
        torch.cuda.synchronize(tr.device)
    dt = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated(tr.device)
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    res = {
        "mode": mode,
        "device": torch.cuda.get_device_name(tr.device) if cuda else "cpu",
        "img_per_s": args.batch * args.steps / dt,
        "s_per_step": dt / args.steps,
        "peak_GiB": peak / 2**30,
        "peak_kind": "cuda max_memory_allocated" if cuda else "process max RSS",
    }
    return res


def main() -> None:
    """CLI."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), default="f16_16384")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--mode", choices=["both", "ours", "taming"], default="both")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile in our mode")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "img"
        data.mkdir()
        for i in range(2):
            Image.new("RGB", (args.resolution, args.resolution), (i * 100, 50, 50)).save(data / f"{i}.png")
        if args.mode == "both":  # one process per mode: separate peak-memory figures, no allocator carry-over
            results = []
            for m in ("taming", "ours"):
                argv = [a for a in sys.argv[1:] if not a.startswith("--mode")] + ["--mode", m]
                out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=True)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        else:
            results = [run(args.mode, args, data, Path(tmp))]
    for r in results:
        print(json.dumps(r))
    if len(results) == 2:
        print(
            json.dumps(
                {
                    "speedup_ours_over_taming": results[1]["img_per_s"] / results[0]["img_per_s"],
                    "memory_ratio_ours_over_taming": results[1]["peak_GiB"] / results[0]["peak_GiB"],
                }
            )
        )


if __name__ == "__main__":
    main()
