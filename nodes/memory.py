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

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

ATTR = "_comfy_patcher_ref"


class _PatcherRef:
    """The attribute that ties a model to its patcher. Copies of the model (a seamless twin shares the
    weights) keep the same patcher, so loading either moves the shared weights once.

    model -> ref -> patcher -> model is a reference cycle: a model nothing else uses is freed by Python's
    cycle collector (ComfyUI runs it when it cleans up models), not at once; until then ComfyUI may still
    list it as loaded and unloads it like any other model when it needs the room.
    """

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


def manage(module: torch.nn.Module) -> torch.nn.Module:
    """Register ``module`` with ComfyUI (a ``ModelPatcher``; once per module). Returns the module."""
    if patcher_of(module) is not None:
        return module
    try:
        import comfy.model_management as mm
        from comfy.model_patcher import ModelPatcher
    except ImportError:  # the test stubs: no memory manager
        return module
    patcher = ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=offload_device())
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
        for p in patchers:  # --novram loads nothing whole even when asked to: load the rest, on the books
            if hasattr(p, "partially_load") and p.loaded_size() < p.model_size():
                p.partially_load(device, extra_memory=p.model_size())
        for mod in modules_of(*models):
            _make_ready(mod, device)
    return device


MAX_PIXELS_ENV = "VQGAN_CLIP_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 2048 * 2048  # per run (width x height x batch); a server owner may raise or lower it


def max_pixels() -> int:
    """The server's cap on pixels per run: ``$VQGAN_CLIP_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(raw) if raw.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        log.warning("%s=%r is not a whole number: using %d", MAX_PIXELS_ENV, raw, DEFAULT_MAX_PIXELS)
        return DEFAULT_MAX_PIXELS


def check_run(vqgan: Any, clip: Any, config: Any, views: int = 1) -> None:
    """Server-side limits before a run allocates anything: the pixel cap, and on the CPU the RAM it needs (a run
    too large for the machine must fail with a message, not bring the out-of-memory killer)."""
    import comfy.model_management as mm

    pixels = config.width * config.height * config.batch_size
    if pixels > max_pixels():
        raise ValueError(f"{config.width}x{config.height} x batch {config.batch_size} is {pixels:,} pixels; this "
                         f"server allows at most {max_pixels():,} per run (its owner sets {MAX_PIXELS_ENV}). Use a "
                         "smaller size or batch.")
    device = mm.get_torch_device()
    if device.type == "cpu":
        from ..vqgan_core import check_run_fits

        check_run_fits(vqgan, clip, config, device, views)


@contextlib.contextmanager
def running(vqgan: Any, clip: Any, config: Any, views: int = 1) -> Iterator[None]:
    """Around an engine run: check it fits (:func:`check_run`), load the models with room for the run
    (:func:`run_memory`), and free the low-precision weight copies the run made when it ends (ComfyUI does not see
    them, so none outlive it)."""
    from ..vqgan_core import ClipEnsemble

    check_run(vqgan, clip, config, views)
    use(vqgan, clip, memory_required=run_memory(vqgan, clip, config, views))
    try:
        yield
    finally:
        for g, _ in ClipEnsemble.of(clip).guides:
            g.drop_copies()


def run_memory(vqgan: Any, clip: Any, config: Any, views: int = 1) -> int:
    """Bytes a generation run with ``config`` needs besides the weights (0 on the CPU: ComfyUI budgets VRAM);
    ``views``: CLIP passes per step and guide (the whole image plus one per region)."""
    import comfy.model_management as mm

    device = mm.get_torch_device()
    if device.type == "cpu":
        return 0
    from ..vqgan_core import run_memory_bytes

    return run_memory_bytes(vqgan, clip, config, device, views)


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


