"""How much memory a generation run needs besides the weights, measured without computing anything.

Why: a host that shares the GPU (ComfyUI) can only make room for a run if it knows how much the run needs;
asking for too little ends in an out-of-memory retry, too much unloads models for nothing. A step's memory
is what autograd keeps for the backward pass: the decoder's activations at the image size and every CLIP
model's on the cutouts of every view (the whole image, each region). Running weight-less ``meta`` twins of
the models once (shapes only: no arithmetic, no allocation, wherever the real weights are) and summing the
distinct tensors autograd saves, weights excluded, gives that number for any architecture.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable

import torch

from ..clip.guide import ClipEnsemble
from .runtime import resolve_precision

__all__ = ["run_memory_bytes", "step_memory_bytes"]

_OVERHEAD = 1.25  # the cutout batch, gradients in flight and the allocator's rounding
# per VQGAN: (guides, sizes, dtypes...) -> bytes. A host asks before every run (ComfyUI), and tracing the
# twins takes about half a second on a CPU; the answer only changes with the models and the sizes.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DTYPES = {"fp32": (torch.float32, torch.float32), "bf16": (torch.bfloat16, torch.bfloat16),
           "fp16": (torch.float16, torch.float16), "classic": (torch.float32, torch.float16)}  # (VQGAN, CLIP)


def _meta_twin(module: torch.nn.Module, dtype: torch.dtype) -> tuple[torch.nn.Module, set[int]]:
    """A structural copy of ``module`` whose parameters and buffers are ``meta`` tensors in ``dtype``
    (nothing is copied), and the storage ids of those tensors (weights are not activations)."""
    memo: dict[int, torch.Tensor] = {}
    for t in (*module.parameters(), *module.buffers()):
        meta = torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype, device="meta")
        memo[id(t)] = torch.nn.Parameter(meta, requires_grad=False) if isinstance(t, torch.nn.Parameter) else meta
    twin = copy.deepcopy(module, memo)
    return twin, {t.untyped_storage()._cdata for t in (*twin.parameters(), *twin.buffers())}


def _saved_bytes(fn: Callable[[], object], weights: set[int]) -> int:
    """Bytes of the distinct tensors (by storage) autograd saves while ``fn()`` runs, weights excluded."""
    saved: dict[int, int] = {}
    alive: list[torch.Tensor] = []  # a freed storage's id could be reused; meta tensors cost nothing to keep

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in weights:
            saved[key] = t.untyped_storage().nbytes()
            alive.append(t)
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values())


def step_memory_bytes(vqgan: torch.nn.Module, clip, width: int, height: int, batch: int = 1,  # noqa: ANN001
                      cutn: int = 32, views: int = 1, vqgan_dtype: torch.dtype = torch.float32,
                      clip_dtype: torch.dtype = torch.float32, checkpoint_decoder: bool = False) -> int:
    """Bytes one optimisation step keeps for backward.

    Args:
        vqgan: the VQGAN (any device; its weights are not touched).
        clip: a ClipGuide, a list of them or a ClipEnsemble.
        width, height: image size in pixels; batch: images per step; cutn: cutouts per image, guide and view.
        views: CLIP passes per guide and step (the whole image plus one per region).
        vqgan_dtype, clip_dtype: the run's activation dtypes.
        checkpoint_decoder: activations recomputed in backward (only block inputs are kept: about a tenth).
    """
    guides = tuple((id(g.model), g.image_size, sum(p.numel() for p in g.model.parameters()))
                   for g, _ in ClipEnsemble.of(clip).guides)
    key = (guides, width, height, batch, cutn, views, vqgan_dtype, clip_dtype, checkpoint_decoder)
    known = _CACHE.setdefault(vqgan, {})
    if key not in known:
        with torch.inference_mode(False):  # ComfyUI calls in inference mode: the twins must be normal tensors
            known[key] = _step_memory_bytes(vqgan, clip, width, height, batch, cutn, views, vqgan_dtype,
                                            clip_dtype, checkpoint_decoder)
    return known[key]


def _step_memory_bytes(vqgan: torch.nn.Module, clip, width: int, height: int, batch: int, cutn: int,  # noqa: ANN001
                       views: int, vqgan_dtype: torch.dtype, clip_dtype: torch.dtype, checkpoint_decoder: bool) -> int:
    f = vqgan.downsample_factor
    z_shape = (batch, vqgan.config.embed_dim, max(height // f, 1), max(width // f, 1))
    twin, weights = _meta_twin(vqgan, vqgan_dtype)
    z = torch.zeros(z_shape, dtype=vqgan_dtype, device="meta", requires_grad=True)
    decoder = _saved_bytes(lambda: twin.decode(z), weights)
    if checkpoint_decoder:
        decoder //= 10
    guides = 0
    for guide, _ in ClipEnsemble.of(clip).guides:
        model, weights = _meta_twin(guide.model, clip_dtype)
        s = guide.image_size
        cuts = torch.zeros(batch * cutn, 3, s, s, dtype=clip_dtype, device="meta", requires_grad=True)
        guides += views * _saved_bytes(lambda g=guide, m=model, x=cuts: g.encode_image(x, m), weights)
    return int((decoder + guides) * _OVERHEAD)


def run_memory_bytes(vqgan: torch.nn.Module, clip, config, device: torch.device, views: int = 1) -> int:  # noqa: ANN001
    """Bytes a run with ``config`` on ``device`` needs besides the model weights: one step's activations
    (:func:`step_memory_bytes`, in the run's precision) plus the low-precision weight copies the run makes."""
    precision = resolve_precision(config.precision, device)
    vqgan_dtype, clip_dtype = _DTYPES[precision]
    need = step_memory_bytes(vqgan, clip, config.width, config.height, config.batch_size, config.cutn, views,
                             vqgan_dtype, clip_dtype, checkpoint_decoder=bool(config.checkpoint_decoder))
    guides = [g.model for g, _ in ClipEnsemble.of(clip).guides]
    if clip_dtype != torch.float32:
        need += sum(p.numel() * 2 for m in guides for p in m.parameters())
    if vqgan_dtype != torch.float32:
        need += sum(p.numel() * 2 for p in vqgan.decoder.parameters())
    if config.method == "codebook_sampling":
        # fp32 logits-sized tensors: the logits, their gradient, Adam's two moments, the draw's noise, the softmax
        # and its backward's temporaries (7.3 measured on a CPU step), an edit mask's copy: 8
        f = vqgan.downsample_factor
        cells = config.batch_size * max(config.height // f, 1) * max(config.width // f, 1)
        need += 8 * 4 * cells * vqgan.codebook.shape[0]
    return need
