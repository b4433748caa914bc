"""Synthetic "shapes world" captioned dataset in COCO captions layout.

Coloured shapes (circle / square / triangle) on a plain coloured background, with captions such as
"a red circle on a blue background". It exists so that the demo VQGAN and the demo CLIP can be trained
offline by the project's own code, and so that tests can check that generated images match their text.

Layout written by ``python -m training.shapes --out DIR``::

    DIR/train2017/000000000001.png ...
    DIR/val2017/000000100001.png ...
    DIR/annotations/captions_train2017.json   # COCO schema: info, licenses, images, annotations
    DIR/annotations/captions_val2017.json

Each ``images`` entry also carries a ``shapes`` dict (fg, bg, shape, cx, cy, r) so evaluations can use the
ground truth without parsing captions.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vqgan_core import atomic_write_bytes

logger = logging.getLogger(__name__)

#: Palette of named colours (RGB 0-255). Chosen far apart so nearest-colour pixel statistics are unambiguous.
#: No black: zero padding from geometric augmentations must never look like a caption colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 170, 60),
    "cyan": (40, 205, 215),
    "blue": (35, 60, 215),
    "purple": (135, 45, 180),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {fg} {shape} on a {bg} background",
    "a {bg} background with a {fg} {shape}",
    "{fg} {shape}, {bg} background",
)
_SUPERSAMPLE = 4
_COLOUR_JITTER = 12  # +- per channel, so models do not memorise eight exact RGB values


@dataclass(frozen=True)
class ShapeSpec:
    """One image's content: what to draw and where (centre and radius in pixels of the final image)."""

    fg: str
    bg: str
    shape: str
    cx: float
    cy: float
    r: float

    def caption(self, template: int = 0) -> str:
        """Caption from one of :data:`CAPTION_TEMPLATES` (0 is the canonical "a X s on a Y background")."""
        return CAPTION_TEMPLATES[template].format(fg=self.fg, bg=self.bg, shape=self.shape)


