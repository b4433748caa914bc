"""Generation speed: the classic VQGAN+CLIP loop vs ours, same models, same run (ratios are what counts).

Models: the f16-16384 VQGAN architecture and CLIP ViT-B/32, random weights (no download needed).
Modes: ``classic`` = bench/classic_loop.py (nerdyrodent/VQGAN-CLIP's loop: frozen VQGAN running taming's ops)
with open_clip's ViT-B-32 as shipped; ``classic_openai`` = the same loop with OpenAI's CLIP module tree, what
the real script runs (needs ``pip install openai-clip``, not a project requirement); ``ours`` = GenerationLoop.
Each (mode, size) runs in its own subprocess so peak memory is measured per mode (CUDA:
``max_memory_allocated``; CPU: peak RSS). Prints a table and a JSON line. On CUDA "ours" includes cuDNN's
algorithm timing (the classic script turns it off); ``--no-cudnn-benchmark`` measures ours without it.

    python bench/bench_generate.py --sizes 128 --cutn 8 --iters 6 --warmup 2      # CPU
    python bench/bench_generate.py --modes classic_openai classic ours --repeats 2 --threads 2
    python bench/bench_generate.py --device cuda --sizes 256 512 --cutn 32          # GPU
    python bench/bench_generate.py --device cuda --sizes 512 --modes ours --compile [blocks|full]
    python bench/bench_generate.py --device cuda --sizes 512 --modes ours --cuda-graph off --profile
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_mem(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def _child(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from vqgan_core import VQGAN, VQGANConfig
    from vqgan_core.clip.guide import load_clip

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True  # the classic script's defaults (TF32 for convolutions only)
    vqgan = VQGAN(VQGANConfig()).to(device).eval()  # f16-16384 architecture, random weights
    size, cutn = args.size, args.cutn
    if args.mode.startswith("classic"):
        sys.path.insert(0, str(REPO / "bench"))
        from classic_loop import ClassicLoop, make_clip
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        impl = "openai" if args.mode == "classic_openai" else "open_clip"
        plain = make_clip(impl, device)  # as clip.load / open_clip give it, no load_clip tweaks
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD))
        loop = ClassicLoop(vqgan, plain, mean, std, size, cutn, device=device,
                           taming_ops=not args.classic_project_layers)
        step = loop.step
        precision = "fp32 VQGAN + " + ("fp16" if device.type == "cuda" else "fp32") + f" CLIP ({impl})"
        precision += " vqgan_core layers" if args.classic_project_layers else ""
    else:
        from vqgan_core.engine.config import GenerationConfig
        from vqgan_core.engine.loop import GenerationLoop

        cfg = GenerationConfig(prompts="a painting of a lighthouse", width=size, height=size, steps=args.warmup + args.iters, seed=0,
                               cutn=cutn, precision=args.precision, compile=args.compile,
                               channels_last=args.channels_last, checkpoint_decoder=args.checkpoint_decoder,
                               cuda_graph={"auto": None, "on": True, "off": False}[args.cuda_graph],
                               cudnn_benchmark=args.cudnn_benchmark, method=args.method)
        guide = load_clip("ViT-B-32", "none", device=device)
        loop = GenerationLoop(vqgan, guide, cfg)
        step = loop.step
        precision = loop.precision + (f" +compile {args.compile}" if args.compile != "off" else "")
        precision += " codebook-sampling" if args.method == "codebook_sampling" else ""
        for m in (vqgan, guide.model):
            m.requires_grad_(False)  # what GenerationLoop.run() does around the loop (run_context)
        torch.backends.cudnn.benchmark = loop.cudnn_benchmark
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_first = time.perf_counter()
    for k in range(args.warmup):
        step()
        if k == 0:
            sync()
            first_step_s = time.perf_counter() - t_first  # includes torch.compile / graph warm-up
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.iters):
        loss = step()
    sync()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if getattr(loop, "graphed", False):  # the timed steps replayed a CUDA graph
        precision += " +graph"
    if getattr(loop, "_recomputing", False):
        precision += " +checkpoint"
    if args.channels_last is False:
        precision += " NCHW"
    if args.mode == "ours" and not loop.cudnn_benchmark and device.type == "cuda":
        precision += " no-cudnn-benchmark"
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                step()
            sync()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=30), file=sys.stderr)
    return {"mode": args.mode, "size": size, "cutn": cutn, "precision": precision, "it_s": args.iters / dt,
            "cpu_s_per_it": cpu / args.iters, "first_step_s": first_step_s if args.warmup else None,
            "peak_gib": _peak_mem(device), "loss": float(loss), "device": str(device), "threads": torch.get_num_threads()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[128])
    p.add_argument("--cutn", type=int, default=8)
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["classic", "ours"], choices=["classic", "classic_openai", "ours"])
    p.add_argument("--classic-project-layers", action="store_true",
                   help="classic: decode with vqgan_core's fused layers instead of taming's ops (measures the gap)")
    p.add_argument("--precision", default="auto", help="ours: auto|fp32|bf16|fp16|classic")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                   help="ours: memory format (default: channels_last on CUDA)")
    p.add_argument("--checkpoint-decoder", action="store_true", help="ours: recompute decoder activations")
    p.add_argument("--method", default="z_quantize", choices=["z_quantize", "codebook_sampling"],
                   help="ours: what is optimised (codebook_sampling: logits over the 16384 codes of every cell)")
    p.add_argument("--cudnn-benchmark", dest="cudnn_benchmark", action=argparse.BooleanOptionalAction, default=None,
                   help="ours: cuDNN algorithm timing (default: on for CUDA)")
    p.add_argument("--compile", nargs="?", const="blocks", default="off", choices=["off", "blocks", "full"],
                   help="ours: torch.compile each block ('blocks', the default when given) or the whole step ('full')")
    p.add_argument("--cuda-graph", dest="cuda_graph", choices=["auto", "on", "off"], default="auto",
                   help="ours: replay forward+backward as a CUDA graph (auto: on for CUDA)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of 3 steps per run")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="alternate the modes this many times (noisy machines)")
    p.add_argument("--json-out", help="also write the results here")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        print("RESULT " + json.dumps(_child(args)))
        return 0
    rows = []
    for size in args.sizes:
        for _ in range(args.repeats):
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--_child", "--mode", mode, "--size", str(size), "--device", args.device,
                       "--cutn", str(args.cutn), "--iters", str(args.iters), "--warmup", str(args.warmup),
                       "--precision", args.precision, "--threads", str(args.threads)]
                cmd += ["--compile", args.compile]
                cmd += ["--cuda-graph", args.cuda_graph] + (["--profile"] if args.profile else [])
                cmd += {True: ["--channels-last"], False: ["--no-channels-last"], None: []}[args.channels_last]
                cmd += ["--checkpoint-decoder"] if args.checkpoint_decoder else []
                cmd += ["--method", args.method]
                cmd += ["--classic-project-layers"] if args.classic_project_layers else []
                cmd += {True: ["--cudnn-benchmark"], False: ["--no-cudnn-benchmark"], None: []}[args.cudnn_benchmark]
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
                line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
                if args.profile:
                    print(out.stderr[-12000:], file=sys.stderr)
                if out.returncode or not line:
                    print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
                    raise SystemExit(f"{mode} at {size} failed (exit {out.returncode})")
                rows.append(json.loads(line[0][7:]))
                r = rows[-1]
                print(f"  {mode:8s} {size:4d}^2 cutn {r['cutn']:3d}: {r['it_s']:7.3f} it/s  peak {r['peak_gib']:.2f} GiB",
                      file=sys.stderr)
    print("\n| mode | size | cutn | numerics | it/s (wall) | CPU s/it | first step s | peak GiB | device |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        first = "-" if r.get("first_step_s") is None else f"{r['first_step_s']:.1f}"
        print(f"| {r['mode']} | {r['size']}² | {r['cutn']} | {r['precision']} | {r['it_s']:.3f} | {r['cpu_s_per_it']:.2f} | "
              f"{first} | {r['peak_gib']:.2f} | {r['device']} ({r['threads']} threads) |")
    summary = {}
    for size in args.sizes:
        by = {m: [r["it_s"] for r in rows if r["size"] == size and r["mode"] == m] for m in args.modes}
        cpu = {m: min(r["cpu_s_per_it"] for r in rows if r["size"] == size and r["mode"] == m) for m in by if by[m]}
        for classic in ("classic", "classic_openai"):
            if not (by.get(classic) and by.get("ours")):
                continue
            key = str(size) if classic == "classic" else f"{size}_openai"
            summary[key] = {"classic_it_s": max(by[classic]), "ours_it_s": max(by["ours"]),
                            "speedup": max(by["ours"]) / max(by[classic]),
                            "classic_cpu_s_per_it": cpu[classic], "ours_cpu_s_per_it": cpu["ours"],
                            "speedup_cpu_time": cpu[classic] / cpu["ours"]}
            print(f"\n{size}²: speed-up ours/{classic} = {summary[key]['speedup']:.2f}x wall (best of each), "
                  f"{summary[key]['speedup_cpu_time']:.2f}x in CPU time per step (robust on a shared machine)")
    result = {"rows": rows, "summary": summary}
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
