"""The VQGAN: encoder, quantizer and decoder with taming-transformers' parameter names.

There is no loss, discriminator or Lightning in here (training lives in ``training/``): the model is what a
generator or a ComfyUI node needs, and released weights load with ``strict=True`` once ``loss.*`` is dropped.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import VQGANConfig
from .encoder_decoder import Decoder, Encoder
from .quantize import build_quantizer


class VQGAN(nn.Module):
    """Image <-> grid of codebook entries.

    Shape:
        - image: ``[B, 3, H, W]`` in ``[-1, 1]``, H and W multiples of ``downsample_factor``
        - latent ``z_q``: ``[B, embed_dim, H/f, W/f]``; indices: ``[B, H/f, W/f]`` int64
    """

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = build_quantizer(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        if config.n_labels:
            # VQSegmentationModel's random projection for visualising label maps; kept so its keys round-trip.
            self.register_buffer("colorize", torch.randn(3, config.n_labels, 1, 1))

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each axis (16 for the f16 models)."""
        return self.config.downsample_factor

    @property
    def codebook(self) -> torch.Tensor:
        """``[n_embed, embed_dim]`` code vectors, whatever the quantizer type."""
        return self.quantize.codebook

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent grid ``(h, w)`` for an image size, or a ValueError naming the nearest valid sizes."""
        f = self.downsample_factor
        for name, v in (("height", height), ("width", width)):
            if v <= 0:
                raise ValueError(f"image {name} must be positive (a multiple of {f}), got {v}")
            if v % f:
                lo, hi = max(f, v // f * f), (v // f + 1) * f
                raise ValueError(
                    f"image {name} {v} is not a multiple of the downsampling factor {f}; use {lo} or {hi} "
                    "(or pad/crop the image first)"
                )
        return height // f, width // f

    # -- encoding -----------------------------------------------------------------------------------------
    def encode_to_prequant(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantization latent ``h = quant_conv(encoder(x))``."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected an image batch [B, {self.config.in_channels}, H, W], got {list(x.shape)}")
        self.latent_size(x.shape[-2], x.shape[-1])
        return self.quant_conv(self.encoder(x.to(self.dtype)))

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Image -> ``(z_q, indices)``. Deterministic in eval mode (Gumbel: argmax unless ``generator`` given;
        nearest-neighbour VQ has nothing to sample and ignores it)."""
        h = self.encode_to_prequant(x)
        if generator is not None and self.config.quantizer == "gumbel":
            z_q, _, idx = self.quantize(h, generator=generator)
        else:
            z_q, _, idx = self.quantize(h)
        return z_q, idx

    # -- decoding -----------------------------------------------------------------------------------------
    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, embed_dim, h, w]`` -> image in about ``[-1, 1]`` (not clamped, as in taming)."""
        if z_q.dim() != 4 or z_q.shape[1] != self.config.embed_dim:
            raise ValueError(f"expected a latent [B, {self.config.embed_dim}, h, w], got {list(z_q.shape)}")
        return self.decoder(self.post_quant_conv(z_q.to(self.dtype)))

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, h, w]`` -> ``z_q`` (the working form of taming's broken ``decode_code``)."""
        return self.quantize.lookup(indices)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, h, w]`` -> image."""
        return self.decode(self.indices_to_latent(indices))

    def quantize_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest-code snap with a straight-through gradient to ``z``: the VQGAN+CLIP synthesis step."""
        return self.quantize.quantize_latent(z)

    # -- training -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training forward: ``(reconstruction, quantizer loss, indices)``."""
        z_q, qloss, idx = self.quantize(self.encode_to_prequant(x))
        return self.decode(z_q), qloss, idx

    def get_last_layer(self) -> torch.Tensor:
        """``decoder.conv_out.weight``: the layer taming's adaptive GAN weight is computed on."""
        return self.decoder.conv_out.weight

    def to_channels_last(self) -> VQGAN:
        """Switch convolutions to NHWC memory format (faster on tensor cores)."""
        return self.to(memory_format=torch.channels_last)
