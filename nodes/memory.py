"""The pack's models in ComfyUI's memory manager (``comfy.model_management``).

Why: ComfyUI moves models between the GPU and the CPU itself. A model it does not know stays in VRAM for
good, and the next workflow's checkpoint runs out of memory. So every loaded VQGAN and CLIP model gets a
``ModelPatcher`` (:func:`manage`); a node calls :func:`use` before it computes, which lets ComfyUI make
room (unloading other models) and moves ours to the GPU; when ComfyUI later needs the memory, it moves ours
back to the CPU. Without ``comfy.model_patcher`` (the CI stubs) models stay where they were loaded.

ComfyUI runs nodes under ``torch.inference_mode``: weights it moved there become inference tensors, which
autograd refuses. :func:`use` loads outside inference mode and turns any such weights back into normal ones.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

ATTR = "_comfy_patcher_ref"


class _PatcherRef:
    """The attribute that ties a model to its patcher. Copies of the model (a seamless twin shares the
    weights) keep the same patcher, so loading either moves the shared weights once."""

    __slots__ = ("patcher",)

    def __init__(self, patcher: Any) -> None:
        self.patcher = patcher

    def __copy__(self) -> _PatcherRef:
        return self

    def __deepcopy__(self, memo: dict) -> _PatcherRef:
        return self


def offload_device() -> torch.device:
    """Where ComfyUI keeps models it is not using (the CPU, or the GPU with ``--gpu-only``)."""
    import comfy.model_management as mm

    return mm.unet_offload_device() if hasattr(mm, "unet_offload_device") else mm.get_torch_device()


def manage(module: torch.nn.Module, on_detach: Callable[[], None] | None = None) -> torch.nn.Module:
    """Register ``module`` with ComfyUI (a ``ModelPatcher``; once per module). Returns the module.

    ``on_detach`` runs when ComfyUI moves the module off the GPU (e.g. to drop low-precision copies).
    """
    if patcher_of(module) is not None:
        return module
    try:
        import comfy.model_management as mm
        from comfy.model_patcher import ModelPatcher
    except ImportError:  # the test stubs: no memory manager
        return module
    patcher = ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=offload_device())
    if on_detach is not None:
        from comfy.patcher_extension import CallbacksMP

        patcher.add_callback(CallbacksMP.ON_DETACH, lambda *_args: on_detach())
    setattr(module, ATTR, _PatcherRef(patcher))
    return module


def patcher_of(module: Any) -> Any | None:
    """The ComfyUI ``ModelPatcher`` of a managed module, else None."""
    ref = getattr(module, ATTR, None)
    return ref.patcher if isinstance(ref, _PatcherRef) else None


def modules_of(*models: Any) -> Iterator[torch.nn.Module]:
    """The torch modules behind node values: a VQGAN, a CLIP guide, an ensemble of guides (None skipped)."""
    for m in models:
        if m is None:
            continue
        if isinstance(m, torch.nn.Module):
            yield m
        elif hasattr(m, "guides"):  # ClipEnsemble: [(guide, weight), ...]
            yield from modules_of(*(g for g, _ in m.guides))
        elif isinstance(getattr(m, "model", None), torch.nn.Module):  # ClipGuide
            yield m.model


def patchers_of(*models: Any) -> list:
    """The distinct patchers of the models (unmanaged ones are skipped)."""
    out: list = []
    for mod in modules_of(*models):
        p = patcher_of(mod)
        if p is not None and all(p is not q for q in out):
            out.append(p)
    return out


def use(*models: Any, memory_required: int = 0) -> torch.device:
    """Load the models on the compute device through ComfyUI (which frees room first); returns the device.

    ``memory_required``: bytes the computation needs besides the weights (ComfyUI unloads other models
    until that much is free). The models are loaded whole: our layers cannot run half on the CPU.
    """
    import comfy.model_management as mm

    patchers = patchers_of(*models)
    device = mm.get_torch_device()
    with torch.inference_mode(False):
        if patchers:
            mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
        for mod in modules_of(*models):
            _make_ready(mod, device)
    return device


def run_memory(vqgan: Any, clip: Any, config: Any) -> int:
    """Bytes a generation run with ``config`` needs besides the weights (0 on the CPU: ComfyUI budgets VRAM).

    Activations from ``vqgan_core.memory_estimate`` plus the run's low-precision weight copies.
    """
    import comfy.model_management as mm

    if mm.get_torch_device().type == "cpu":
        return 0
    from vqgan_core.memory_estimate import step_memory_bytes

    low = config.precision in ("auto", "bf16", "fp16")  # auto is bf16 on CUDA
    need = step_memory_bytes(vqgan, clip, config.width, config.height, config.batch_size, config.cutn,
                             low_precision=low, checkpoint_decoder=bool(config.checkpoint_decoder))
    if low:
        need += sum(p.numel() * 2 for m in modules_of(clip) for p in m.parameters())
        need += sum(p.numel() * 2 for p in vqgan.decoder.parameters())
    return need


def _make_ready(module: torch.nn.Module, device: torch.device) -> None:
    """Every weight on ``device`` and a normal tensor.

    Inference tensors: weights ComfyUI moved under inference mode. Elsewhere: an unmanaged model, or the
    buffers of a copy sharing a managed model's weights (moving a module swaps parameter data in place,
    which the copy sees, but replaces its buffers, which the copy does not).
    """
    def stale(t: torch.Tensor) -> bool:
        return t.is_inference() or t.device.type != device.type or (
            device.index is not None and t.device.index != device.index)

    if any(stale(t) for t in _tensors(module)):
        with torch.no_grad():
            module._apply(lambda t: (t.clone() if t.is_inference() else t).to(device) if stale(t) else t)
        log.debug("moved / restored the tensors of %s", type(module).__name__)


def _tensors(module: torch.nn.Module) -> Iterable[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def free_others(*models: Any) -> None:
    """Unload every model ComfyUI holds except ``models`` (after our step ran out of GPU memory)."""
    import comfy.model_management as mm

    keep = [mm.LoadedModel(p) for p in patchers_of(*models)] if hasattr(mm, "LoadedModel") else []
    if hasattr(mm, "free_memory"):
        mm.free_memory(1e30, mm.get_torch_device(), keep_loaded=keep)
    else:
        mm.unload_all_models()
    mm.soft_empty_cache()


def drop_cache_on_detach(guide: Any, attr: str) -> Callable[[], None]:
    """A callback that drops ``guide.<attr>`` (e.g. its low-precision copies); holds the guide weakly."""
    ref = weakref.ref(guide)

    def drop() -> None:
        g = ref()
        if g is not None:
            g.__dict__.pop(attr, None)

    return drop
