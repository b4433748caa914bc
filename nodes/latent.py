"""Latent nodes: VQGAN Encode, VQGAN Decode, Random VQ Latent, Resize VQ Latent.

A VQ latent carries the continuous ``z`` (codebook space, before quantisation) and its model;
decoding always quantises first, so what you see is what the codes give.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..vqgan_core import GenerationConfig, settings_of
from . import comfy_adapters as ca
from . import memory
from .settings import setting_input
from .types import LATENT_TIP, VQGAN_TIP, Latent, VQGANModel, VQLatent

CATEGORY = "vqgan_clip/latent"


def decode_latent(latent: Latent, model=None) -> torch.Tensor:  # noqa: ANN001
    """Quantise and decode a latent to [B,3,H,W] in [0,1] on the compute device."""
    model = latent.model if model is None else model
    device = memory.use(model)
    z = latent.z.to(device)
    z_q, _ = model.quantize_latent(z)
    return ((model.decode(z_q) + 1) / 2).clamp(0, 1)


class VQGANEncode(io.ComfyNode):
    """IMAGE -> VQ latent."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: vqgan + image."""
        return io.Schema(
            node_id="VQGAN_Encode",
            display_name="VQGAN Encode",
            category=CATEGORY,
            description="Encodes an image into the VQGAN's latent (centre-cropped to a multiple of the "
            "downsampling factor).",
            inputs=[VQGANModel.Input("vqgan", tooltip=VQGAN_TIP),
                    io.Image.Input("image", tooltip="The picture(s) to encode; centre-cropped to a multiple of the "
                                   "VQGAN's factor (16 or 8 pixels).")],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, vqgan, image: torch.Tensor) -> io.NodeOutput:  # noqa: ANN001
        """Encode to the pre-quantisation latent (its nearest codes are the image's codes)."""
        from ..vqgan_core import crop_to_multiple

        device = memory.use(vqgan)
        x = crop_to_multiple(ca.image_to_bchw(image, device), vqgan.downsample_factor)
        with torch.no_grad():
            z = vqgan.encode_to_prequant(x * 2 - 1)
        return io.NodeOutput(Latent(z=z.to(ca.output_device()), model=vqgan))


class VQGANDecode(io.ComfyNode):
    """VQ latent -> IMAGE."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent only (it carries its model)."""
        return io.Schema(
            node_id="VQGAN_Decode",
            display_name="VQGAN Decode",
            category=CATEGORY,
            description="Quantises the latent to its nearest codes and decodes it to an image.",
            inputs=[VQLatent.Input("latent", tooltip=LATENT_TIP)],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, latent: Latent) -> io.NodeOutput:
        """Decode the whole batch."""
        with torch.no_grad():
            x = decode_latent(latent)
        return io.NodeOutput(ca.bchw_to_image(x))


