"""Initial latents: random codes, an init image, or noise images (pixels, gradient, Perlin).

Every random draw takes an explicit ``torch.Generator`` so the same seed gives the same start. The
classic script seeded *after* drawing its initial codes, so its first image was never reproducible.
Noise images are drawn with a CPU generator (identical on every device) and then encoded.
"""

from __future__ import annotations

import math

import torch

from ..media.image_io import fit_image
from ..util.registry import Registry

__all__ = ["NOISE_IMAGES", "encode_image01", "gradient_image", "init_latent", "perlin_image", "pixel_noise_image", "random_code_latent"]

NOISE_IMAGES: Registry = Registry("init noise")


def random_code_latent(vqgan, batch: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random codebook entries as a ``[B, C, h, w]`` latent (classic default)."""
    cb = vqgan.codebook.detach()
    idx = torch.randint(cb.shape[0], (batch, h, w), generator=generator, device=generator.device)
    return cb.float()[idx.to(cb.device)].permute(0, 3, 1, 2).contiguous()


@NOISE_IMAGES.register("pixels")
def pixel_noise_image(batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform random RGB pixels in ``[0, 1]``, ``[B, 3, H, W]``."""
    return torch.rand(batch, 3, height, width, generator=generator)


@NOISE_IMAGES.register("gradient")
def gradient_image(batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Per-channel linear ramp between two random levels, horizontal or vertical (classic ``gradient``)."""
    start = torch.rand(batch, 3, 1, 1, generator=generator)
    stop = torch.rand(batch, 3, 1, 1, generator=generator)
    horizontal = torch.rand(batch, 3, 1, 1, generator=generator) < 0.5
    tx = torch.linspace(0, 1, width).view(1, 1, 1, width)
    ty = torch.linspace(0, 1, height).view(1, 1, height, 1)
    t = torch.where(horizontal, tx.expand(batch, 3, height, width), ty.expand(batch, 3, height, width))
    return start + (stop - start) * t


def _perlin_octave(batch: int, height: int, width: int, res: int, generator: torch.Generator) -> torch.Tensor:
    """One octave of 2-D gradient noise on a ``res x res`` lattice, ``[B, 3, H, W]`` in about [-1, 1]."""
    angles = torch.rand(batch, 3, res + 1, res + 1, generator=generator) * (2 * math.pi)
    gx, gy = angles.cos(), angles.sin()
    ys = torch.linspace(0, res, height + 1)[:-1] + res / (2 * height)
    xs = torch.linspace(0, res, width + 1)[:-1] + res / (2 * width)
    y0, x0 = ys.floor().long().clamp(max=res - 1), xs.floor().long().clamp(max=res - 1)
    fy, fx = (ys - y0).view(-1, 1), (xs - x0).view(1, -1)

    def dot(dy: int, dx: int) -> torch.Tensor:
        yy, xx = (y0 + dy).view(-1, 1), (x0 + dx).view(1, -1)
        return gx[..., yy, xx] * (fx - dx) + gy[..., yy, xx] * (fy - dy)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(fx), fade(fy)
    top = torch.lerp(dot(0, 0), dot(0, 1), u)
    bot = torch.lerp(dot(1, 0), dot(1, 1), u)
    return torch.lerp(top, bot, v) * math.sqrt(2)


@NOISE_IMAGES.register("perlin")
def perlin_image(
    batch: int, height: int, width: int, generator: torch.Generator, octaves: int = 4, base_res: int = 2
) -> torch.Tensor:
    """Fractal Perlin noise (pixray's default ``pixels`` init), per channel, in ``[0, 1]``."""
    out = torch.zeros(batch, 3, height, width)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += amp * _perlin_octave(batch, height, width, base_res * 2**o, generator)
        total += amp
        amp *= 0.5
    return (out / total * 0.5 + 0.5).clamp(0, 1)


def encode_image01(vqgan, img01: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> the VQGAN's quantised latent (fp32, no gradient)."""
    dev = vqgan.codebook.device
    with torch.no_grad():
        z_q, _ = vqgan.encode(img01.to(dev) * 2 - 1)
    return z_q.float()


def init_latent(
    vqgan,
    kind: str,
    batch: int,
    height: int,
    width: int,
    generators: list[torch.Generator],
    image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Initial latent ``[B, C, h, w]`` (float32) for ``kind`` in ``random | image | pixels | gradient | perlin``.

    Args:
        vqgan: the VQGAN (only ``codebook``, ``encode``, ``latent_size`` are used).
        kind: init method.
        batch: number of images.
        height: image height (multiple of the downsampling factor).
        width: image width.
        generators: one CPU generator per batch item (item ``b`` equals a solo run with its seed).
        image: ``[1 or B, 3, H, W]`` in [0, 1] for ``kind="image"``; resized/cropped to fit.
    """
    h, w = vqgan.latent_size(height, width)
    if len(generators) != batch:
        raise ValueError(f"need one generator per batch item ({batch}), got {len(generators)}")
    if kind == "random":
        return torch.cat([random_code_latent(vqgan, 1, h, w, g) for g in generators])
    if kind == "image":
        if image is None:
            raise ValueError("init 'image' needs an init image (--init-image FILE)")
        img = fit_image(image, height, width)
        if img.shape[0] not in (1, batch):
            raise ValueError(f"init image batch {img.shape[0]} does not match batch size {batch}")
        return encode_image01(vqgan, img.expand(batch, -1, -1, -1))
    if kind in NOISE_IMAGES:
        make = NOISE_IMAGES.get(kind)
        img = torch.cat([make(1, height, width, g) for g in generators])
        return encode_image01(vqgan, img)
    valid = ", ".join(["random", "image", *NOISE_IMAGES.names()])
    raise ValueError(f"unknown init {kind!r}; valid: {valid}")
