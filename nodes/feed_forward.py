"""Feed-forward nodes: Load Feed-Forward Model and Feed-Forward Text to Latent.

A feed-forward network (``python -m training.feed_forward``) turns a prompt's CLIP text embedding into a VQGAN
latent in one pass: an image at once (VQGAN Decode), or a start that VQGAN+CLIP Optimize refines in far fewer steps
than random codes need. A network is trained for one VQGAN and reads one CLIP's text embeddings; the core checks
the pair (``vqgan_core.check_pair``: codebook shape and fingerprint, embedding width) and these nodes show its
message instead of decoding noise.

Like the other loaders, Load Feed-Forward Model checks the name a client sent itself (ComfyUI 0.3.64 does not check
a V3 combo value): 'demo', or a .safetensors file inside models/vqgan_feed_forward; anything else is refused with
one message that does not depend on whether such a file exists.
"""

from __future__ import annotations

import logging
import os

from comfy_api.latest import io

from ..vqgan_core import GenerationConfig
from . import comfy_adapters as ca
from . import memory
from .loaders import CATEGORY as LOADERS_CATEGORY
from .loaders import cached_model
from .settings import setting_input
from .types import (
    FEED_FORWARD_TIP,
    GUIDE_TIP,
    VQGAN_TIP,
    ClipGuide,
    ClipTargets,
    FeedForwardModel,
    Latent,
    Targets,
    VQGANModel,
    VQLatent,
)

log = logging.getLogger(__name__)

CATEGORY = "vqgan_clip/latent"


def feed_forward_choices() -> list[str]:
    """'demo', then the .safetensors files in models/vqgan_feed_forward."""
    return [ca.DEMO_NAME, *ca.list_models(ca.FEED_FORWARD_FOLDER)]


def resolve_feed_forward(name: str) -> str:
    """'demo', or the full path of a .safetensors file in models/vqgan_feed_forward; anything else (absolute paths,
    '..', links leading out, other suffixes, missing files) is a ValueError naming the folders searched."""
    if name == ca.DEMO_NAME:
        return name
    path = ca.find_model_file(ca.FEED_FORWARD_FOLDER, name) if str(name).endswith(".safetensors") else None
    if path is None:
        log.warning("Load Feed-Forward Model refused %r (not a .safetensors file in models/%s)", name,
                    ca.FEED_FORWARD_FOLDER)
        raise ValueError(
            f"Feed-forward model '{name}' was not found in models/{ca.FEED_FORWARD_FOLDER} (searched: {ca.searched_folders(ca.FEED_FORWARD_FOLDER)}). "
            f"Choose 'demo' or a .safetensors file listed in the menu (train one with `python -m "
            f"training.feed_forward` and copy its feed_forward.safetensors there); paths leading out of "
            f"models/{ca.FEED_FORWARD_FOLDER} are refused.")
    return path


class LoadFeedForward(io.ComfyNode):
    """Load a feed-forward text-to-latent network (a file from ``python -m training.feed_forward``, or the demo)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: one combo of model files."""
        return io.Schema(
            node_id="VQGAN_LoadFeedForward",
            display_name="Load Feed-Forward Model",
            category=LOADERS_CATEGORY,
            description="Loads a feed-forward text-to-latent network from models/vqgan_feed_forward (.safetensors "
            "written by `python -m training.feed_forward`). It makes a VQGAN latent from a prompt in one pass "
            "(Feed-Forward Text to Latent). 'demo' is the small one shipped for the demo VQGAN and CLIP (64x64). "
            "A model works only with the VQGAN it was trained for.",
            inputs=[io.Combo.Input("feed_forward_name", options=feed_forward_choices(), default=ca.DEMO_NAME,
                                   tooltip="File in models/vqgan_feed_forward, or 'demo' (for the demo VQGAN and "
                                   "CLIP).")],
            outputs=[FeedForwardModel.Output(display_name="feed_forward")],
        )

    @classmethod
    def validate_inputs(cls, feed_forward_name: str | None = None) -> bool | str:
        """Refuse, before the run, a name that is neither 'demo' nor a file in models/vqgan_feed_forward."""
        if feed_forward_name is None:  # linked: checked when the node runs
            return True
        try:
            resolve_feed_forward(feed_forward_name)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, feed_forward_name: str) -> io.NodeOutput:
        """Load (or reuse) the network where ComfyUI keeps idle models; the text-to-latent node moves it."""
        from ..vqgan_core import load_feed_forward

        path = resolve_feed_forward(feed_forward_name)
        device = memory.offload_device()
        mtime = os.path.getmtime(path) if os.path.exists(path) else 0.0

        def build():  # noqa: ANN202
            with ca.outside_inference_mode():
                net = load_feed_forward(path, device=str(device))
            return memory.manage(net)

        return io.NodeOutput(cached_model(("feed_forward", path, mtime, str(device)), build))


