"""Time VQGAN encode/decode of the f16-16384 architecture (random weights) in several precisions.

Usage: python bench/bench_vqgan.py [--size 256] [--batch 1] [--iters 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vqgan_core import VQGAN, VQGANConfig  # noqa: E402


def _time(fn, iters: int, device: str) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default="fp32,fp32-cl,bf16-cl" , help="comma list of fp32, fp32-cl, bf16, bf16-cl, fp16-cl")
    args = ap.parse_args()
    torch.manual_seed(0)
    base = VQGAN(VQGANConfig()).eval().requires_grad_(False).to(args.device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=args.device) * 2 - 1
    rows = []
    for mode in args.modes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode.split("-")[0]]
        model = VQGAN(base.config).to(args.device)
        model.load_state_dict(base.state_dict())
        model = model.to(dtype).eval().requires_grad_(False)
        xi = x.to(dtype)
        if mode.endswith("-cl"):
            model.to_channels_last()
            xi = xi.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            z, _ = model.encode(xi)
            enc = _time(lambda m=model, xi=xi: m.encode(xi), args.iters, args.device)
            dec = _time(lambda m=model, z=z: m.decode(z), args.iters, args.device)
        rows.append({"mode": mode, "encode_ms": round(enc * 1e3, 1), "decode_ms": round(dec * 1e3, 1)})
        print(f"{mode:10s} encode {enc * 1e3:8.1f} ms   decode {dec * 1e3:8.1f} ms", flush=True)
    peak = (torch.cuda.max_memory_allocated() / 2**30) if args.device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"device": args.device, "size": args.size, "batch": args.batch, "peak_gib": round(peak, 2), "results": rows}))


if __name__ == "__main__":
    main()
