"""Loss blocks: CLIP Loss, TV Loss, Image Loss, Init Image Loss, Combine Losses, Story Pace.

Each node outputs a :class:`~nodes.types.LossRecipe` that builds ``vqgan_core.engine`` terms when a step node
runs; the maths lives there. Wire several into Combine Losses and then into VQGAN+CLIP Optimize Steps.
"""

from __future__ import annotations

import dataclasses

import torch
from comfy_api.latest import io

from ..vqgan_core import GenerationConfig
from . import comfy_adapters as ca
from .optimize import (
    check_augments,
    image_prompts,
    noise_string,
    prompt_string,
    region_prompts,
    story_sets,
)
from .settings import setting_input
from .types import ClipGuide, ClipTargets, LossRecipe, Targets, VQLoss

CATEGORY = "vqgan_clip/losses"
WEIGHT = {"min": -100.0, "max": 100.0, "step": 0.01, "round": 0.0001}


def _guides(clip) -> tuple:  # noqa: ANN001
    from ..vqgan_core import ClipEnsemble

    return tuple(g for g, _ in ClipEnsemble.of(clip).guides)


def story_error(targets: Targets) -> str | None:
    """The message when the targets tell a story ('^') but no pace is set, else None."""
    sets = story_sets(targets)
    if sets > 1 and targets.pace[0] <= 0:
        return (f"The prompt has {sets} story phrase sets ('^'): put a CLIP Story Pace node after the prompt to say "
                "how many steps each set lasts.")
    return None


def clip_terms(clip, targets: Targets, views, weight: float) -> list:  # noqa: ANN001
    """The engine's CLIP terms of ``targets``: the whole image (when it has targets) and one per region."""
    from ..vqgan_core import ClipLoss

    every, fade = targets.pace
    terms = []
    whole = Targets(tuple(t for t in targets.items if t.region is None), targets.pace)
    regions = region_prompts(targets)
    if whole.items or not regions:
        terms.append(ClipLoss(clip, prompt_string(whole), image_tensors=image_prompts(whole),
                              noise_prompts=noise_string(whole), change_every=every, fade=fade, views=views,
                              weight=weight))
    for r in regions:
        terms.append(ClipLoss(clip, r.prompts, image_tensors=r.image_prompts, change_every=every, fade=fade,
                              views=views, weight=weight, region=r.mask))
    return terms


