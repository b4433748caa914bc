"""VQGAN+CLIP Zoom Animation (latent in, frames out) and Restyle Frames (frames in, frames out).

The engine is ``vqgan_core.animation.animate``; this file maps widgets to its configs and reports progress.
Zoom: frame 0 is the input latent itself, so a Generate or Optimize in front sets the first image.
Frames go out as one IMAGE batch, ready for ComfyUI's Save Animated WEBP / PNG nodes.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..vqgan_core import AnimationConfig, GenerationConfig, settings_of
from . import comfy_adapters as ca
from . import memory
from .optimize import (
    CATEGORY,
    TextWidgetNode,
    change_prompts_input,
    check_inputs,
    common_inputs,
    engine_settings,
    image_losses_input,
    image_prompts,
    latent_settings,
    low_memory_input,
    make_config,
    method_input,
    region_prompts,
    run_views,
    story_fade_input,
    target_settings,
)
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

PADDINGS = ["auto", "reflection", "border", "zeros", "wrap"]  # auto: wrap for a seamless VQGAN, else reflection


def resolve_padding(padding: str, vqgan) -> str:  # noqa: ANN001
    """``auto`` -> ``wrap`` for a tileable (seamless) VQGAN, else ``reflection``."""
    if padding != "auto":
        return padding
    from ..vqgan_core import is_seamless

    return "wrap" if is_seamless(vqgan) else "reflection"


def animation_inputs() -> list:
    """Motion widgets (per frame)."""
    return [
        *(setting_input(AnimationConfig, n) for n in ("frames", "zoom", "shift_x", "shift_y", "rotate")),
        # the graph's menu adds 'auto': wrap for a VQGAN Seamless, else reflection
        setting_input(AnimationConfig, "padding", options=PADDINGS, default="auto",
                      tooltip=settings_of(AnimationConfig)["padding"].help + " 'auto' = wrap for a VQGAN Seamless, "
                      "else reflection."),
    ]


def frame_tail_inputs(init_weight: float, init_tooltip: str) -> list:
    """The widgets both animation nodes end with (new widgets go last: saved workflows keep their order)."""
    return [
        setting_input(GenerationConfig, "init_weight", default=init_weight, tooltip=init_tooltip),
        setting_input(GenerationConfig, "tv_weight"),
        image_losses_input(),
        setting_input(GenerationConfig, "preview_every"),
        low_memory_input(),
    ]


def frames_output(result, vqgan) -> io.NodeOutput:  # noqa: ANN001
    """An animation result as (IMAGE frames, frame-major over batch items; the last latent)."""
    out = Latent(z=result.latent.detach().to(ca.output_device()), model=vqgan)
    return io.NodeOutput(ca.bchw_to_image(result.frames.flatten(0, 1)), out)


class VQGANCLIPZoomAnimation(TextWidgetNode):
    """Zoom / shift / rotate the image, re-encode, optimise a few steps: once per frame."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent, models, targets, motion, optimiser settings -> frames, last latent."""
        _steps, *rest = common_inputs()  # the run's 'steps' widget becomes steps_per_frame
        per_frame = setting_input(AnimationConfig, "steps_per_frame")
        return io.Schema(
            node_id="VQGAN_CLIPZoomAnimation",
            display_name="VQGAN+CLIP Zoom Animation",
            category=CATEGORY,
            description="The classic VQGAN+CLIP zoom video: each frame zooms, shifts and rotates the last "
            "image, re-encodes it and optimises it towards the targets again. Frame 0 is the input latent. "
            "Connect the frames to Save Animated WEBP or Save Animated PNG.",
            inputs=[
                VQLatent.Input("latent", tooltip=LATENT_TIP),
                VQGANModel.Input("vqgan", tooltip=VQGAN_TIP),
                ClipGuide.Input("clip_guide", tooltip=GUIDE_TIP),
                ClipTargets.Input("targets", tooltip=TARGETS_TIP),
                *animation_inputs(),
                per_frame,
                *rest,
                *frame_tail_inputs(0.0, "Pull back towards each re-encoded frame (steadier motion)."),
                change_prompts_input(),
                story_fade_input(),
                method_input(),
            ],
            outputs=[io.Image.Output(display_name="frames"), VQLatent.Output(display_name="latent")],
            hidden=[io.Hidden.unique_id],  # the loss shows under the node
        )

    @classmethod
    def execute(cls, latent: Latent, vqgan, clip_guide, targets: Targets, frames: int, zoom: float,  # noqa: ANN001
                shift_x: float, shift_y: float, rotate: float, padding: str, steps_per_frame: int, optimizer: str,
                lr: float, cutouts: int, cutout_method: str, augmentations: str, seed: int, init_weight: float,
                tv_weight: float, preview_every: int, image_losses: str = "",
                low_memory: bool = False, change_prompts_every: int = 0, story_fade: int = 0,
                method: str = "z_quantize") -> io.NodeOutput:
        """Run the animation; frames come out frame-major (all batch items of frame 0, then frame 1...)."""
        from ..vqgan_core import AnimationConfig, run_animation

        check_inputs(latent, vqgan, targets)
        anim = AnimationConfig(frames=frames, steps_per_frame=steps_per_frame, zoom=zoom, shift_x=shift_x,
                               shift_y=shift_y, rotate=rotate, padding=resolve_padding(padding, vqgan))
        settings = latent_settings(latent, vqgan, engine_settings(
            low_memory, steps=0, optimizer=optimizer, lr=lr, cutouts=cutouts, cutout_method=cutout_method,
            augmentations=augmentations, seed=seed, init_weight=init_weight,
            tv_weight=tv_weight, image_losses=image_losses, story_fade=story_fade, method=method))
        settings.update(target_settings(targets, change_prompts_every, (frames - 1) * steps_per_frame, story_fade))
        config = make_config(settings, preview_every=preview_every)
        regions = region_prompts(targets)
        callbacks = ca.Progress((frames - 1) * steps_per_frame, models=(vqgan, clip_guide),
                                node_id=ca.node_id(cls)).callbacks()
        with memory.running(vqgan, clip_guide, config, views=run_views(targets, regions)):
            result = run_animation(vqgan, clip_guide, config, anim, callbacks,
                                   init_latent=latent.z.to(ca.compute_device()), image_prompts=image_prompts(targets),
                                   regions=regions)
        return frames_output(result, vqgan)


