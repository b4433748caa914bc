"""Adam's three CPU kernels on the parameter shapes of a VQGAN-sized model: why the trainer uses ``fused``.

Taming's ``torch.optim.Adam`` runs the for-loop kernel on a CPU (foreach is the CUDA default); on a small batch
its step was a fifth of the training step (``bench/bench_train.py --resolution 64 --batch 2``, profiled).

    python bench/bench_adam.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    """Print CPU seconds per ``step()`` for the for-loop, foreach and fused kernels."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    shapes = [(512, 512, 3, 3)] * 20 + [(256, 256, 3, 3)] * 20 + [(128, 128, 3, 3)] * 20 + [(512,)] * 100
    for name, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        ps = [torch.randn(s, requires_grad=True) for s in shapes]
        for q in ps:
            q.grad = torch.randn_like(q)
        opt = torch.optim.Adam(ps, lr=1e-4, betas=(0.5, 0.9), **kw)
        opt.step()  # state allocation outside the timing
        t = time.process_time()
        for _ in range(a.steps):
            opt.step()
        n = sum(q.numel() for q in ps) / 1e6
        print(f"{name}: {(time.process_time() - t) / a.steps:.3f} CPU s per step ({n:.0f} M parameters, "  # noqa: T201
              f"{a.threads} threads)")


if __name__ == "__main__":
    main()
