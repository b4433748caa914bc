"""Target nodes: CLIP Text / Image / Noise Prompt, Combine Targets, Region Targets.

Targets stay un-embedded (text and images) until an Optimize/Score node embeds them with its guide,
so one prompt node can feed several guides and ensembles.
"""

from __future__ import annotations

import dataclasses

import torch
from comfy_api.latest import io

from ..vqgan_core import PROMPT_HELP
from . import comfy_adapters as ca
from .types import TARGETS_TIP, ClipTargets, Target, Targets

CATEGORY = "vqgan_clip/prompts"
WEIGHT = {"min": -100.0, "max": 100.0, "step": 0.05, "round": 0.001}
STOP = {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.01, "round": 0.001,
        "tooltip": "Stop pulling once the CLIP distance is below this (-1 = never stop, classic -inf)."}


def parse_text_targets(text: str, weight: float) -> Targets:
    """Parse the engine's grammar ``text[:weight[:stop]]|...`` into targets (weights times ``weight``).

    ``^`` separates story phrase sets (the classic story mode): their targets carry the set's index as
    ``phase``; a prompt without ``^`` applies in every set.
    """
    from ..vqgan_core import PromptSyntaxError, parse_prompt_set

    if not text.strip():
        raise ValueError("The prompt is empty: type what the image should show, e.g. 'a red circle'.")
    parts = text.split("^")
    items = []
    for k, part in enumerate(parts):
        if not part.strip():
            raise ValueError(f"Phrase set {k + 1} of the story (between '^') is empty.")
        try:
            ps = parse_prompt_set(texts=part)
        except PromptSyntaxError as e:
            raise ValueError(f"Prompt not understood: {e}. Write 'text', 'text:weight' or 'text:weight:stop', "
                             "several separated by '|' (and '^' between story phrase sets).") from None
        phase = k if len(parts) > 1 else None
        items += [Target("text", text=p.text, weight=p.weight * weight, stop=p.stop, phase=phase,
                         phases=len(parts)) for p in ps.texts]
    return Targets(tuple(items))


def stop_value(stop: float) -> float:
    """Widget value -1 means 'never stop' (the engine's -inf)."""
    return float("-inf") if stop <= -1.0 else float(stop)


def prompt_problem(text: str | None) -> bool | str:
    """``validate_inputs`` for a prompt widget: True, or the parse error (a linked input, None, is checked later)."""
    if text is None:
        return True
    try:
        parse_text_targets(text, 1.0)
    except ValueError as e:
        return str(e)
    return True


class CLIPTextPrompt(io.ComfyNode):
    """Text -> CLIP targets (classic ``a:1|b:-0.5:0.2`` grammar)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: multiline text + global weight."""
        return io.Schema(
            node_id="VQClip_TextPrompt",
            display_name="CLIP Text Prompt",
            category=CATEGORY,
            description="Text targets. Several prompts are separated by '|', each 'text[:weight[:stop]]'; a "
            "negative weight pushes the image away. 'weight' multiplies all of them. '^' separates story phrase "
            "sets: the engine nodes switch to the next set every 'change_prompts_every' steps.",
            inputs=[
                io.String.Input("text", multiline=True, default="a red circle on a blue background",
                                tooltip=PROMPT_HELP),
                io.Float.Input("weight", default=1.0, **WEIGHT, tooltip="Multiplies every prompt's weight."),
            ],
            outputs=[ClipTargets.Output(display_name="targets")],
        )

    @classmethod
    def validate_inputs(cls, text: str = "") -> bool | str:
        """Reject malformed prompts before the run starts (only when the text is a constant)."""
        return prompt_problem(text)

    @classmethod
    def execute(cls, text: str, weight: float) -> io.NodeOutput:
        """Parse into targets."""
        return io.NodeOutput(parse_text_targets(text, weight))