class RandomVQLatent(io.ComfyNode):
    """A starting latent: random codes, a noise image (pixels, gradient, perlin) or an init image, seeded."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: size, seed, init type, batch, optional init image."""
        return io.Schema(
            node_id="VQGAN_RandomLatent",
            display_name="Random VQ Latent",
            category=CATEGORY,
            description="Creates a seeded starting latent (image i of the batch uses seed + i, so it equals a "
            "single run with that seed). init 'image' resizes and crops the init image to width x height.",
            inputs=[
                VQGANModel.Input("vqgan", tooltip=VQGAN_TIP),
                *(setting_input(GenerationConfig, n) for n in ("width", "height")),
                setting_input(GenerationConfig, "seed", control_after_generate=True),
                *(setting_input(GenerationConfig, n) for n in ("init", "batch_size")),
                io.Image.Input("init_image", optional=True, tooltip="Used when init is 'image'."),
            ],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def validate_inputs(cls, init: str = "random") -> bool | str:
        """Only checks the init name (other inputs keep ComfyUI's own min/max checks)."""
        names = settings_of(GenerationConfig)["init"].options()
        return True if init in names else f"Unknown init '{init}'. Choose one of: {', '.join(names)}."

    @classmethod
    def execute(cls, vqgan, width: int, height: int, seed: int, init: str,  # noqa: ANN001
                batch_size: int, init_image: torch.Tensor | None = None) -> io.NodeOutput:
        """Build the latent with the engine's ``init_latent`` (one generator per image)."""
        from ..vqgan_core import init_latent

        f = vqgan.downsample_factor
        w, h = (width // f) * f, (height // f) * f
        if w == 0 or h == 0:
            raise ValueError(f"Width and height must be at least {f} pixels for this VQGAN (got {width}x{height}).")
        if init == "image" and init_image is None:
            raise ValueError("init is 'image' but no init_image is connected: connect an image or pick another init.")
        gens = [torch.Generator().manual_seed((int(seed) + i) % 2**64) for i in range(batch_size)]  # as the engine
        device = memory.use(vqgan)
        image = ca.image_to_bchw(init_image, device) if init_image is not None else None
        with torch.no_grad():
            z = init_latent(vqgan, init, batch_size, h, w, gens, image=image if init == "image" else None)
        return io.NodeOutput(Latent(z=z.to(ca.output_device()), model=vqgan))


class ResizeVQLatent(io.ComfyNode):
    """Change the token grid of a latent (coarse-to-fine: optimise small, enlarge, optimise again)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent + scale."""
        return io.Schema(
            node_id="VQGAN_ResizeLatent",
            display_name="Resize VQ Latent",
            category=CATEGORY,
            description="Scales the latent's token grid (nearest keeps the codes, bilinear blends). Chain with "
            "VQGAN+CLIP Optimize for coarse-to-fine.",
            inputs=[
                VQLatent.Input("latent", tooltip=LATENT_TIP),
                io.Float.Input("scale", default=2.0, min=0.25, max=8.0, step=0.25, round=0.01,
                               tooltip="Size factor of the token grid (2 = twice as wide and high: coarse to fine)."),
                io.Combo.Input("mode", options=["nearest", "bilinear"], default="nearest",
                               tooltip="nearest keeps every code (blocky, exact); bilinear blends neighbours."),
            ],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, latent: Latent, scale: float, mode: str) -> io.NodeOutput:
        """Interpolate z; the optimiser state is dropped (its shapes no longer match)."""
        from ..vqgan_core import resize_latent

        return io.NodeOutput(Latent(z=resize_latent(latent.z, scale, mode), model=latent.model))


class InterpolateVQLatents(io.ComfyNode):
    """Two latents -> the frames between them (a morph animation)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: two latents, frames, mode -> latent batch."""
        from ..vqgan_core import INTERPOLATIONS

        return io.Schema(
            node_id="VQGAN_InterpolateLatents",
            display_name="Interpolate VQ Latents",
            category=CATEGORY,
            description="The latents between A and B (both included) as one batch, frame after frame: decode "
            "it and save it with Save Animated WEBP for a morph. Both latents must come from the same VQGAN and "
            "have the same size and batch.",
            inputs=[
                VQLatent.Input("latent_a", tooltip="The first frame's latent."),
                VQLatent.Input("latent_b", tooltip="The last frame's latent (same VQGAN, size and batch)."),
                io.Int.Input("frames", default=16, min=2, max=1000, step=1,
                             tooltip="Frames from A to B, both included."),
                io.Combo.Input("mode", options=list(INTERPOLATIONS), default="slerp",
                               tooltip="slerp keeps the in-between latents as typical as the ends."),
            ],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, latent_a: Latent, latent_b: Latent, frames: int, mode: str) -> io.NodeOutput:
        """Interpolate on the output device; the optimiser state is not carried."""
        from ..vqgan_core import interpolate_latents

        if latent_a.model is not latent_b.model and tuple(latent_a.model.codebook.shape) != tuple(
                latent_b.model.codebook.shape):
            raise ValueError("The two latents were made with different VQGANs: connect the same Load VQGAN to both.")
        z = interpolate_latents(latent_a.z, latent_b.z.to(latent_a.z.device), frames, mode)
        return io.NodeOutput(Latent(z=z, model=latent_a.model))
