"""VQGAN+CLIP core: taming-compatible VQGAN models, checkpoint IO, CLIP guidance and the optimisation loop.

Pure torch: nothing here imports ComfyUI.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .hub.checkpoint import CheckpointError, read_state_dict, safe_torch_load, save_vqgan
from .hub.loading import count_parameters, load_vqgan
from .vqgan.config import ConfigError, VQGANConfig
from .vqgan.model import VQGAN
from .vqgan.quantize import GumbelQuantizer, VectorQuantizer

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
from .animation.animate import AnimationConfig, AnimationResult, run_animation  # noqa: E402
from .clip.guide import ClipEnsemble, ClipGuide, ClipLoadError, load_clip, load_clip_ensemble  # noqa: E402
from .engine.config import GenerationConfig  # noqa: E402
from .engine.loop import GenerationCallbacks, GenerationLoop, GenerationResult, run_generation  # noqa: E402
from .objective.prompts import PromptSyntaxError  # noqa: E402

__all__ += [
    "AnimationConfig",
    "AnimationResult",
    "ClipEnsemble",
    "ClipGuide",
    "ClipLoadError",
    "GenerationCallbacks",
    "GenerationConfig",
    "GenerationLoop",
    "GenerationResult",
    "PromptSyntaxError",
    "load_clip",
    "load_clip_ensemble",
    "run_animation",
    "run_generation",
]
