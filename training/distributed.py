"""torchrun/DDP plumbing: environment detection, process group, device choice and small collectives.

Works single-process without torchrun, and on CPU with the gloo backend (how it is tested here).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Who this process is."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when available, else CPU; explicit names are checked."""
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={pref!r} but CUDA is not available; use 'cpu' or 'auto'")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the torchrun process group if ``WORLD_SIZE > 1`` (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        logger.info("DDP rank %d/%d on %s (%s)", rank, world, device, dist.get_backend())
    return DistInfo(rank, local, world, device)


def cleanup() -> None:
    """Leave the process group."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op single-process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum_(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (no-op single-process)."""
    if info.enabled:
        dist.all_reduce(t)
    return t


def broadcast_(t: torch.Tensor, info: DistInfo, src: int = 0) -> torch.Tensor:
    """In-place copy of rank ``src``'s tensor to every rank."""
    if info.enabled:
        dist.broadcast(t, src)
    return t


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is set on any rank (used to agree on stopping after a signal)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
