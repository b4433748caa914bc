"""Refuse a run that cannot fit before anything is allocated: the estimate (``memory_estimate``) against the
device's free memory (RAM on the CPU).

Why: a run too large for the machine does not fail cleanly. On the CPU it grows until the operating system's
out-of-memory killer ends it (or another process); a 100000x100000 request once took down a whole machine.
Measured, not guessed: the estimate traces weight-less twins of the models, so it costs nothing.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["MemoryBudgetError", "check_run_fits", "free_bytes", "latent_bytes"]

log = logging.getLogger(__name__)

HEADROOM = 0.9  # of the free memory a run may plan to use


class MemoryBudgetError(ValueError):
    """A run needs more memory than the device has free."""


def free_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (CUDA: the driver's free memory plus what torch's cache holds; CPU:
    available RAM), or None when it cannot be known (then nothing is refused)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def latent_bytes(vqgan: torch.nn.Module, config) -> int:  # noqa: ANN001
    """The run's own tensors besides one step's activations: the latent (or logits), its gradient and Adam's two
    moments, and the decoded image batch kept for the result."""
    f = vqgan.downsample_factor
    cells = config.batch_size * max(config.height // f, 1) * max(config.width // f, 1)
    per_cell = vqgan.codebook.shape[0] if config.method == "codebook_sampling" else vqgan.codebook.shape[1]
    return 4 * 4 * cells * per_cell + 4 * 3 * config.batch_size * config.width * config.height


def check_run_fits(vqgan: torch.nn.Module, clip, config, device: torch.device, views: int = 1) -> int:  # noqa: ANN001
    """Bytes the run needs besides the weights; a :class:`MemoryBudgetError` saying what to change when they are
    more than the device has free. On CUDA, a run that fits only with the decoder recomputed in backward passes
    unless ``checkpoint_decoder`` is False (the loop switches to it by itself)."""
    from .memory_estimate import run_memory_bytes

    free = free_bytes(device)
    cfg = config
    if device.type == "cuda" and cfg.checkpoint_decoder is None:
        cfg = config.replace(checkpoint_decoder=True)
    need = run_memory_bytes(vqgan, clip, cfg, device, views) + latent_bytes(vqgan, config)
    if free is not None and need > HEADROOM * free:
        where = "RAM" if device.type == "cpu" else f"{device} memory"
        raise MemoryBudgetError(
            f"a {config.width}x{config.height} run (batch {config.batch_size}, {config.cutn} cutouts) needs about "
            f"{need / 2**30:.1f} GiB of {where} besides the models; {free / 2**30:.1f} GiB are free. Use a smaller "
            "size, fewer cutouts or a smaller batch"
            + (" (or --precision bf16 / --checkpoint-decoder on a GPU)" if device.type == "cuda" else ""))
    log.debug("the run needs about %.2f GiB besides the models (%s free)", need / 2**30,
              "?" if free is None else f"{free / 2**30:.1f} GiB")
    return need
