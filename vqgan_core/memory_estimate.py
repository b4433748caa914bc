"""How much memory a generation step needs besides the weights, measured without computing anything.

Why: a host that shares the GPU (ComfyUI) can only make room for a run if it knows how much the run needs;
asking for too little ends in an out-of-memory retry, too much unloads models for nothing. The step's
memory is what autograd keeps for the backward pass: the decoder's activations at the image size and
every CLIP model's on its cutouts. Running the real models once under ``FakeTensorMode`` (shapes only,
no arithmetic, no allocation) and summing the tensors autograd saves gives that number for any
architecture, in a fraction of a second on the CPU.
"""

from __future__ import annotations

import torch

from vqgan_core.clip_guide import ClipEnsemble

__all__ = ["step_memory_bytes"]

_OVERHEAD = 1.25  # the cutout batch, gradients in flight and the allocator's rounding


def _saved_bytes(fn) -> int:  # noqa: ANN001 - a callable run under the hooks
    """Bytes of the distinct tensors autograd saves while ``fn()`` runs (under fake tensors)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    saved: dict[int, torch.Tensor] = {}  # holding the tensors keeps their ids unique (fake ones cost nothing)

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[id(t)] = t
        return t

    with torch.inference_mode(False), torch.enable_grad(), FakeTensorMode(allow_non_fake_inputs=True), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(t.numel() * t.element_size() for t in saved.values())


def step_memory_bytes(vqgan: torch.nn.Module, clip, width: int, height: int, batch: int = 1,  # noqa: ANN001
                      cutn: int = 32, low_precision: bool = False, checkpoint_decoder: bool = False) -> int:
    """Bytes one optimisation step keeps for backward (fp32 activations, halved for bf16/fp16 runs).

    Args:
        vqgan: the VQGAN (any device; nothing is computed).
        clip: a ClipGuide, a list of them or a ClipEnsemble.
        width, height: image size in pixels; batch: images per step; cutn: cutouts per image and guide.
        checkpoint_decoder: activations recomputed in backward (only the block inputs are kept: about a tenth).
    """
    f = vqgan.downsample_factor
    z_shape = (batch, vqgan.config.embed_dim, max(height // f, 1), max(width // f, 1))
    decoder = _saved_bytes(lambda: vqgan.decode(torch.zeros(z_shape, requires_grad=True)))
    if checkpoint_decoder:
        decoder //= 10
    guides = 0
    for guide, _ in ClipEnsemble.of(clip).guides:
        s = guide.image_size
        guides += _saved_bytes(lambda g=guide, s=s: g.encode_image(torch.zeros(batch * cutn, 3, s, s, requires_grad=True)))
    total = (decoder + guides) * _OVERHEAD
    return int(total / 2 if low_precision else total)
