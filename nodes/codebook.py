"""Codebook nodes: Codebook Lookup (latent -> codes), Codes To Latent, Codebook Edit."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import comfy_adapters as ca
from . import memory
from .types import LATENT_TIP, Codes, Latent, VQCodes, VQLatent

CATEGORY = "vqgan_clip/codebook"


def parse_codes(text: str, n_embed: int | None) -> list[int]:
    """Parse '12, 40 7' into code indices, checking the range in the user's words (``n_embed`` None: before the
    run, when the codebook is not known yet, only that indices start at 0)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ValueError("Enter at least one code index (e.g. '12' or '3, 40, 7').")
    codes = []
    for p in parts:
        try:
            c = int(p)
        except ValueError:
            raise ValueError(f"'{p}' is not a code index: use whole numbers separated by commas.") from None
        if c < 0:
            raise ValueError(f"Code {c} does not exist: code indices start at 0.")
        if n_embed is not None and c >= n_embed:
            raise ValueError(f"Code {c} does not exist: this VQGAN's codebook has codes 0 to {n_embed - 1}.")
        codes.append(c)
    return codes


def region_mask(latent: Latent, mask: torch.Tensor | None, x: int, y: int, width: int, height: int) -> torch.Tensor:
    """Boolean [B,h,w] token mask from a MASK (any size, > 0.5) or a pixel rectangle."""
    from ..vqgan_core import mask_region, rect_region

    b, _, h, w = latent.z.shape
    if mask is not None:
        return mask_region(mask, b, h, w)
    return rect_region(b, h, w, latent.model.downsample_factor, x, y, width, height)


class CodebookLookup(io.ComfyNode):
    """Latent -> code indices (plus a false-colour map and the first image's grid as text)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent -> codes, map, text."""
        return io.Schema(
            node_id="VQGAN_CodebookLookup",
            display_name="Codebook Lookup",
            category=CATEGORY,
            description="Finds the nearest codebook entry of every latent token.",
            inputs=[VQLatent.Input("latent", tooltip=LATENT_TIP)],
            outputs=[VQCodes.Output(display_name="codes"), io.Image.Output(display_name="code_map"),
                     io.String.Output(display_name="codes_text")],
        )

    @classmethod
    def execute(cls, latent: Latent) -> io.NodeOutput:
        """Quantise, return indices, a colour map (one pixel per token) and the grid text."""
        from ..vqgan_core import code_colors

        model = latent.model
        with torch.no_grad():
            _, idx = model.quantize_latent(latent.z.to(memory.use(model)))
        idx = idx.to(ca.output_device()).long()
        text = "\n".join(" ".join(str(int(c)) for c in row) for row in idx[0])
        return io.NodeOutput(Codes(indices=idx, model=model), ca.bchw_to_image(code_colors(idx)), text)


class CodesToLatent(io.ComfyNode):
    """Code indices -> latent (the codebook vectors)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: codes -> latent."""
        return io.Schema(
            node_id="VQGAN_CodesToLatent",
            display_name="Codes To VQ Latent",
            category=CATEGORY,
            description="Turns code indices back into a latent (each token = its codebook vector).",
            inputs=[VQCodes.Input("codes", tooltip="Code indices (Codebook Lookup).")],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, codes: Codes) -> io.NodeOutput:
        """Look the codes up in the codebook."""
        with torch.no_grad():
            z = codes.model.indices_to_latent(codes.indices.to(memory.use(codes.model)))
        return io.NodeOutput(Latent(z=z.to(ca.output_device()), model=codes.model))


class CodebookEdit(io.ComfyNode):
    """Set the tokens of a region to chosen codes."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent, codes, pattern, region (mask or rectangle), seed."""
        from ..vqgan_core import FILL_PATTERNS

        px = {"min": 0, "max": 16384, "step": 1}
        return io.Schema(
            node_id="VQGAN_CodebookEdit",
            display_name="Codebook Edit",
            category=CATEGORY,
            description="Sets the tokens inside a region to chosen codes. The region is the optional mask "
            "(> 0.5) or else the pixel rectangle x, y, width, height.",
            inputs=[
                VQLatent.Input("latent", tooltip=LATENT_TIP),
                io.String.Input("codes", default="0", tooltip="Code indices, e.g. '12' or '3, 40, 7'."),
                io.Combo.Input("pattern", options=list(FILL_PATTERNS), default="tile",
                               tooltip="tile: repeat the list over the region; random: pick per token (seeded)."),
                io.Int.Input("x", default=0, **px, tooltip="Left edge of the rectangle in pixels (without a mask)."),
                io.Int.Input("y", default=0, **px, tooltip="Top edge of the rectangle in pixels (without a mask)."),
                io.Int.Input("width", default=64, **px, tooltip="Rectangle width in pixels (without a mask)."),
                io.Int.Input("height", default=64, **px, tooltip="Rectangle height in pixels (without a mask)."),
                io.Int.Input("seed", default=0, min=0, max=2**32 - 1, step=1, control_after_generate=True,
                             tooltip="Seed of the random pattern."),
                io.Mask.Input("mask", optional=True, tooltip="Where to set the codes (> 0.5); instead of the rectangle."),
            ],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def validate_inputs(cls, codes: str | None = "0") -> bool | str:
        """The codes' syntax before the run (the codebook's size is checked when the latent arrives)."""
        if codes is None:  # a linked input, known only at run time
            return True
        try:
            parse_codes(codes, None)
        except ValueError as e:
            return f"codes: {e}"
        return True

    @classmethod
    def execute(cls, latent: Latent, codes: str, pattern: str, x: int, y: int, width: int, height: int,
                seed: int, mask: torch.Tensor | None = None) -> io.NodeOutput:
        """Replace the masked tokens' latent vectors by the chosen codebook vectors."""
        from ..vqgan_core import edit_region, pick_codes

        model = latent.model
        chosen = parse_codes(codes, model.codebook.shape[0])
        region = region_mask(latent, mask, x, y, width, height)
        count = int(region.sum())
        if count == 0:
            raise ValueError("The edit region is empty: it lies outside the image or the mask is all black.")
        z = edit_region(latent.z, model.codebook, region, pick_codes(chosen, count, pattern, seed))
        return io.NodeOutput(Latent(z=z, model=model))