def caption_words() -> list[str]:
    """Every word any caption can contain (used to build the demo CLIP's small BPE vocabulary)."""
    words = set()
    for t in CAPTION_TEMPLATES:
        words.update(t.replace(",", " ").replace("{fg}", "").replace("{bg}", "").replace("{shape}", "").split())
    words.update(PALETTE)
    words.update(SHAPES)
    return sorted(words)


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator | None) -> tuple[int, int, int]:
    if rng is None:
        return rgb
    d = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
    return tuple(int(np.clip(c + int(e), 0, 255)) for c, e in zip(rgb, d, strict=True))  # type: ignore[return-value]


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of a square / upright triangle with circumradius-like size ``r``; None for a circle."""
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}")


def render(spec: ShapeSpec, size: int = 64, rng: np.random.Generator | None = None) -> Image.Image:
    """Draw one anti-aliased image (supersampled then box-downsampled); ``rng`` adds colour jitter."""
    if spec.fg not in PALETTE or spec.bg not in PALETTE:
        raise ValueError(f"colours must be in PALETTE ({', '.join(PALETTE)}); got fg={spec.fg!r} bg={spec.bg!r}")
    s = _SUPERSAMPLE
    img = Image.new("RGB", (size * s, size * s), _jitter(PALETTE[spec.bg], rng))
    draw = ImageDraw.Draw(img)
    fg = _jitter(PALETTE[spec.fg], rng)
    cx, cy, r = spec.cx * s, spec.cy * s, spec.r * s
    poly = shape_polygon(spec.shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    else:
        draw.polygon(poly, fill=fg)
    return img.resize((size, size), Image.Resampling.BOX)


#: Area of each shape drawn by :func:`shape_polygon` with size ``r``, in units of ``r**2``.
SHAPE_AREA: dict[str, float] = {"circle": math.pi, "square": 1.7 ** 2, "triangle": 3 * math.sqrt(3) / 4}
#: How :func:`sample_spec` draws sizes. "area" (default): the shape's AREA has one distribution for every shape
#: (radius of the equal-area circle 15-32 % of the side), so a model cannot tell shapes apart by how many pixels
#: they cover and must look at the outline. "radius" (the first datasets): ``r`` 15-40 % of the side for every
#: shape, which made triangles 2.4x smaller than circles on average; the first demo CLIP learned that shortcut.
SIZE_LAWS: tuple[str, ...] = ("area", "radius")


def sample_size(shape: str, rng: np.random.Generator, size: int = 64, law: str = "area") -> float:
    """The size ``r`` (as in :func:`shape_polygon`) of one random shape under a :data:`SIZE_LAWS` rule."""
    if law == "radius":
        return float(rng.uniform(0.15, 0.40)) * size
    if law != "area":
        raise ValueError(f"unknown size law {law!r}; valid: {', '.join(SIZE_LAWS)}")
    r_eq = float(rng.uniform(0.15, 0.32)) * size  # radius of the circle with the same area
    return r_eq * math.sqrt(math.pi / SHAPE_AREA[shape])


def sample_spec(rng: np.random.Generator, size: int = 64, law: str = "area") -> ShapeSpec:
    """Random colours (fg != bg), shape, size (:func:`sample_size`), centre keeping the shape inside."""
    names = list(PALETTE)
    fg, bg = rng.choice(len(names), size=2, replace=False)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    r = sample_size(shape, rng, size, law)
    margin = min(r * 0.9, size / 2)
    cx = float(rng.uniform(margin, size - margin))
    cy = float(rng.uniform(margin, size - margin))
    return ShapeSpec(names[int(fg)], names[int(bg)], shape, cx, cy, r)


def _write_split(out: Path, split: str, n: int, size: int, rng: np.random.Generator, first_id: int,
                 law: str = "area") -> None:
    img_dir = out / f"{split}2017"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = first_id * 10
    for k in range(n):
        image_id = first_id + k
        spec = sample_spec(rng, size, law)
        name = f"{image_id:012d}.png"
        render(spec, size, rng).save(img_dir / name, optimize=True)
        images.append({
            "id": image_id, "file_name": name, "width": size, "height": size,
            "license": 0, "date_captured": "",
            "shapes": {"fg": spec.fg, "bg": spec.bg, "shape": spec.shape,
                       "cx": round(spec.cx, 2), "cy": round(spec.cy, 2), "r": round(spec.r, 2)},
        })
        # Canonical caption always first, plus one paraphrase (COCO images carry several captions).
        for t in (0, 1 + int(rng.integers(len(CAPTION_TEMPLATES) - 1))):
            annotations.append({"id": ann_id, "image_id": image_id, "caption": spec.caption(t)})
            ann_id += 1
    doc = {
        "info": {"description": "shapes world: synthetic captioned shapes (vqgan_core demo)", "version": "1.0"},
        "licenses": [{"id": 0, "name": "synthetic, public domain", "url": ""}],
        "images": images,
        "annotations": annotations,
    }
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(ann_dir / f"captions_{split}2017.json", json.dumps(doc))
    logger.info("wrote %d %s images to %s", n, split, img_dir)


def make_dataset(out: str | Path, n_train: int, n_val: int, size: int = 64, seed: int = 0,
                 size_law: str = "area") -> Path:
    """Write the whole dataset; the same arguments always give byte-identical annotations and pixels."""
    if size < 16:
        raise ValueError(f"--size must be >= 16 pixels, got {size}")
    if size_law not in SIZE_LAWS:
        raise ValueError(f"--size-law must be one of {', '.join(SIZE_LAWS)}, got {size_law!r}")
    out = Path(out)
    train_seq, val_seq = np.random.SeedSequence(seed).spawn(2)
    _write_split(out, "train", n_train, size, np.random.default_rng(train_seq), 1, size_law)
    _write_split(out, "val", n_val, size, np.random.default_rng(val_seq), 100_000_001, size_law)
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m training.shapes --out DIR --n-train N --n-val M --size 64 --seed S [--size-law area]``."""
    p = argparse.ArgumentParser(prog="python -m training.shapes", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (COCO layout)")
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--n-val", type=int, default=600)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size-law", choices=SIZE_LAWS, default="area",
                   help="area: every shape's area has one distribution (default); radius: the first datasets' rule")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    make_dataset(a.out, a.n_train, a.n_val, a.size, a.seed, a.size_law)


if __name__ == "__main__":
    main()