def feed_forward_prompt(text: str, targets: Targets | None) -> str:
    """The prompt the network reads, in the engine's grammar: the whole-image text targets of ``targets`` when
    connected, else ``text`` (``text:weight|...``); a story's first '^' phrase set, as the command line's start."""
    from .optimize import prompt_string
    from .prompts import parse_text_targets

    if targets is None:
        targets = parse_text_targets(text, 1.0)
    prompt = prompt_string(targets, sets=1)
    if not prompt:
        raise ValueError("The targets connected to Feed-Forward Text to Latent hold no whole-image text prompt; the "
                         "feed-forward model reads text only (image, noise and regional prompts are not used). "
                         "Connect a CLIP Text Prompt, or disconnect targets and type the prompt in text.")
    return prompt


class FeedForwardLatent(io.ComfyNode):
    """Prompt -> VQ latent in one forward pass of a feed-forward network."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: VQGAN, CLIP guide, feed-forward model, prompt, seed, batch size (targets optional)."""
        return io.Schema(
            node_id="VQGAN_FeedForwardLatent",
            display_name="Feed-Forward Text to Latent",
            category=CATEGORY,
            description="Makes a latent for the prompt in one pass of a feed-forward model (no optimisation): "
            "VQGAN Decode shows it at once, and VQGAN+CLIP Optimize refines it in fewer steps than a random start. "
            "The size is the model's (the demo: 64x64). The model must have been trained for this VQGAN; it reads "
            "the text with its own CLIP (picked from an ensemble), so connect that CLIP guide.",
            inputs=[
                VQGANModel.Input("vqgan", tooltip=VQGAN_TIP + " Must be the VQGAN the feed-forward model was "
                                 "trained for."),
                ClipGuide.Input("clip_guide", tooltip=GUIDE_TIP + " Encodes the prompt; the feed-forward model "
                                "uses the guide it was trained with (or one with the same embedding width)."),
                FeedForwardModel.Input("feed_forward", tooltip=FEED_FORWARD_TIP),
                io.String.Input("text", multiline=True, default="a red circle on a blue background",
                                tooltip="The prompt: 'text', or several as 'text:weight|text:weight' (a negative "
                                "weight steers away). Of a '^' story only the first phrase set is used. Ignored "
                                "when targets is connected."),
                setting_input(GenerationConfig, "seed", control_after_generate=True),
                setting_input(GenerationConfig, "batch_size"),
                ClipTargets.Input("targets", optional=True,
                                  tooltip="Optional: use these targets' whole-image text prompts instead of text "
                                  "(the same CLIP Text Prompt can feed a VQGAN+CLIP Optimize that refines the "
                                  "latent)."),
            ],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def validate_inputs(cls, text: str | None = "") -> bool | str:
        """Reject a malformed prompt before the run (an empty one is allowed: targets may be connected)."""
        from .prompts import prompt_problem

        return True if text is not None and not text.strip() else prompt_problem(text)

    @classmethod
    def execute(cls, vqgan, clip_guide, feed_forward, text: str, seed: int, batch_size: int,  # noqa: ANN001
                targets: Targets | None = None) -> io.NodeOutput:
        """Encode the prompt with the network's CLIP and run the network once (item b's noise from seed + b)."""
        from ..vqgan_core import ClipEnsemble, FeedForwardError, check_pair, feed_forward_latent, pick_guide

        prompt = feed_forward_prompt(text, targets)
        try:
            guide = pick_guide(feed_forward, [g for g, _ in ClipEnsemble.of(clip_guide).guides])
            check_pair(feed_forward.config, vqgan, guide.spec, guide.embed_dim())
        except FeedForwardError as e:
            raise ValueError(f"Feed-Forward Text to Latent: {e}. Connect the Load VQGAN and Load CLIP Guide the "
                             "feed-forward model was trained with (the demo model: both 'demo').") from None
        memory.use(vqgan, guide, feed_forward)
        z = feed_forward_latent(feed_forward, vqgan, guide, [prompt] * int(batch_size), seed=int(seed), check=False)
        return io.NodeOutput(Latent(z=z.to(ca.output_device()), model=vqgan))
