"""VQGAN+CLIP core: taming-compatible VQGAN models, checkpoint IO, CLIP guidance and the optimisation loop.

Pure torch: nothing here imports ComfyUI.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import CheckpointError, read_state_dict, safe_torch_load, save_vqgan
from .config import ConfigError, VQGANConfig
from .loading import count_parameters, load_vqgan
from .model import VQGAN
from .quantize import GumbelQuantizer, VectorQuantizer

__all__ = [
    "VQGAN",
    "CheckpointError",
    "ConfigError",
    "GumbelQuantizer",
    "VQGANConfig",
    "VectorQuantizer",
    "__version__",
    "count_parameters",
    "load_vqgan",
    "read_state_dict",
    "safe_torch_load",
    "save_vqgan",
]

# --- generation API ---