class CLIPImagePrompt(io.ComfyNode):
    """Image -> CLIP target (its embedding through the same cutouts as the generated image)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: image, weight, stop."""
        return io.Schema(
            node_id="VQClip_ImagePrompt",
            display_name="CLIP Image Prompt",
            category=CATEGORY,
            description="Image target: pulls the generated image towards this image's CLIP embedding. A batch "
            "gives one target per image.",
            inputs=[
                io.Image.Input("image", tooltip="The image the result should resemble in CLIP's eyes."),
                io.Float.Input("weight", default=1.0, **WEIGHT, tooltip="Strength (negative: away from it)."),
                io.Float.Input("stop", **STOP),
            ],
            outputs=[ClipTargets.Output(display_name="targets")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, weight: float, stop: float) -> io.NodeOutput:
        """Keep the image (BCHW, [0,1]) until a guide embeds it."""
        x = ca.image_to_bchw(image).to(ca.output_device())
        items = tuple(Target("image", image=x[i:i + 1], weight=weight, stop=stop_value(stop)) for i in range(len(x)))
        return io.NodeOutput(Targets(items))


class CLIPNoisePrompt(io.ComfyNode):
    """Seed -> a random CLIP direction as a target (the classic noise prompts, ``-nps`` / ``-npw``)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: seed, weight, stop."""
        return io.Schema(
            node_id="VQClip_NoisePrompt",
            display_name="CLIP Noise Prompt",
            category=CATEGORY,
            description="A random direction in CLIP space drawn from the seed: a small weight adds variety "
            "(the classic noise prompts), a negative one pushes away from it. Applies to the whole image.",
            inputs=[
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, step=1,
                             tooltip="The same seed gives the same direction for a given CLIP model."),
                io.Float.Input("weight", default=0.3, **WEIGHT, tooltip="Strength (small: variety; negative: away from it)."),
                io.Float.Input("stop", **STOP),
            ],
            outputs=[ClipTargets.Output(display_name="targets")],
        )

    @classmethod
    def execute(cls, seed: int, weight: float, stop: float) -> io.NodeOutput:
        """One noise target (drawn when a guide embeds the targets)."""
        return io.NodeOutput(Targets((Target("noise", seed=int(seed), weight=weight, stop=stop_value(stop)),)))


class CombineTargets(io.ComfyNode):
    """Concatenate target sets (text + image, positive + negative...)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: two target sets, two more optional."""
        return io.Schema(
            node_id="VQClip_CombineTargets",
            display_name="Combine Targets",
            category=CATEGORY,
            description="All targets of the inputs together; their losses add up.",
            inputs=[ClipTargets.Input("targets_1", tooltip=TARGETS_TIP), ClipTargets.Input("targets_2", tooltip=TARGETS_TIP),
                    ClipTargets.Input("targets_3", optional=True, tooltip=TARGETS_TIP),
                    ClipTargets.Input("targets_4", optional=True, tooltip=TARGETS_TIP)],
            outputs=[ClipTargets.Output(display_name="targets")],
        )

    @classmethod
    def execute(cls, targets_1: Targets, targets_2: Targets, targets_3: Targets | None = None,
                targets_4: Targets | None = None) -> io.NodeOutput:
        """Concatenate in input order."""
        out = targets_1 + targets_2
        for t in (targets_3, targets_4):
            if t is not None:
                out = out + t
        return io.NodeOutput(out)


class RegionTargets(io.ComfyNode):
    """Make targets regional: CLIP judges them on the masked part of the image only."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: targets + mask -> regional targets."""
        return io.Schema(
            node_id="VQClip_RegionTargets",
            display_name="Region Targets",
            category=CATEGORY,
            description="The targets apply to the masked region only (mask > 0.5; it is resized to the image): "
            "CLIP sees the region's bounding box, grey outside the mask. Combine with whole-image targets "
            "for composition, e.g. 'blue sky' on the top, 'a meadow' on the bottom.",
            inputs=[ClipTargets.Input("targets", tooltip=TARGETS_TIP), io.Mask.Input("mask", tooltip="The region (> 0.5), any size: resized to the image.")],
            outputs=[ClipTargets.Output(display_name="targets")],
        )

    @classmethod
    def execute(cls, targets: Targets, mask: torch.Tensor) -> io.NodeOutput:
        """Attach the (first) mask to every target."""
        m = ca.first_mask(mask)
        if not (m > 0.5).any():
            raise ValueError("The mask is empty (no value above 0.5): paint the region the targets should apply to.")
        if any(t.kind == "noise" for t in targets.items):
            raise ValueError("Noise prompts apply to the whole image: combine them with the regional targets after "
                             "Region Targets, not before.")
        m = m.to(ca.output_device())
        return io.NodeOutput(dataclasses.replace(targets, items=tuple(dataclasses.replace(t, region=m)
                                                                      for t in targets.items)))