class VQGANCLIPRestyleFrames(TextWidgetNode):
    """Restyle a sequence of frames (a video) towards the targets, one frame after another."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: frames, models, targets, steps, blend, smooth, optimiser settings -> frames, last latent."""
        _steps, *rest = common_inputs()
        return io.Schema(
            node_id="VQGAN_CLIPRestyleFrames",
            display_name="VQGAN+CLIP Restyle Frames",
            category=CATEGORY,
            description="Video restyling: each frame starts from its input frame (scaled and centre-cropped to a "
            "multiple of the VQGAN's factor) mixed with the previous output by 'blend', and is optimised "
            "towards the targets. Load a video as an IMAGE batch; save with Save Animated WEBP / PNG.",
            inputs=[
                io.Image.Input("frames", tooltip="The video's frames as an IMAGE batch (Load Image of an animated file, a video loader)."),
                VQGANModel.Input("vqgan", tooltip=VQGAN_TIP),
                ClipGuide.Input("clip_guide", tooltip=GUIDE_TIP),
                ClipTargets.Input("targets", tooltip=TARGETS_TIP),
                io.Int.Input("first_steps", default=50, min=0, max=10000, step=1,
                             tooltip="Optimisation steps for the first frame."),
                setting_input(AnimationConfig, "steps_per_frame"),
                setting_input(AnimationConfig, "blend"),
                *rest,
                *frame_tail_inputs(0.1, "Pull back towards each encoded start frame (keeps the video's layout)."),
                setting_input(AnimationConfig, "smooth"),
                change_prompts_input(),
                story_fade_input(),
                method_input(),
            ],
            outputs=[io.Image.Output(display_name="frames"), VQLatent.Output(display_name="latent")],
            hidden=[io.Hidden.unique_id],  # the loss shows under the node
        )

    @classmethod
    def execute(cls, frames, vqgan, clip_guide, targets: Targets, first_steps: int, steps_per_frame: int,  # noqa: ANN001
                blend: float, optimizer: str, lr: float, cutouts: int, cutout_method: str, augmentations: str,
                seed: int, init_weight: float, tv_weight: float, preview_every: int,
                image_losses: str = "", low_memory: bool = False, smooth: float = 0.0,
                change_prompts_every: int = 0, story_fade: int = 0, method: str = "z_quantize") -> io.NodeOutput:
        """Run the restyling; one output frame per input frame."""
        from ..vqgan_core import AnimationConfig, run_animation

        if not targets.items:
            raise ValueError("No targets: connect a CLIP Text Prompt or CLIP Image Prompt.")
        src = ca.image_to_bchw(frames)
        f = vqgan.downsample_factor
        h, w = (src.shape[-2] // f) * f, (src.shape[-1] // f) * f
        if h == 0 or w == 0:
            raise ValueError(f"The frames ({src.shape[-1]}x{src.shape[-2]}) are smaller than this VQGAN's factor {f}.")
        n = src.shape[0]
        anim = AnimationConfig(frames=n, steps_per_frame=steps_per_frame, zoom=1.0, blend=blend, smooth=smooth)
        settings = engine_settings(low_memory, steps=first_steps, optimizer=optimizer, lr=lr, cutouts=cutouts,
                                   cutout_method=cutout_method, augmentations=augmentations, seed=seed,
                                   init_weight=init_weight, tv_weight=tv_weight,
                                   image_losses=image_losses, width=w, height=h, story_fade=story_fade,
                                   method=method)
        settings.update(target_settings(targets, change_prompts_every, first_steps + (n - 1) * steps_per_frame,
                                        story_fade))
        config = make_config(settings, preview_every=preview_every)
        regions = region_prompts(targets)
        callbacks = ca.Progress(first_steps + (n - 1) * steps_per_frame, models=(vqgan, clip_guide),
                                node_id=ca.node_id(cls)).callbacks()
        with memory.running(vqgan, clip_guide, config, views=run_views(targets, regions)):
            result = run_animation(vqgan, clip_guide, config, anim, callbacks, source=src,
                                   image_prompts=image_prompts(targets), regions=regions)
        return frames_output(result, vqgan)
