"""Run-time settings of a generation run: which precision, and the frozen / deterministic torch state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["default_device", "resolve_precision", "run_context"]


def default_device() -> torch.device:
    """CUDA when available, else Apple's MPS (Apple-silicon Macs), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA and on CPUs with native bf16, else ``fp32``."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        with contextlib.suppress(Exception):
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return "bf16"
    return "fp32"


@contextlib.contextmanager
def run_context(modules: list[torch.nn.Module], deterministic: bool, cudnn_benchmark: bool = False) -> Iterator[None]:
    """Freeze weights and (optionally) force deterministic kernels or let cuDNN time its convolution algorithms
    (every step has the same shapes, so the first step's timing pays for itself), restoring everything after."""
    saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    # a host may change this process-wide (ComfyUI turns it on at import); despite its name it also changes
    # bf16 attention on the CPU, so a run would differ from the same run elsewhere: off for the run, restored after
    sdp_reduction = torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    training = [(m, m.training) for m in modules]
    det = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        for m in modules:
            m.eval().requires_grad_(False)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        else:
            torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(False)
        with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes under inference_mode
            yield
    finally:
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(sdp_reduction)
        for p, rg in saved:
            p.requires_grad_(rg)
        for m, t in training:
            m.train(t)
        torch.use_deterministic_algorithms(det[0], warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = det[1], det[2]
