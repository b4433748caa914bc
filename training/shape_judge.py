"""A pixel judge for shapes-world images: which colours, how many blobs, which shape (no model involved).

Why: the offline demo's images must be judged by what they show, never by the demo CLIP's own score. The
judge reads an RGB image against a caption's three words (foreground colour, shape, background colour):

* every pixel gets the nearest :data:`training.shapes.PALETTE` colour (RGB distance);
* **background right**: the background colour covers the most pixels;
* **foreground present**: the foreground colour covers at least :data:`MIN_FG` of the pixels;
* **one dominant blob**: the largest 4-connected region of foreground pixels holds at least :data:`MIN_BLOB`
  of them;
* **shape**: the largest region (holes filled) is compared with upright circle / square / triangle templates
  of the same area and centroid (small shifts, scales and rotations of up to 15 degrees tried); the best
  intersection-over-union names the shape, and it must reach :data:`MIN_IOU`.

Checked on real shapes-world drawings by ``bench/demo_quality.py`` (it prints that accuracy first).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np
import torch

from training.shapes import PALETTE, SHAPES
from vqgan_core import nearest_code

NAMES: list[str] = list(PALETTE)
RGB = np.array([PALETTE[n] for n in NAMES], dtype=np.float32)
MIN_FG = 0.05
MIN_BLOB = 0.85
MIN_IOU = 0.7


def palette_labels(img: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 (or float 0-255) -> [H,W] index into :data:`NAMES` of the nearest palette colour."""
    px = torch.from_numpy(np.asarray(img, dtype=np.float32).reshape(-1, 3))
    return nearest_code(px, torch.from_numpy(RGB)).numpy().reshape(np.shape(img)[:2])


def components(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """4-connected labelling: ([H,W] int labels, 0 = outside the mask, 1.. regions), sizes of regions 1.. in order."""
    h, w = mask.shape
    lab = np.zeros((h, w), dtype=np.int32)
    sizes: list[int] = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if lab[y0, x0]:
            continue
        sizes.append(0)
        k = len(sizes)
        lab[y0, x0] = k
        q = deque([(y0, x0)])
        while q:
            y, x = q.popleft()
            sizes[-1] += 1
            for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not lab[yy, xx]:
                    lab[yy, xx] = k
                    q.append((yy, xx))
    return lab, sizes


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask plus every region of its complement that does not touch the image border."""
    lab, _ = components(~mask)
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])).tolist()) - {0}
    return mask | ((lab > 0) & ~np.isin(lab, list(border)))


_ROT = np.radians([-15.0, -7.5, 0.0, 7.5, 15.0])
_SCALE = np.array([0.85, 1.0, 1.15])
_SHIFT = np.array([-1.0, 0.0, 1.0])


def _templates(shape: str, area: float, cy: float, cx: float, h: int, w: int) -> np.ndarray:
    """[K,H,W] bool: upright ``shape`` masks of area ~``area`` around (cy, cx), over shifts, scales, rotations."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    rots = _ROT if shape != "circle" else np.zeros(1)
    dy, dx, sc, th = (a.ravel()[:, None, None] for a in np.meshgrid(_SHIFT, _SHIFT, _SCALE, rots, indexing="ij"))
    y, x = ys[None] - (cy + dy), xs[None] - (cx + dx)
    c, s = np.cos(th), np.sin(th)
    u, v = c * x + s * y, -s * x + c * y  # the point in the template's own (unrotated) frame
    a = area * sc
    if shape == "circle":
        return u * u + v * v <= a / math.pi
    if shape == "square":
        half = np.sqrt(a) / 2
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":  # apex up (y grows downwards), centroid at the centre, as training.shapes draws it
        r = np.sqrt(a / (3 * math.sqrt(3) / 4))
        inside = np.ones_like(u, dtype=bool)
        for ang in (90.0, 210.0, 330.0):  # outward normals of the three edges, at distance r/2 from the centre
            nx, ny = math.cos(math.radians(ang)), math.sin(math.radians(ang))
            inside &= u * nx + v * ny <= r / 2
        return inside
    raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}")


def classify_shape(mask: np.ndarray) -> tuple[str, dict[str, float]]:
    """Best-matching shape of one region (bool [H,W]) and each shape's best IoU."""
    m = fill_holes(mask)
    area = float(m.sum())
    if area == 0:
        return "none", dict.fromkeys(SHAPES, 0.0)
    ys, xs = np.nonzero(m)
    cy, cx = float(ys.mean()) + 0.5, float(xs.mean()) + 0.5
    ious = {}
    for s in SHAPES:
        t = _templates(s, area, cy, cx, *m.shape)
        inter = (t & m[None]).sum((1, 2))
        union = (t | m[None]).sum((1, 2))
        ious[s] = float((inter / np.maximum(union, 1)).max())
    return max(ious, key=ious.get), ious


@dataclass
class Verdict:
    """What the judge saw in one image for one (fg, shape, bg) caption."""

    bg_share: float
    fg_share: float
    blob_share: float  # share of the foreground pixels in the largest region
    shape_seen: str
    iou: float  # the seen shape's IoU
    bg_right: bool
    fg_present: bool
    one_blob: bool
    shape_right: bool

    @property
    def all_four(self) -> bool:
        return self.bg_right and self.fg_present and self.one_blob and self.shape_right

    def as_dict(self) -> dict:
        return {**asdict(self), "all_four": self.all_four}


def judge(img: np.ndarray, fg: str, shape: str, bg: str) -> Verdict:
    """Judge one [H,W,3] uint8 image against "a {fg} {shape} on a {bg} background"."""
    labels = palette_labels(img)
    counts = np.bincount(labels.ravel(), minlength=len(NAMES)) / labels.size
    fgm = labels == NAMES.index(fg)
    lab, sizes = components(fgm)
    blob_share = max(sizes) / sum(sizes) if sizes else 0.0
    seen, ious = classify_shape(lab == 1 + int(np.argmax(sizes))) if sizes else ("none", {shape: 0.0})
    fg_share = float(counts[NAMES.index(fg)])
    return Verdict(
        bg_share=float(counts[NAMES.index(bg)]), fg_share=fg_share, blob_share=blob_share, shape_seen=seen,
        iou=ious.get(seen, 0.0),
        bg_right=int(np.argmax(counts)) == NAMES.index(bg), fg_present=fg_share >= MIN_FG,
        one_blob=blob_share >= MIN_BLOB, shape_right=seen == shape and ious.get(seen, 0.0) >= MIN_IOU)


def colour_swap(a: Verdict, b: Verdict) -> bool:
    """Images of "X on Y" (``a``) and "Y on X" (``b``): each one's background colour is at least twice as
    frequent there as in the other image (where it is the foreground)."""
    return a.bg_share > 2 * b.fg_share and b.bg_share > 2 * a.fg_share
