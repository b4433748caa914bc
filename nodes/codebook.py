"""Codebook nodes: Codebook Lookup (latent -> codes), Codes To Latent, Codebook Edit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from . import comfy_adapters as ca
from .types import Codes, Latent, VQCodes, VQLatent

CATEGORY = "vqgan_clip/codebook"


def parse_codes(text: str, n_embed: int) -> list[int]:
    """Parse '12, 40 7' into code indices, checking the range in the user's words."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ValueError("Enter at least one code index (e.g. '12' or '3, 40, 7').")
    codes = []
    for p in parts:
        try:
            c = int(p)
        except ValueError:
            raise ValueError(f"'{p}' is not a code index: use whole numbers separated by commas.") from None
        if not 0 <= c < n_embed:
            raise ValueError(f"Code {c} does not exist: this VQGAN's codebook has codes 0 to {n_embed - 1}.")
        codes.append(c)
    return codes


def code_colors(indices: torch.Tensor, n_embed: int) -> torch.Tensor:
    """False-colour [B,h,w] codes as [B,3,h,w] in [0,1] (a fixed hash so equal codes share a colour)."""
    idx = indices.long()
    r = (idx * 97 % 256).float() / 255
    g = (idx * 57 % 256).float() / 255
    b = (idx * 23 % 256).float() / 255
    return torch.stack([r, g, b], dim=1)


def region_mask(latent: Latent, mask: torch.Tensor | None, x: int, y: int, width: int, height: int) -> torch.Tensor:
    """Boolean [B,h,w] token mask from a MASK (any size, > 0.5) or a pixel rectangle."""
    b, _, h, w = latent.z.shape
    if mask is not None:
        m = mask if mask.ndim == 3 else mask.unsqueeze(0)
        m = F.interpolate(m.unsqueeze(1).float(), size=(h, w), mode="area")[:, 0] > 0.5
        return m.expand(b, h, w) if m.shape[0] == 1 else m[:b]
    f = latent.model.downsample_factor
    x0, y0 = x // f, y // f
    x1, y1 = -(-(x + width) // f), -(-(y + height) // f)
    m = torch.zeros(b, h, w, dtype=torch.bool)
    m[:, max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = True
    return m


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
            inputs=[VQLatent.Input("latent")],
            outputs=[VQCodes.Output(display_name="codes"), io.Image.Output(display_name="code_map"),
                     io.String.Output(display_name="codes_text")],
        )

    @classmethod
    def execute(cls, latent: Latent) -> io.NodeOutput:
        """Quantise, return indices, a colour map (one pixel per token) and the grid text."""
        model = latent.model
        with torch.no_grad():
            _, idx = model.quantize_latent(latent.z.to(ca.compute_device()))
        idx = idx.to(ca.output_device()).long()
        n = model.codebook.shape[0]
        text = "\n".join(" ".join(str(int(c)) for c in row) for row in idx[0])
        return io.NodeOutput(Codes(indices=idx, model=model), ca.bchw_to_image(code_colors(idx, n)), text)


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
            inputs=[VQCodes.Input("codes")],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, codes: Codes) -> io.NodeOutput:
        """Look the codes up in the codebook."""
        with torch.no_grad():
            z = codes.model.indices_to_latent(codes.indices.to(ca.compute_device()))
        return io.NodeOutput(Latent(z=z.to(ca.output_device()), model=codes.model))


class CodebookEdit(io.ComfyNode):
    """Set the tokens of a region to chosen codes."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent, codes, pattern, region (mask or rectangle), seed."""
        px = {"min": 0, "max": 16384, "step": 1}
        return io.Schema(
            node_id="VQGAN_CodebookEdit",
            display_name="Codebook Edit",
            category=CATEGORY,
            description="Sets the tokens inside a region to chosen codes. The region is the optional mask "
            "(> 0.5) or else the pixel rectangle x, y, width, height.",
            inputs=[
                VQLatent.Input("latent"),
                io.String.Input("codes", default="0", tooltip="Code indices, e.g. '12' or '3, 40, 7'."),
                io.Combo.Input("pattern", options=["tile", "random"], default="tile",
                               tooltip="tile: repeat the list over the region; random: pick per token (seeded)."),
                io.Int.Input("x", default=0, **px),
                io.Int.Input("y", default=0, **px),
                io.Int.Input("width", default=64, **px),
                io.Int.Input("height", default=64, **px),
                io.Int.Input("seed", default=0, min=0, max=2**32 - 1, step=1, control_after_generate=True),
                io.Mask.Input("mask", optional=True),
            ],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, latent: Latent, codes: str, pattern: str, x: int, y: int, width: int, height: int,
                seed: int, mask: torch.Tensor | None = None) -> io.NodeOutput:
        """Replace the masked tokens' latent vectors by the chosen codebook vectors."""
        model = latent.model
        cb = model.codebook.detach().to(latent.z.device, latent.z.dtype)
        chosen = torch.tensor(parse_codes(codes, cb.shape[0]))
        region = region_mask(latent, mask, x, y, width, height)
        count = int(region.sum())
        if count == 0:
            raise ValueError("The edit region is empty: it lies outside the image or the mask is all black.")
        if pattern == "tile":
            pick = chosen.repeat(-(-count // len(chosen)))[:count]
        else:
            gen = torch.Generator().manual_seed(int(seed))
            pick = chosen[torch.randint(len(chosen), (count,), generator=gen)]
        z = latent.z.clone().movedim(1, -1)  # [B,h,w,C]
        z[region] = cb[pick]
        return io.NodeOutput(Latent(z=z.movedim(-1, 1).contiguous(), model=model))