class CLIPLoss(io.ComfyNode):
    """CLIP guide + targets + how CLIP sees the image -> a loss."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: guide and targets sockets, the view widgets."""
        return io.Schema(
            node_id="VQClip_Loss",
            display_name="CLIP Loss",
            category=CATEGORY,
            description="How far the image is from the targets in the eyes of this CLIP guide (the classic "
            "VQGAN+CLIP loss). Each CLIP Loss has its own guide, prompts and views: use two to pair prompt A with "
            "model 1 and prompt B with model 2, then Combine Losses.",
            inputs=[
                ClipGuide.Input("clip_guide", tooltip="The CLIP model (or ensemble) that judges the image."),
                ClipTargets.Input("targets", tooltip="What the image should show (CLIP Text / Image / Noise "
                                  "Prompt, Region Targets, Combine Targets)."),
                io.Float.Input("weight", default=1.0, **WEIGHT, tooltip="Multiplies this loss (negative: away "
                               "from the targets)."),
                *(setting_input(GenerationConfig, n) for n in ("cutn", "cutout_method", "cut_pow", "augments",
                                                               "aug_noise")),
            ],
            outputs=[VQLoss.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, augmentations: str | None = "Af,Pe,Ji,Er") -> bool | str:
        """The augmentation codes, before the run."""
        if augmentations is not None and (msg := check_augments(augmentations)):
            return msg
        return True

    @classmethod
    def execute(cls, clip_guide, targets: Targets, weight: float, cutouts: int, cutout_method: str,  # noqa: ANN001
                cut_pow: float, augmentations: str, aug_noise: float) -> io.NodeOutput:
        """A recipe of the CLIP term(s); views and targets are checked now, where they were given."""
        from ..vqgan_core import SumLoss, Views

        if not targets.items:
            raise ValueError("No targets: connect a CLIP Text Prompt or CLIP Image Prompt.")
        if msg := story_error(targets):
            raise ValueError(msg)
        views = Views(cutout_method, cutouts, cut_pow, augmentations, aug_noise)
        clip_terms(clip_guide, targets, views, weight)  # errors surface on this node

        def build():  # noqa: ANN202
            terms = clip_terms(clip_guide, targets, views, weight)
            return terms[0] if len(terms) == 1 else SumLoss(terms)

        n_views = 1 + len(region_prompts(targets))
        label = f"CLIP x{weight:g}: {prompt_string(targets)[:40] or 'image/noise targets'}"
        return io.NodeOutput(LossRecipe(build, label, _guides(clip_guide), n_views * len(_guides(clip_guide)),
                                        cutouts))


class TVLoss(io.ComfyNode):
    """Total variation: smoother images."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: weight."""
        return io.Schema(
            node_id="VQGAN_TVLoss", display_name="TV Loss", category=CATEGORY,
            description="Total variation: penalises differences between neighbouring pixels, so the image gets "
            "smoother and less speckled. Tiles across the edges for a seamless VQGAN.",
            inputs=[io.Float.Input("weight", default=0.1, **WEIGHT, tooltip="Strength (0.05-0.5 is typical).")],
            outputs=[VQLoss.Output(display_name="loss")],
        )

    @classmethod
    def execute(cls, weight: float) -> io.NodeOutput:
        """A recipe of one TV term."""
        from ..vqgan_core import TVLoss as Term

        Term(weight)  # a bad weight fails here
        return io.NodeOutput(LossRecipe(lambda: Term(weight), f"TV x{weight:g}"))


class ImageLoss(io.ComfyNode):
    """One named image term (symmetry, saturation, ...)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: name and weight."""
        from ..vqgan_core import image_loss_names

        return io.Schema(
            node_id="VQGAN_ImageLoss", display_name="Image Loss", category=CATEGORY,
            description="A property of the image itself, without CLIP. A positive weight asks for more of it, a "
            "negative weight for less.",
            inputs=[
                io.Combo.Input("name", options=image_loss_names(), default="symmetry",
                               tooltip="symmetry (left-right), symmetry_vertical, saturation, brightness, "
                               "contrast, smoothness, plain_border (one flat outer frame: the subject stays inside the picture)."),
                io.Float.Input("weight", default=0.5, **WEIGHT, tooltip="Positive: more of it; negative: less."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.01, round=0.01, optional=True,
                               tooltip="Fraction of the run before the term switches on: a layout prior such as "
                               "plain_border works best once the composition has settled (the demo: 0.33). Optional: workflows "
                               "saved before it existed load unchanged."),
            ],
            outputs=[VQLoss.Output(display_name="loss")],
        )

    @classmethod
    def execute(cls, name: str, weight: float, start: float = 0.0) -> io.NodeOutput:
        """A recipe of one image term."""
        from ..vqgan_core import ImageLoss as Term

        Term(name, weight, start)
        label = f"{name} x{weight:g}" + (f" from {start:.0%}" if start else "")
        return io.NodeOutput(LossRecipe(lambda: Term(name, weight, start), label))


class InitImageLoss(io.ComfyNode):
    """Pull the latent back towards an image (or the run's start), decaying over the run."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: optional image, weight, decay."""
        from ..vqgan_core import INIT_DECAYS

        return io.Schema(
            node_id="VQGAN_InitImageLoss", display_name="Init Image Loss", category=CATEGORY,
            description="Keeps the result close to a starting picture: an MSE pull of the latent towards the "
            "image's latent (encoded with the run's VQGAN) or, with no image, towards the latent the run starts "
            "from.",
            inputs=[
                io.Image.Input("image", optional=True, tooltip="The picture to stay close to (resized and cropped "
                               "to the run's size). Empty: the run's starting latent."),
                io.Float.Input("weight", default=1.0, min=0.0, max=100.0, step=0.01, round=0.0001,
                               tooltip="Strength at the first step (classic -iw)."),
                io.Combo.Input("decay", options=list(INIT_DECAYS), default="classic",
                               tooltip="classic: 1/(2i+1)/2, strong only at first; linear: 1 -> 0 over the planned "
                               "steps; none: constant."),
            ],
            outputs=[VQLoss.Output(display_name="loss")],
        )

    @classmethod
    def execute(cls, weight: float, decay: str, image: torch.Tensor | None = None) -> io.NodeOutput:
        """A recipe of one init pull-back term."""
        from ..vqgan_core import InitLoss

        img = None if image is None else ca.image_to_bchw(image)[:1].detach().cpu().clone()
        InitLoss(weight, decay)
        return io.NodeOutput(LossRecipe(lambda: InitLoss(weight, decay, image=img),
                                        f"init x{weight:g} ({decay})"))


class CombineLosses(io.ComfyNode):
    """Add up to four losses with weights."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: loss_1 (+ optional 2-4), a weight each."""
        sockets, weights = [], []
        for k in range(1, 5):
            sockets.append(VQLoss.Input(f"loss_{k}", optional=k > 1, tooltip=f"Loss {k} (empty: left out)."))
            weights.append(io.Float.Input(f"weight_{k}", default=1.0, **WEIGHT, tooltip=f"Multiplies loss {k}."))
        return io.Schema(
            node_id="VQGAN_CombineLosses", display_name="Combine Losses", category=CATEGORY,
            description="The weighted sum of several losses (itself a loss: combine combinations to add more).",
            inputs=[*sockets, *weights],
            outputs=[VQLoss.Output(display_name="loss")],
        )

    @classmethod
    def execute(cls, loss_1: LossRecipe, weight_1: float = 1.0, weight_2: float = 1.0, weight_3: float = 1.0,
                weight_4: float = 1.0, loss_2: LossRecipe | None = None, loss_3: LossRecipe | None = None,
                loss_4: LossRecipe | None = None) -> io.NodeOutput:
        """A recipe of the weighted sum."""
        from ..vqgan_core import SumLoss

        parts = [(r, w) for r, w in ((loss_1, weight_1), (loss_2, weight_2), (loss_3, weight_3), (loss_4, weight_4))
                 if r is not None]

        def build():  # noqa: ANN202
            return SumLoss([r.build() if w == 1.0 else SumLoss([r.build()], weight=w) for r, w in parts])

        label = " + ".join(r.label if w == 1.0 else f"{w:g}*({r.label})" for r, w in parts)
        guides = tuple(g for r, _ in parts for g in r.guides)
        return io.NodeOutput(LossRecipe(build, label, guides, sum(r.views for r, _ in parts),
                                        max(r.cutn for r, _ in parts)))


class StoryPace(io.ComfyNode):
    """Story mode: how long each '^' phrase set of the targets lasts."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: targets, steps per set, crossfade."""
        return io.Schema(
            node_id="VQClip_StoryPace", display_name="CLIP Story Pace", category="vqgan_clip/prompts",
            description="Story mode for the composable nodes: with '^' in a CLIP Text Prompt, switch to the next "
            "phrase set every N steps of the run (chained step nodes go on counting).",
            inputs=[
                ClipTargets.Input("targets", tooltip="Targets whose text has '^'-separated phrase sets."),
                # a pace node exists to switch phrase sets: 0 ("no story") is not on its menu
                setting_input(GenerationConfig, "change_prompts_every", default=50, min=1),
                setting_input(GenerationConfig, "story_fade"),
            ],
            outputs=[ClipTargets.Output(display_name="targets")],
        )

    @classmethod
    def validate_inputs(cls, change_prompts_every: int | None = 50, story_fade: int | None = 0) -> bool | str:
        """The fade fits in a phrase set."""
        if change_prompts_every is not None and story_fade is not None and story_fade > change_prompts_every:
            return f"story_fade ({story_fade}) must be at most change_prompts_every ({change_prompts_every})."
        return True

    @classmethod
    def execute(cls, targets: Targets, change_prompts_every: int, story_fade: int) -> io.NodeOutput:
        """The same targets with the pace attached."""
        return io.NodeOutput(dataclasses.replace(targets, pace=(int(change_prompts_every), int(story_fade))))
