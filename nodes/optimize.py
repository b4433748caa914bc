"""VQGAN+CLIP Optimize (latent in, latent out; chainable) and the one-node VQGAN+CLIP Generate.

The loop itself is ``vqgan_core.engine.loop`` (it leaves ComfyUI's inference mode and enables gradients
itself); this file maps widgets to a ``GenerationConfig`` and reports progress/previews/interruption.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch
from comfy_api.latest import io

from ..vqgan_core import GenerationConfig
from . import comfy_adapters as ca
from . import memory
from .settings import setting_input
from .types import (
    GUIDE_TIP,
    LATENT_TIP,
    TARGETS_TIP,
    VQGAN_TIP,
    ClipGuide,
    ClipTargets,
    Latent,
    Targets,
    VQGANModel,
    VQLatent,
)

log = logging.getLogger(__name__)

CATEGORY = "vqgan_clip/sampling"


def lr_schedule_input() -> io.Combo.Input:
    """The learning-rate schedule widget (the engine's registry)."""
    return setting_input(GenerationConfig, "lr_schedule")


def check_text_widgets(augmentations: str | None, image_losses: str | None = None) -> bool | str:
    """``validate_inputs`` body: True, or the first message about the augmentation codes / image losses."""
    if augmentations is not None and (msg := check_augments(augmentations)):
        return msg
    if image_losses is not None and (msg := check_image_losses(image_losses)):
        return msg
    return True


class TextWidgetNode(io.ComfyNode):
    """Base of the engine nodes with the ``augmentations`` and ``image_losses`` text widgets: checks them
    before the run (ComfyUI shows the message on the node)."""

    @classmethod
    def validate_inputs(cls, augmentations: str = "Af,Pe,Ji,Er", image_losses: str = "") -> bool | str:
        """The augmentation codes and image-loss names need a custom check."""
        return check_text_widgets(augmentations, image_losses)


def check_augments(augmentations: str) -> str | None:
    """None when the augmentation codes are valid, else a message listing the valid codes."""
    from ..vqgan_core import augment_names, parse_augments

    try:
        parse_augments(augmentations)
    except ValueError:
        return (f"augmentations: Unknown augmentation in '{augmentations}'. Use comma-separated codes from: "
                f"{', '.join(augment_names())} (or 'none').")
    return None


def check_image_losses(spec: str | None) -> str | None:
    """None when the image-loss spec parses, else the engine's message (it lists the valid names)."""
    from ..vqgan_core import parse_image_losses

    try:
        parse_image_losses(spec)
    except ValueError as e:
        return f"image_losses: {e}. Write 'name:weight,...', e.g. 'symmetry:0.5,saturation:0.2'."
    return None


def image_losses_input() -> io.String.Input:
    """The optional extra image terms widget."""
    return setting_input(GenerationConfig, "image_losses")


def low_memory_input() -> io.Boolean.Input:
    """The decoder-checkpointing switch (for large images on small GPUs)."""
    return io.Boolean.Input("low_memory", default=False,
                            tooltip="Recompute the decoder's activations in backward: same result, much less GPU "
                            "memory for large images, about one more decoder pass per step. Off: switched on "
                            "by itself when a step runs out of GPU memory.")


def engine_settings(low_memory: bool, **widgets: Any) -> dict[str, Any]:
    """Widget values under the engine's setting names: a widget saved under another name than its field (e.g.
    ``cutouts`` for ``cutn``) maps through the field's declared widget name, not a hand-kept table.

    ``low_memory`` on = always recompute the decoder; off = only after running out of memory (None).
    """
    from ..vqgan_core import settings_of

    field_of = {s.widget_name: s.name for s in settings_of(GenerationConfig).values()}
    return {**{field_of.get(k, k): v for k, v in widgets.items()}, "checkpoint_decoder": True if low_memory else None}


def prompt_string(targets: Targets, sets: int | None = None) -> str:
    """Whole-image text targets in the engine's grammar (explicit weight and stop: colons in text survive).

    Story phrase sets are joined by ``^``: ``sets`` of them (default :func:`story_sets`), where set k holds
    each story prompt's set ``k mod its own count`` and every prompt without ``^``.
    """
    texts = [t for t in targets.items if t.kind == "text" and t.region is None]
    if not texts:
        return ""
    sets = sets or story_sets(targets)
    return "^".join("|".join(f"{t.text}:{t.weight!r}:{t.stop!r}" for t in texts
                             if t.phase is None or t.phase == k % t.phases) for k in range(sets))


def story_sets(targets: Targets) -> int:
    """Phrase sets of the combined story: the least common multiple of the stories' lengths (1 without '^'),
    so each story cycles on its own, the same for whole-image and regional targets."""
    return math.lcm(1, *(t.phases for t in targets.items if t.phase is not None))


def change_prompts_input() -> io.Int.Input:
    """Story mode: steps per phrase set."""
    return setting_input(GenerationConfig, "change_prompts_every")


def story_fade_input() -> io.Int.Input:
    """Story mode: crossfade length."""
    return setting_input(GenerationConfig, "story_fade")


def method_input() -> io.Combo.Input:
    """How the latent is optimised (the engine's methods)."""
    # optional: API-format prompts written before it existed still validate (the UI shows it as a widget)
    return setting_input(GenerationConfig, "method", optional=True)


def noise_string(targets: Targets) -> str:
    """Noise targets in the engine's ``seed:weight:stop|...`` grammar."""
    return "|".join(f"{t.seed}:{t.weight!r}:{t.stop!r}" for t in targets.items if t.kind == "noise")


def story_pace(targets: Targets, change_prompts_every: int, steps: int) -> int:
    """The steps each '^' phrase set lasts: the widget's value, or, when it is 0 and the targets tell a story, the
    node's steps shared evenly among the sets.

    Why not an error: the targets arrive through a link, which ComfyUI does not show a node before the run, so
    a missing pace could only fail once the graph runs; a story spread over the node's steps is what the prompt
    asks for. (The command line keeps the classic script's rule: no pace, first phrase set only.)
    """
    sets = story_sets(targets)
    if sets > 1 and change_prompts_every <= 0:
        pace = max(1, math.ceil(steps / sets))
        log.info("story of %d phrase sets without change_prompts_every: each set lasts %d of the %d steps",
                 sets, pace, steps)
        return pace
    return change_prompts_every


def target_settings(targets: Targets, change_prompts_every: int, steps: int,
                    story_fade: int = 0) -> dict[str, Any]:
    """The whole-image text and noise targets and the story pace (:func:`story_pace`) as GenerationConfig
    settings; ``steps``: what the node runs (an automatic pace spreads the story over them)."""
    pace = story_pace(targets, change_prompts_every, steps)
    out = {"prompts": prompt_string(targets), "noise_prompts": noise_string(targets), "change_prompts_every": pace}
    if pace != change_prompts_every:  # an automatic pace: a crossfade fits inside it
        out["story_fade"] = min(story_fade, pace)
    return out


def image_prompts(targets: Targets) -> list[tuple[torch.Tensor, float, float]]:
    """Whole-image image targets as the engine's ``(image01 [1,3,H,W], weight, stop)`` tuples."""
    return [(t.image, t.weight, t.stop) for t in targets.items if t.kind == "image" and t.region is None]


def region_prompts(targets: Targets) -> list:
    """Regional targets as the engine's ``RegionPrompt`` list, one per distinct mask (in order)."""
    from ..vqgan_core import RegionPrompt

    groups: dict[int, list] = {}
    for t in targets.items:
        if t.region is not None:
            groups.setdefault(id(t.region), []).append(t)
    out = []
    sets = story_sets(targets)  # one pace for all: regions cycle with the whole-image story
    for items in groups.values():
        sub = Targets(tuple(dataclasses.replace(t, region=None) for t in items))
        out.append(RegionPrompt(items[0].region, prompt_string(sub, sets), image_prompts(sub)))
    return out


def run_views(targets: Targets, regions: list) -> int:
    """CLIP passes per step and guide: the whole image (when it has targets) plus one per region."""
    whole = any(t.region is None for t in targets.items) or not regions
    return int(whole) + len(regions)


def make_config(settings: dict, **extra):  # noqa: ANN003, ANN201
    """GenerationConfig from node settings (errors name the setting)."""
    from ..vqgan_core import GenerationConfig

    return GenerationConfig.from_dict({**settings, **extra})


def run_engine(model, guide, targets: Targets, z0: torch.Tensor | None, settings: dict,  # noqa: ANN001
               state: dict, preview_every: int, edit_mask: torch.Tensor | None = None,
               node_id: str | None = None, snapshots: list | None = None):  # noqa: ANN201
    """Run ``vqgan_core.engine.loop`` from ``z0`` (or its own init when None).

    Returns the engine's GenerationResult and the state to continue from (``vqgan_core.engine.run_state``): the
    optimiser's state, restored into the next Optimize when the optimiser and the latent shape match, so a
    chained Optimize continues the run instead of restarting it. The state is copied both ways: Adam updates
    its moments in place, and the upstream node's cached output must never change (re-running the workflow
    must give the same image). ``snapshots``: a list that receives the image every ``snapshot_every`` steps.
    """
    from ..vqgan_core import GenerationLoop, continue_run, run_state

    settings = dict(settings)
    every = int(settings.pop("snapshot_every", 0) or 0)
    settings.update(target_settings(targets, settings.get("change_prompts_every", 0), settings["steps"],
                                    settings.get("story_fade", 0)))
    config = make_config(settings, preview_every=preview_every, save_every=every if snapshots is not None else 0)
    regions = region_prompts(targets)
    callbacks = ca.Progress(settings["steps"], models=(model, guide), node_id=node_id).callbacks()
    if snapshots is not None and every:
        callbacks.save = lambda step, images: snapshots.append(images.detach().cpu())
    with memory.running(model, guide, config, views=run_views(targets, regions)):
        loop = GenerationLoop(model, guide, config, callbacks, init_latent=z0, image_prompts=image_prompts(targets),
                              regions=regions, edit_mask=ca.first_mask(edit_mask),
                              story_offset=state.get("steps", 0))  # a continued run goes on with its story
        continue_run(loop, state)  # the new lr widget wins over the stored one
        result = loop.run()
    return result, run_state(loop)


def snapshot_input() -> io.Int.Input:
    """How often the optimising nodes keep a frame of the run (the ``snapshots`` output)."""
    return io.Int.Input("snapshot_every", default=0, min=0, max=10000, step=1, optional=True,
                        tooltip="Also keep the image every N steps: the snapshots output is the run as an IMAGE batch "
                        "(for Save Animated WEBP/PNG). 0 = only the final image.")


def snapshot_batch(frames: list[torch.Tensor], final: torch.Tensor) -> torch.Tensor:
    """The kept frames and the final images as one ComfyUI IMAGE batch, frame after frame."""
    return ca.bchw_to_image(torch.cat([*frames, final.detach().cpu()]))


def check_inputs(latent: Latent, model, targets: Targets) -> None:  # noqa: ANN001
    """The latent belongs to this VQGAN and there is something to optimise towards."""
    check_latent_model(latent, model)
    if not targets.items:
        raise ValueError("No targets: connect a CLIP Text Prompt or CLIP Image Prompt.")


def check_latent_model(latent: Latent, model) -> None:  # noqa: ANN001
    """The latent belongs to this VQGAN (same codebook shape)."""
    if latent.model is not model and tuple(latent.model.codebook.shape) != tuple(model.codebook.shape):
        raise ValueError(
            "The latent was made with a different VQGAN (codebook "
            f"{tuple(latent.model.codebook.shape)}) than the one connected ({tuple(model.codebook.shape)}). "
            "Connect the same Load VQGAN to both, or re-encode the image with this VQGAN."
        )


def latent_settings(latent: Latent, model, settings: dict) -> dict:  # noqa: ANN001
    """Settings plus the batch size and pixel size the latent implies."""
    h, w = latent.z.shape[-2:]
    f = model.downsample_factor
    return {**settings, "batch_size": latent.batch, "width": int(w) * f, "height": int(h) * f}


def optimize_latent(latent: Latent, model, guide, targets: Targets, settings: dict,  # noqa: ANN001
                    preview_every: int, continue_run: bool, edit_mask: torch.Tensor | None = None,
                    node_id: str | None = None) -> tuple[Latent, torch.Tensor]:
    """Shared body of Optimize and Generate: checks, device moves, grad mode, engine call."""
    check_inputs(latent, model, targets)
    state = dict(latent.state) if continue_run else {}
    device = ca.compute_device()
    settings = latent_settings(latent, model, settings)
    # GenerationLoop leaves inference mode and enables gradients itself; it clones z0 (never modifies it)
    frames: list[torch.Tensor] = []
    result, new_state = run_engine(model, guide, targets, latent.z.to(device), settings, state, preview_every,
                                   edit_mask, node_id, frames)
    out = Latent(z=result.latent.detach().to(ca.output_device()), model=model, state=new_state)
    return out, snapshot_batch(frames, result.images)


def steps_input(**override: Any) -> io.Int.Input:
    """The run's steps (at least 1 in a graph: a node that runs no step is a wiring mistake)."""
    return setting_input(GenerationConfig, "steps", min=1, **override)


def seed_input() -> io.Int.Input:
    """The run's seed, with ComfyUI's control-after-generate menu."""
    return setting_input(GenerationConfig, "seed", control_after_generate=True)


def common_inputs(**steps_override: Any) -> list:
    """Widgets shared by Optimize and Generate."""
    return [steps_input(**steps_override),
            *(setting_input(GenerationConfig, n) for n in ("optimizer", "lr", "cutn", "cutout_method", "augments")),
            seed_input()]


class VQGANCLIPOptimize(TextWidgetNode):
    """Optimise a VQ latent towards CLIP targets; chain several to continue a run."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent, model, guide, targets, optimiser settings -> latent."""
        return io.Schema(
            node_id="VQGAN_CLIPOptimize",
            display_name="VQGAN+CLIP Optimize",
            category=CATEGORY,
            description="Moves the latent so its decoded image matches the CLIP targets. The output latent "
            "keeps the optimiser state, so a second Optimize continues the same run (story: change the "
            "prompt; coarse-to-fine: Resize VQ Latent in between).",
            inputs=[
                VQLatent.Input("latent", tooltip=LATENT_TIP),
                VQGANModel.Input("vqgan", tooltip=VQGAN_TIP),
                ClipGuide.Input("clip_guide", tooltip=GUIDE_TIP),
                ClipTargets.Input("targets", tooltip=TARGETS_TIP),
                *common_inputs(),
                setting_input(GenerationConfig, "init_weight"),
                setting_input(GenerationConfig, "tv_weight"),
                io.Boolean.Input("continue_run", default=True,
                                 tooltip="Reuse the optimiser state carried by the latent (from a previous "
                                 "Optimize)."),
                setting_input(GenerationConfig, "preview_every"),
                image_losses_input(),  # new widgets go last: workflows saved before keep their widget order
                low_memory_input(),
                lr_schedule_input(),
                change_prompts_input(),
                story_fade_input(),
                method_input(),
                snapshot_input(),
                io.Mask.Input("mask", optional=True,
                              tooltip="Inpainting: only the masked area (> 0.5) changes; the rest keeps the "
                              "input latent. Each latent cell is 16x16 pixels for f16 models (8x8 for f8)."),
            ],
            outputs=[VQLatent.Output(display_name="latent"), io.Image.Output(display_name="snapshots")],
            hidden=[io.Hidden.unique_id],  # the loss shows under the node
        )

    @classmethod
    def execute(cls, latent: Latent, vqgan, clip_guide, targets: Targets, steps: int, optimizer: str,  # noqa: ANN001
                lr: float, cutouts: int, cutout_method: str, augmentations: str, seed: int, init_weight: float,
                tv_weight: float, continue_run: bool, preview_every: int, image_losses: str = "",
                low_memory: bool = False, mask: torch.Tensor | None = None,
                lr_schedule: str = "constant", change_prompts_every: int = 0, story_fade: int = 0,
                method: str = "z_quantize", snapshot_every: int = 0) -> io.NodeOutput:
        """Run ``steps`` steps."""
        settings = engine_settings(low_memory, steps=steps, optimizer=optimizer, lr=lr, cutouts=cutouts,
                                   cutout_method=cutout_method, augmentations=augmentations, seed=seed,
                                   init_weight=init_weight, tv_weight=tv_weight, image_losses=image_losses,
                                   lr_schedule=lr_schedule, change_prompts_every=change_prompts_every,
                                   story_fade=story_fade, method=method, snapshot_every=snapshot_every)
        out, frames = optimize_latent(latent, vqgan, clip_guide, targets, settings, preview_every, continue_run, mask,
                              ca.node_id(cls))
        return io.NodeOutput(out, frames)


class VQGANCLIPGenerate(io.ComfyNode):
    """Text in, image out: random latent + Optimize + Decode in one node."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: models, prompt, size, steps, seed (+ the optimiser widgets)."""
        return io.Schema(
            node_id="VQGAN_CLIPGenerate",
            display_name="VQGAN+CLIP Generate",
            category=CATEGORY,
            description="The whole VQGAN+CLIP run in one node: random codes, optimise towards the prompt, "
            "decode. For more control use Random VQ Latent -> VQGAN+CLIP Optimize -> VQGAN Decode.",
            inputs=[
                VQGANModel.Input("vqgan", tooltip=VQGAN_TIP),
                ClipGuide.Input("clip_guide", tooltip=GUIDE_TIP),
                setting_input(GenerationConfig, "prompts", multiline=True),
                setting_input(GenerationConfig, "width"),
                setting_input(GenerationConfig, "height"),
                *common_inputs(default=100),  # one node makes the whole image: more steps than one Optimize
                setting_input(GenerationConfig, "preview_every"),
                low_memory_input(),
                lr_schedule_input(),
                change_prompts_input(),
                story_fade_input(),
                method_input(),
                snapshot_input(),
            ],
            outputs=[io.Image.Output(display_name="image"), VQLatent.Output(display_name="latent"),
                     io.Image.Output(display_name="snapshots")],
            hidden=[io.Hidden.unique_id],  # the loss shows under the node
        )

    @classmethod
    def validate_inputs(cls, prompt: str = "", augmentations: str = "Af,Pe,Ji,Er") -> bool | str:
        """Check the prompt grammar and the augmentation codes before the run (a story without a pace is spread
        over the steps: :func:`story_pace`)."""
        from .prompts import parse_text_targets

        if prompt is not None:
            try:
                parse_text_targets(prompt, 1.0)
            except ValueError as e:  # (ComfyUI shows a node's message under each widget it checks: name ours)
                return f"prompt: {e}"
        if augmentations is not None:
            return check_augments(augmentations) or True
        return True

    @classmethod
    def execute(cls, vqgan, clip_guide, prompt: str, width: int, height: int, steps: int,  # noqa: ANN001
                optimizer: str, lr: float, cutouts: int, cutout_method: str, augmentations: str, seed: int,
                preview_every: int, low_memory: bool = False, lr_schedule: str = "constant",
                change_prompts_every: int = 0, story_fade: int = 0, method: str = "z_quantize",
                snapshot_every: int = 0) -> io.NodeOutput:
        """The engine's own run (same seed and settings give the same image as the CLI)."""
        from .prompts import parse_text_targets

        targets = parse_text_targets(prompt, 1.0)
        f = vqgan.downsample_factor
        if width < f or height < f:
            raise ValueError(f"Width and height must be at least {f} pixels for this VQGAN (got {width}x{height}).")
        settings = engine_settings(low_memory, steps=steps, optimizer=optimizer, lr=lr, cutouts=cutouts,
                                   cutout_method=cutout_method, augmentations=augmentations, seed=seed, width=(width // f) * f, height=(height // f) * f, init="random",
                                   lr_schedule=lr_schedule, change_prompts_every=change_prompts_every,
                                   story_fade=story_fade, method=method, snapshot_every=snapshot_every)
        frames: list[torch.Tensor] = []
        result, state = run_engine(vqgan, clip_guide, targets, None, settings, {}, preview_every,
                                   node_id=ca.node_id(cls), snapshots=frames)
        latent = Latent(z=result.latent.detach().to(ca.output_device()), model=vqgan, state=state)
        return io.NodeOutput(ca.bchw_to_image(result.images), latent, snapshot_batch(frames, result.images))
