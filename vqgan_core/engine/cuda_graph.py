"""Replay the loss forward + backward of a generation step as one CUDA graph.

Why: a VQGAN+CLIP step launches thousands of small kernels (decoder, CLIP, augmentations, their
backward); on a fast GPU the host cannot issue them as fast as the GPU runs them, so the classic loop is
bound by per-step overhead, not arithmetic. Captured once, the whole forward + backward is one launch.

What stays eager: the optimiser step, the learning-rate schedule and the latent clamp (cheap, and any
optimiser works). The latent ``z`` and its gradient are static tensors: the optimiser updates ``z`` in
place and reads the gradient the graph writes. The random augmentation stream is registered with the
graph, so every replay draws fresh numbers from the run's ``torch.Generator`` (same seed, same run).
Values that change between steps go through static device tensors (``scalar``); a change of
prompt targets (story mode) recaptures (one graph is kept: graphs sharing a memory pool must replay in
capture order, which story mode would break).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import torch

__all__ = ["GraphedLossBackward"]

log = logging.getLogger(__name__)


class GraphedLossBackward:
    """``loss, img = fn(*args)`` then ``loss.backward()``, captured per ``key`` and replayed.

    Args:
        fn: computes ``(loss, image)`` from ``args``; those must be static tensors for a given ``key``
            (a replay reads the memory captured, not the arguments passed).
        z: the optimised leaf tensor (its ``.grad`` becomes a static tensor written by the graph).
        generators: custom generators drawn from inside ``fn``.
        warmup: eager steps on a side stream before the first capture (lazy library initialisation).
    """

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], z: torch.Tensor,
                 generators: list[torch.Generator], warmup: int = 2) -> None:
        if z.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA tensor, the latent is on {z.device}")
        self.fn, self.z, self.generators, self.warmup = fn, z, generators, warmup
        self._key: Hashable = None
        self._graph: tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.captures = 0
        self._scalars: dict[str, torch.Tensor] = {}
        self._eager_done = 0

    def scalar(self, name: str, value: float) -> torch.Tensor:
        """A static 0-d device tensor holding ``value`` (updated without a host sync)."""
        t = self._scalars.get(name)
        if t is None:
            t = self._scalars[name] = torch.tensor(float(value), device=self.z.device)
        else:
            t.fill_(float(value))
        return t

    def __call__(self, key: Hashable, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Run forward + backward of ``fn(*args)``; ``z.grad`` holds the gradient afterwards."""
        if self._eager_done < self.warmup:
            self._eager_done += 1
            return self._eager_on_side_stream(args)
        if self._graph is None or key != self._key:
            self._capture(key, args)
        graph, loss, img, grad = self._graph
        graph.replay()
        self.z.grad = grad
        return loss.clone(), img

    def _eager_on_side_stream(self, args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        side = torch.cuda.Stream(self.z.device)
        side.wait_stream(torch.cuda.current_stream(self.z.device))
        with torch.cuda.stream(side):
            self.z.grad = None
            loss, img = self.fn(*args)
            loss.backward()
        torch.cuda.current_stream(self.z.device).wait_stream(side)
        return loss.detach(), img.detach()

    def _capture(self, key: Hashable, args: tuple) -> None:
        self._graph = None  # free the previous graph's memory before capturing the next
        graph = torch.cuda.CUDAGraph()
        for g in self.generators:
            graph.register_generator_state(g)
        self.z.grad = None  # the captured backward allocates the gradient: a static tensor
        capture = torch.cuda.Stream(self.z.device)
        # Our own stream context around torch's: when ending a failed capture raises, torch.cuda.graph does
        # not switch the stream back, this one does (the caller then retries eagerly or captures again).
        with torch.cuda.stream(capture), torch.cuda.graph(graph, stream=capture):
            loss, img = self.fn(*args)
            loss.backward()
        self._graph, self._key = (graph, loss.detach(), img.detach(), self.z.grad), key
        self.captures += 1
        log.debug("captured a CUDA graph for targets %r (capture %d)", key, self.captures)
