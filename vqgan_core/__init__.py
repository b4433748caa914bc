"""VQGAN+CLIP core: taming-compatible VQGAN models, checkpoint IO, CLIP guidance and the optimisation loop.

Pure torch: nothing here imports ComfyUI. The subpackages, lowest layer first (a module imports only from its own
subpackage or from lower ones; ``tests/core/test_architecture.py`` checks it)::

    util -> vqgan -> views -> hub -> media -> clip -> objective -> latents -> feedforward -> engine -> animation -> cli

The names below are the public API: ``nodes/`` and ``training/`` import only these (``from vqgan_core import X``),
never a module inside. They resolve lazily, so ``import vqgan_core`` costs nothing until a name is used (ComfyUI
starts faster, and ``python -m vqgan_core --help`` does not import open_clip).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module (relative to this package) that defines it, grouped by subpackage
_EXPORTS: dict[str, str] = {}


def _export(module: str, *names: str) -> None:
    for name in names:
        _EXPORTS[name] = module


_export("util.atomic", "atomic_save_file", "atomic_torch_save", "atomic_write", "atomic_write_bytes")
_export("util.registry", "Registry")
_export("util.settings", "Setting", "settings_of")
_export("vqgan.config", "ConfigError", "VQGANConfig")
_export("vqgan.model", "VQGAN")
_export("vqgan.quantize", "GumbelQuantizer", "VectorQuantizer", "nearest_code")
_export("vqgan.seamless", "is_seamless", "seamless_copy")
_export("views.augment", "augment_names", "parse_augments")
_export("views.warp", "warp")
_export("views.cutouts", "cutout_names")
_export("hub.checkpoint", "CONFIG_KEY", "CheckpointError", "find_yaml", "generator_state_dict", "read_safetensors",
        "read_state_dict", "resolve_config", "safe_torch_load", "save_vqgan")
_export("hub.loading", "check_state_dict_or_explain", "count_parameters", "load_vqgan", "vqgan_file_problem")
_export("hub.download", "ALLOWED_URLS_ENV", "OFFLINE_HINT", "DownloadError", "allowed_url_prefixes", "url_allowed",
        "verify_cached")
_export("hub.demo", "DEMO_GUIDE", "demo_preset")
_export("hub.known_models", "KNOWN_VQGANS", "MIRROR_ENV", "fetch_known", "known_file_names", "known_urls")
_export("media.image_io", "load_mask", "to_pil")
_export("clip.guide", "ClipEnsemble", "ClipGuide", "ClipLoadError", "load_clip", "load_clip_ensemble")
_export("objective.prompts", "PROMPT_HELP", "PromptSyntaxError", "parse_prompt_set")
_export("objective.image_losses", "image_loss_names", "parse_image_losses")
_export("objective.regions", "RegionPrompt")
_export("objective.score", "clip_scores")
_export("latents.code_sampling", "METHODS")
_export("latents.codebook_edit", "FILL_PATTERNS", "code_colors", "edit_region", "mask_region", "pick_codes",
        "rect_region")
_export("latents.files", "SUFFIX", "LatentFile", "check_model", "load_latent", "save_latent")
_export("latents.init", "NOISE_IMAGES", "init_latent")
_export("latents.ops", "INTERPOLATIONS", "crop_to_multiple", "interpolate_latents", "resize_latent")
_export("feedforward.config", "FeedForwardConfig")
_export("feedforward.model", "FeedForwardNet")
_export("feedforward.io", "FeedForwardError", "check_pair", "load_feed_forward", "save_feed_forward",
        "vqgan_fingerprint")
_export("feedforward.infer", "decode01", "feed_forward_latent", "pick_guide", "prompt_embedding")
_export("engine", "INIT_DECAYS", "SCHEDULERS", "ClipLoss", "ImageLoss", "InitLoss", "LatentParam", "LossTerm",
        "OptimizerSpec", "Stepper", "StepResult", "SumLoss", "TVLoss", "Views")
_export("engine.config", "SEED_MAX", "GenerationConfig")
_export("engine.run_info", "RunInfo", "StepContext", "stream_seed")
_export("engine.runtime", "resolve_precision")
_export("engine.loop", "GenerationCallbacks", "GenerationLoop", "GenerationResult", "run_generation")
_export("engine.loss_curve", "loss_table", "plot_losses")
_export("engine.memory_budget", "check_run_fits")
_export("engine.memory_estimate", "run_memory_bytes")
_export("engine.optimizers", "optimizer_names")
_export("engine.run_state", "continue_run", "run_state")
_export("animation.animate", "AnimationConfig", "AnimationResult", "run_animation")

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
