"""Out-of-memory recovery of the generation loop, and its private decoder copy.

Why a separate piece: running out of GPU memory is the users' most common complaint. Instead of failing,
a step that runs out is retried: first after the host (ComfyUI) unloads its models, then, with
``checkpoint_decoder=None``, with the decoder's activations recomputed in backward (exact, so the image
is the one a run with enough memory gives). The retry starts from the step's random-generator state; after
a failed CUDA-graph capture the generator is replaced, since a capture that fails midway can leave it in
capture mode.

:class:`MemoryRecovery` is mixed into ``GenerationLoop`` and uses its attributes: ``config``, ``cb``,
``vqgan``, ``device``, ``precision``, ``opt``, ``gen``, ``z``, ``step_index``, ``_dec``,
``_channels_last``, ``_convert_vqgan``, ``_graphed``, ``_forward``, ``_loss``, ``_graph_body`` and
``_loss_and_grad``.
"""

from __future__ import annotations

import copy
import gc
import logging

import torch

from ..vqgan.recompute import recompute_blocks
from .cuda_graph import GraphedLossBackward

__all__ = ["MemoryRecovery", "private_decoder"]

log = logging.getLogger(__name__)


def private_decoder(vqgan: torch.nn.Module, dtype: torch.dtype | None, channels_last: bool) -> torch.nn.Module:
    """A frozen copy of ``post_quant_conv`` + decoder in ``dtype`` (None: as it is) and memory format.

    GroupNorm affine parameters stay fp32 (a few KB): the statistics are fp32 anyway, and casting the
    parameters in every layer of every step would be two more kernel launches per layer.
    """
    dec = torch.nn.Sequential(vqgan.post_quant_conv, vqgan.decoder)
    dec = copy.deepcopy(dec).to(dtype=dtype).eval().requires_grad_(False)
    for m in dec.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.float()
    if channels_last:
        dec.to(memory_format=torch.channels_last)
    return dec


class MemoryRecovery:
    """The loop's private decoder copy and its answer to running out of memory (see the module doc)."""

    _recomputing: bool = False
    _host_freed: bool = False

    @property
    def _low_dtype(self) -> torch.dtype | None:
        """The run's low-precision dtype (None for fp32 / classic)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def _make_private_decoder(self) -> None:
        """The run's frozen decoder copy (:func:`private_decoder`)."""
        self._dec = private_decoder(self.vqgan, self._low_dtype, self._channels_last)

    def _recompute_decoder(self) -> None:
        log.info("decoder checkpointing: %d blocks recomputed in backward", recompute_blocks(self._dec))
        self._recomputing = True

    def _make_room(self, rng_state: torch.Tensor) -> None:
        """After a step ran out of memory: first the host frees what it holds (``callbacks.free_memory``, once),
        then, with ``checkpoint_decoder=None``, the decoder recomputes its activations from now on. The
        step is then retried from ``rng_state``."""
        self.opt.zero_grad(set_to_none=True)
        had_graph, self._graphed = self._graphed is not None, None  # frees the failed capture's memory pool
        if self.cb.free_memory is not None and not self._host_freed:
            log.warning("out of GPU memory at step %d: asking the host to unload its models, then retrying",
                        self.step_index)
            self._host_freed = True
            self.cb.free_memory()
        else:
            log.warning("out of GPU memory at step %d: recomputing the decoder's activations in backward from now "
                        "on (same image, about one more decoder pass per step; checkpoint_decoder=True starts "
                        "that way, False fails instead)", self.step_index)
            if self._dec is None:  # fp32 on the caller's model: recompute a private copy, never the shared model
                self._make_private_decoder()
                self._convert_vqgan = False
            self._recompute_decoder()
            if self.config.compile == "full":  # retrace with the wrapped blocks
                self._forward = torch.compile(self._loss)
        gc.collect()  # the failed step's tensors may sit in reference cycles (exception <-> traceback frames)
        if had_graph:  # the capture may have failed midway: its generator is not to be trusted
            self._fresh_generator(rng_state)
            self._graphed = GraphedLossBackward(self._graph_body, self.z, [self.gen])
        else:
            self.gen.set_state(rng_state)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _fresh_generator(self, state: torch.Tensor) -> None:
        """Replace the run generator (perhaps left in capture mode) by a new one in ``state``."""
        self.gen = torch.Generator(self.device)
        self.gen.set_state(state)

    def _can_make_room(self) -> bool:
        return (self.cb.free_memory is not None and not self._host_freed) or (
            self.config.checkpoint_decoder is None and not self._recomputing)

    def _loss_and_grad_fitting(self, key: object) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_loss_and_grad`, retried after :meth:`_make_room` when it runs out of memory, from the same
        random state (so the image is the one a run that had the room from the start gives)."""
        while True:
            # the state is only needed to retry, or to replace a generator a failed capture left behind
            state = self.gen.get_state() if self._graphed is not None or self._can_make_room() else None
            try:
                return self._loss_and_grad(key, state)
            except torch.OutOfMemoryError:
                if state is None or not self._can_make_room():
                    raise
            # retry outside the handler: its traceback holds the failed step's activations
            self._make_room(state)
