"""Training-step throughput: our step vs taming's fp32 step, in one run, on the same machine.

Default: VQGAN f16-16384 at 256x256, batch 8, LPIPS-VGG (random weights, real shapes) and the PatchGAN active
from step 0, as in PERF_ANCHORS.md (taming on one H100: 38.6 img/s, 20.2 GiB peak).

- ``taming``: bench/taming_step.py, taming's ``training_step`` pair in PyTorch-Lightning 1.0.8's order: fp32,
  NCHW, taming's layer operations, plain Adam; the discriminator step recomputes the autoencoder forward
  **and the LPIPS pass** (taming's loss computes it before branching on ``optimizer_idx``); D run before
  ``disc_start`` too; LPIPS dropout active; float batch copied from the host each step.
- ``ours``: bf16 autocast on CUDA, channels_last, fused Adam, one shared forward, uint8 batch upload
  (optionally ``--compile``).

Examples::

    python bench/bench_train.py                                  # GPU: the full comparison
    python bench/bench_train.py --resolution 64 --batch 2 --steps 4 --warmup 1 --threads 2 --repeats 2  # CPU

Each mode runs in its own process; ``--repeats`` alternates them (noisy machines). CPU seconds per step
(``time.process_time``) is the steadiest figure on a shared CPU; the summary uses the best of each mode.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import taming_step  # noqa: E402

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
    if args.threads:
        torch.set_num_threads(args.threads)
    tr = build(mode, args, data, out)
    cuda = tr.device.type == "cuda"
    if mode == "taming":
        taming_step.prepare(tr, taming_ops=args.ablate != "project_layers")
        train_step = lambda b: taming_step.step(tr, b, d_step_lpips=args.ablate != "no_d_lpips")  # noqa: E731
    else:
        train_step = lambda b: tr.train_step([b])  # noqa: E731
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
        train_step(batch())
    if cuda:
        torch.cuda.synchronize(tr.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        logs = train_step(batch())
    float(logs["total_loss"])  # one host sync at the end, like a logging step
    if cuda:
        torch.cuda.synchronize(tr.device)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
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
        "it_s": args.steps / dt,
        "cpu_s_per_step": cpu / args.steps,
        "threads": torch.get_num_threads(),
        "ablate": args.ablate if mode == "taming" else "none",
        "peak_GiB": peak / 2**30,
        "peak_kind": "cuda max_memory_allocated" if cuda else "process max RSS",
    }
    return res


def _child_argv(argv: list[str]) -> list[str]:
    """The command line without ``--mode``/``--repeats`` and their values (``--x v`` and ``--x=v`` forms)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--mode", "--repeats"):
            skip = True
        elif not a.startswith(("--mode=", "--repeats=")):
            out.append(a)
    return out


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
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--repeats", type=int, default=1, help="alternate the two modes this many times")
    p.add_argument("--ablate", choices=["none", "no_d_lpips", "project_layers"], default="none",
                   help="taming: drop one faithful detail, to measure its cost (bench/REPLICAS.md)")
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
            for _ in range(args.repeats):
                for m in ("taming", "ours"):
                    argv = _child_argv(sys.argv[1:]) + ["--mode", m]
                    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
                    if out.returncode:
                        print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
                        raise SystemExit(f"{m} failed (exit {out.returncode})")
                    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(json.dumps(results[-1]), flush=True)
        else:
            results = [run(args.mode, args, data, Path(tmp))]
            print(json.dumps(results[0]))
    by = {m: [r for r in results if r["mode"] == m] for m in ("taming", "ours")}
    if by["taming"] and by["ours"]:
        best = {m: max(rs, key=lambda r: r["img_per_s"]) for m, rs in by.items()}
        cpu = {m: min(r["cpu_s_per_step"] for r in rs) for m, rs in by.items()}
        print(
            json.dumps(
                {
                    "speedup_ours_over_taming": best["ours"]["img_per_s"] / best["taming"]["img_per_s"],
                    "speedup_cpu_time": cpu["taming"] / cpu["ours"],
                    "taming_cpu_s_per_step": cpu["taming"],
                    "ours_cpu_s_per_step": cpu["ours"],
                    "memory_ratio_ours_over_taming": best["ours"]["peak_GiB"] / best["taming"]["peak_GiB"],
                }
            )
        )


if __name__ == "__main__":
    main()
