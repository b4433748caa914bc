"""The V3 extension object ComfyUI asks for: registers model folders and lists the nodes."""

from __future__ import annotations

import importlib.util
import logging
import os

from comfy_api.latest import ComfyExtension, io


def _check_requirements() -> None:
    """Fail the import (ComfyUI then shows IMPORT FAILED with this message) when a dependency is missing."""
    missing = [pkg for mod, pkg in (("open_clip", "open_clip_torch"), ("safetensors", "safetensors"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        req = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")
        raise ImportError(f"VQGAN+CLIP nodes need {', '.join(missing)}: run `python -m pip install -r {req}` "
                          "with the Python that runs ComfyUI, then restart ComfyUI.")


_check_requirements()

from . import (  # noqa: E402
    animate,
    codebook,
    comfy_adapters,
    feed_forward,
    latent,
    latent_files,
    loaders,
    losses,
    optimize,
    prompts,
    score,
    steps,
)

log = logging.getLogger(__name__)

NODES: list[type[io.ComfyNode]] = [
    loaders.LoadVQGAN,
    loaders.SeamlessVQGAN,
    loaders.LoadCLIPGuide,
    loaders.CombineCLIPGuides,
    latent.VQGANEncode,
    latent.VQGANDecode,
    latent.RandomVQLatent,
    latent.ResizeVQLatent,
    latent.InterpolateVQLatents,
    feed_forward.LoadFeedForward,
    feed_forward.FeedForwardLatent,
    latent_files.SaveVQLatent,
    latent_files.LoadVQLatent,
    codebook.CodebookLookup,
    codebook.CodesToLatent,
    codebook.CodebookEdit,
    prompts.CLIPTextPrompt,
    prompts.CLIPImagePrompt,
    prompts.CLIPNoisePrompt,
    prompts.CombineTargets,
    prompts.RegionTargets,
    losses.StoryPace,
    losses.CLIPLoss,
    losses.TVLoss,
    losses.ImageLoss,
    losses.InitImageLoss,
    losses.CombineLosses,
    steps.Optimizer,
    steps.OptimizeSteps,
    steps.StartNewRun,
    score.CLIPScore,
    optimize.VQGANCLIPOptimize,
    optimize.VQGANCLIPGenerate,
    animate.VQGANCLIPZoomAnimation,
    animate.VQGANCLIPRestyleFrames,
]


class VQGANCLIPExtension(ComfyExtension):
    """Registers ``models/vqgan``, ``models/clip_guide`` and ``models/vqgan_feed_forward`` and returns the node
    classes."""

    async def on_load(self) -> None:
        """Set-up hook of newer ComfyUIs (0.3.64 does not call it; comfy_entrypoint does the same)."""
        setup()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """All node classes of the pack."""
        return list(NODES)


def setup() -> None:
    """Register model folders (keeping extra_model_paths.yaml entries) and install the example images.

    Runs before ``get_node_list`` because ComfyUI builds every schema (and so the model combos) right
    after asking for the list. Idempotent.
    """
    comfy_adapters.register_model_folders()
    comfy_adapters.install_example_inputs()


async def comfy_entrypoint() -> VQGANCLIPExtension:
    """Called by ComfyUI when it loads the pack."""
    setup()
    return VQGANCLIPExtension()
