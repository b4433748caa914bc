"""Device-independent cost census of one generation step: aten ops (≈ GPU kernels) and bytes written.

Why: under a CUDA graph, a step costs about (kernels × a few µs) + (bytes moved / bandwidth) + FLOPs; the first
two can be counted on any machine, so speed work on the step can be checked without a GPU. Counts one step
(forward + backward + optimiser) of the bench's configuration after a warm-up step, by op and by module.

    python bench/op_census.py --size 256 --cutn 32 --precision bf16 --channels-last   # the CUDA settings
    python bench/op_census.py --size 256 --cutn 32 --top 40 --json-out census.json
    python bench/op_census.py --size 256 --cuda-paths        # take the code paths a CUDA run takes
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# ops that move no data (views, metadata) and launch no kernel
_FREE = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze", "select",
         "slice", "as_strided", "alias", "detach", "split", "unbind", "chunk", "narrow", "lift_fresh", "_reshape_alias",
         "diagonal", "unfold", "split_with_sizes", "view_as_real", "view_as_complex", "_to_copy_noop", "empty",
         "empty_like", "empty_strided", "is_same_size", "_has_compatible_shallow_copy_type", "set_", "resize_",
         "result_type", "size", "stride", "sym_size", "sym_stride", "sym_numel", "dim", "_local_scalar_dense"}


def census(step, n: int = 1) -> dict:
    """Run ``step`` ``n`` times under a dispatch mode; return op counts and bytes written, by op."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    ops: Counter = Counter()
    written: Counter = Counter()
    layout: Counter = Counter()  # 4-d copies that change strides (memory-format conversions, permuted views)

    class Census(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name in _FREE:
                return out
            ops[name] += 1
            written[name] += sum(t.numel() * t.element_size() for t in tree_flatten(out)[0]
                                 if isinstance(t, torch.Tensor))
            if name in ("copy_", "clone", "contiguous", "_to_copy") and args and isinstance(args[0], torch.Tensor):
                a = args[0]
                src = a if name != "copy_" else args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else a
                dst = out if isinstance(out, torch.Tensor) else a
                if src.dim() == 4 and dst.dim() == 4 and src.stride() != dst.stride() and src.numel() > 1:
                    layout[name] += 1
            return out

    from torch.utils.flop_counter import FlopCounterMode

    flops = FlopCounterMode(display=False)
    with flops, Census():
        for _ in range(n):
            step()
    return {"ops": sum(ops.values()) / n, "bytes_written": sum(written.values()) / n,
            "layout_copies": sum(layout.values()) / n, "flops": flops.get_total_flops() / n,
            "by_op": {k: {"calls": v / n, "mib_written": written[k] / n / 2**20} for k, v in ops.most_common()}}


def use_cuda_paths() -> None:
    """Make a CPU run take the branches a CUDA run takes (GroupNorm split, explicit wide attention, SDPA in
    CLIP), so the census counts the CUDA step's ops."""
    from vqgan_core.clip import speed as clip_speed
    from vqgan_core.vqgan import layers

    layers.FAST_PATH_DEVICES.add("cpu")
    clip_speed.EXPLICIT_DEVICES.clear()  # SDPA in CLIP's attention, as on CUDA


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--augments", default=None, help="augmentation codes (default: the classic Af Pe Ji Er)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s for the bound (H100 SXM)")
    p.add_argument("--tbps", type=float, default=3.35, help="memory bandwidth TB/s for the bound (H100 SXM; H200 4.8)")
    p.add_argument("--cuda-paths", action="store_true", help="take the branches a CUDA run takes (see use_cuda_paths)")
    p.add_argument("--json-out")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from vqgan_core import VQGAN, VQGANConfig
    from vqgan_core.clip.guide import load_clip
    from vqgan_core.engine.config import GenerationConfig
    from vqgan_core.engine.loop import GenerationLoop

    if args.cuda_paths:
        use_cuda_paths()
    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig()).eval().requires_grad_(False)  # the f16-16384 architecture, random weights
    guide = load_clip("ViT-B-32", "none")
    guide.model.requires_grad_(False)
    extra = {"augments": args.augments} if args.augments is not None else {}
    cfg = GenerationConfig(prompts="a lighthouse", width=args.size, height=args.size, steps=100, seed=0,
                           cutn=args.cutn, precision=args.precision, channels_last=args.channels_last, **extra)
    loop = GenerationLoop(vqgan, guide, cfg)
    loop.step()  # warm-up: prompt encoding, optimiser state
    r = census(loop.step)
    print(f"{args.size}² cutn {args.cutn} {args.precision} channels_last={args.channels_last}"
          f"{' (CUDA code paths)' if args.cuda_paths else ''}: "
          f"{r['ops']:.0f} ops/step, {r['bytes_written'] / 2**30:.2f} GiB written, "
          f"{r['layout_copies']:.0f} stride-changing 4-d copies, {r['flops'] / 1e12:.2f} TFLOP")
    # a lower bound: every FLOP at peak, every written byte written once and read once, nothing overlapping
    t_flop, t_mem = r["flops"] / (args.tflops * 1e12), 2 * r["bytes_written"] / (args.tbps * 1e12)
    print(f"roofline bound at {args.tflops:g} TFLOP/s, {args.tbps:g} TB/s: {1e3 * t_flop:.2f} ms compute + "
          f"{1e3 * t_mem:.2f} ms memory = {1 / (t_flop + t_mem):.0f} it/s at most")
    print(f"{'op':32s} {'calls':>7s} {'MiB written':>12s}")
    for k, v in sorted(r["by_op"].items(), key=lambda kv: -kv[1]["calls"])[: args.top]:
        print(f"{k:32s} {v['calls']:7.0f} {v['mib_written']:12.1f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
