"""Data of the demo CLIP: shapes-world images and attributes, hard negative captions, distractor images, augmentation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from training.data import coco_image_path, read_coco
from training.shapes import CAPTION_TEMPLATES, PALETTE, SHAPES, sample_size, shape_polygon
from vqgan_core import warp


def load_coco(data: Path, split: str) -> tuple[torch.Tensor, list[dict]]:
    """Images as uint8 [N,3,H,W] plus the per-image ``shapes`` attributes from a shapes-world COCO json."""
    ann = data / "annotations" / f"captions_{split}2017.json"
    if not ann.is_file():
        raise FileNotFoundError(f"{ann} not found; make the dataset with `python -m training.shapes`")
    images, _ = read_coco(ann)
    if not images:
        raise ValueError(f"{ann}: 'images' is empty")
    for i, im in enumerate(images):
        if "shapes" not in im:
            raise ValueError(f"{ann}: images[{i}] has no 'shapes' attributes; make it with `python -m training.shapes`")
    img_dir = data / f"{split}2017"
    imgs = []
    for i, im in enumerate(images):
        path = coco_image_path(img_dir, im["file_name"], f"{ann}: images[{i}]")
        try:
            with Image.open(path) as f:
                imgs.append(np.asarray(f.convert("RGB")))
        except (OSError, ValueError) as e:  # missing, unreadable or not an image
            raise ValueError(f"{ann}: images[{i}] ({path}) cannot be read: {e}") from None
    if len({a.shape for a in imgs}) > 1:
        raise ValueError(f"{img_dir}: images differ in size {sorted({a.shape[:2] for a in imgs})[:4]}; "
                         "shapes-world images all have one size")
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(), [im["shapes"] for im in images]


TEMPLATES = CAPTION_TEMPLATES


def hard_negative(a: dict, rng: np.random.Generator, shape_focus: float = 0.25) -> dict:
    """The same attributes with exactly one thing wrong: shape (probability ``shape_focus``), fg, bg or a swap."""
    colours = list(PALETTE)
    rest = (1 - shape_focus) / 3
    kind = int(rng.choice(4, p=[rest, rest, shape_focus, rest]))
    n = dict(a)
    if kind == 0:
        n["fg"] = rng.choice([c for c in colours if c not in (a["fg"], a["bg"])])
    elif kind == 1:
        n["bg"] = rng.choice([c for c in colours if c not in (a["fg"], a["bg"])])
    elif kind == 2:
        n["shape"] = rng.choice([s for s in SHAPES if s != a["shape"]])
    else:
        n["fg"], n["bg"] = a["bg"], a["fg"]
    return n


def key(a: dict) -> tuple[str, str, str]:
    return a["fg"], a["bg"], a["shape"]


def _mask(shapes: list[tuple[str, float, float, float]], size: int) -> np.ndarray:
    """Anti-aliased coverage mask in [0,1] of some (shape, cx, cy, r) drawn together."""
    s = 4
    img = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(img)
    for shape, cx, cy, r in shapes:
        poly = shape_polygon(shape, cx * s, cy * s, r * s)
        if poly is None:
            draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
        else:
            draw.polygon(poly, fill=255)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255


#: Near misses: pictures that are not "one X" but that guidance drifts to and a shape CLIP trained only on
#: the three shapes accepts: oblongs (aspect 1.4-2.4), squares with rounded corners (corner radius 45-90 % of
#: the half side), ellipses (aspect 1.4-2.2) and pairs (two shapes of one kind side by side).
NEAR_MISSES: tuple[str, ...] = ("oblong", "rounded", "ellipse", "pair")


def near_miss_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased [H,W] mask of one :data:`NEAR_MISSES` outline, with the dataset's equal-area size law."""
    if kind not in NEAR_MISSES:
        raise ValueError(f"unknown near miss {kind!r}; valid: {', '.join(NEAR_MISSES)}")
    if kind == "pair":  # two of one shape, each 0.6-0.9 of a single shape's size, apart (never touching)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        r = min(sample_size(shape, rng, size) * float(rng.uniform(0.6, 0.9)), 0.22 * size)  # so that two fit
        while True:
            for _ in range(100):
                a, b = rng.uniform(r, size - r, 2), rng.uniform(r, size - r, 2)
                if np.hypot(*(a - b)) > 2.6 * r:  # a square's corner reaches 1.2 r from its centre
                    return _mask([(shape, *a, r), (shape, *b, r)], size)
            r *= 0.9
    s = 4
    area = math.pi * (float(rng.uniform(0.15, 0.32)) * size) ** 2
    aspect = {"oblong": rng.uniform(1.4, 2.4), "rounded": rng.uniform(1.0, 1.25), "ellipse": rng.uniform(1.4, 2.2)}[kind]
    fill = math.pi / 4 if kind == "ellipse" else 1.0  # share of the bounding box the outline covers
    h = math.sqrt(area / (aspect * fill))
    w = min(aspect * h, size * 0.9)
    if rng.uniform() < 0.5:
        w, h = h, w
    cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
    img = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(img)
    box = [(cx - w / 2) * s, (cy - h / 2) * s, (cx + w / 2) * s, (cy + h / 2) * s]
    if kind == "ellipse":
        draw.ellipse(box, fill=255)
    elif kind == "rounded":
        draw.rounded_rectangle(box, radius=float(rng.uniform(0.45, 0.9)) * min(w, h) / 2 * s, fill=255)
    else:
        draw.rectangle(box, fill=255)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255


def mask_bank(n: int, size: int, rng: np.random.Generator, law: str = "area",
              near_misses: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Shape masks for distractor images: one bank per single shape type, and one of 2-4 scattered shapes.

    Sizes follow ``training.shapes.sample_size`` (``law``), as in the dataset the model is trained on.
    ``near_misses`` (names from :data:`NEAR_MISSES`) adds a bank "near" of those outlines in turn (drawn after
    the others, so the other banks are the same either way).
    """
    bank: dict[str, list[np.ndarray]] = {s: [] for s in (*SHAPES, "multi")}
    for _ in range(n):
        for s in SHAPES:
            r = sample_size(s, rng, size, law)
            m = min(r * 0.9, size / 2)
            bank[s].append(_mask([(s, *rng.uniform(m, size - m, 2), r)], size))
        parts = []
        for _ in range(int(rng.integers(2, 5))):
            r = rng.uniform(0.08, 0.22) * size
            parts.append((SHAPES[int(rng.integers(3))], *rng.uniform(r, size - r, 2), r))
        bank["multi"].append(_mask(parts, size))
    if near_misses:
        bank["near"] = [near_miss_mask(near_misses[i % len(near_misses)], size, rng) for i in range(n)]
    return {k: torch.from_numpy(np.stack(v))[:, None] for k, v in bank.items()}


def distractors(attrs: list[dict], bank: dict[str, torch.Tensor], g: torch.Generator, size: int,
                shape_focus: float = 0.2, near_miss: float = 0.0) -> torch.Tensor:
    """One image per sample with the sample's colours but the wrong content, as extra negatives for its text.

    Kinds: another shape (probability ``shape_focus``), a near miss (probability ``near_miss``: one of the bank's
    "near" masks, :data:`NEAR_MISSES`), several small shapes, an 8x8-block mosaic or an
    irregular blob (the patchwork that CLIP-guided generation tends to produce), or the colours swapped.
    Teaching the text tower to rank these below the true image is what makes guidance prefer one clean shape.
    Returns [B,3,H,W] in [0,1].
    """
    if near_miss and "near" not in bank:
        raise ValueError("near_miss > 0 needs a mask bank made with near_misses (training.clip_data.NEAR_MISSES)")
    out = []
    for a in attrs:
        fg = torch.tensor(PALETTE[a["fg"]], dtype=torch.float32).view(3, 1, 1) / 255
        bg = torch.tensor(PALETTE[a["bg"]], dtype=torch.float32).view(3, 1, 1) / 255
        rest = (1 - shape_focus - near_miss) / 4
        weights = [shape_focus, rest, rest, rest, rest] + ([near_miss] if near_miss else [])
        kind = int(torch.multinomial(torch.tensor(weights), 1, generator=g))
        if kind == 5:
            m = bank["near"][int(torch.randint(len(bank["near"]), (1,), generator=g))]
        elif kind == 0:
            other = [s for s in SHAPES if s != a["shape"]][int(torch.randint(2, (1,), generator=g))]
            m = bank[other][int(torch.randint(len(bank[other]), (1,), generator=g))]
        elif kind == 1:
            m = bank["multi"][int(torch.randint(len(bank["multi"]), (1,), generator=g))]
        elif kind == 2:
            p = 0.1 + 0.4 * torch.rand(1, generator=g)
            m = (torch.rand(1, 1, 8, 8, generator=g) < p).float()
            m = F.interpolate(m, size=(size, size), mode="nearest")[0]
        elif kind == 3:
            n = int(torch.randint(3, 7, (1,), generator=g))
            noise = F.interpolate(torch.randn(1, 1, n, n, generator=g), size=(size, size), mode="bicubic")[0]
            q = torch.quantile(noise.flatten(), 1 - (0.1 + 0.3 * float(torch.rand(1, generator=g))))
            m = torch.sigmoid((noise - q) * 8)
        else:
            r = a["r"] if "r" in a else 0.25 * size
            m = torch.from_numpy(_mask([(a["shape"], a.get("cx", size / 2), a.get("cy", size / 2), r)], size))[None]
            fg, bg = bg, fg
        out.append(bg + m * (fg - bg))
    return torch.stack(out)


def augment(x: torch.Tensor, g: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """Generation-like augmentation on [B,3,H,W] in [0,1]: flip, affine (border fill, never black), jitter, blur, noise.

    Hue is never changed: colour names are the labels. ``noise``: the largest per-image Gaussian noise std.
    """
    b = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    flip = u(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    ang = (u(b) - 0.5) * math.radians(30)
    scale = 0.85 + 0.3 * u(b)
    tx, ty = (u(b) - 0.5) * 0.3, (u(b) - 0.5) * 0.3
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1),
                         torch.stack([zero, zero, one], 1)], 1)  # output -> source, in [-1, 1] (half-pixel) units
    h, w = x.shape[-2:]
    to_unit = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    to_pixel = torch.tensor([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]])
    x = warp(x, to_pixel @ theta @ to_unit, "border")  # the same map in pixels (centres at whole numbers)
    bright = 1 + (u(b, 1, 1, 1) - 0.5) * 0.2
    mean = x.mean((1, 2, 3), keepdim=True)
    contrast = 1 + (u(b, 1, 1, 1) - 0.5) * 0.2
    x = (x - mean) * contrast + mean * bright
    blur = u(b) < 0.3
    k = torch.tensor([0.25, 0.5, 0.25])
    xb = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), (k[:, None] * k[None, :]).expand(3, 1, 3, 3), groups=3)
    x = torch.where(blur[:, None, None, None], xb, x)
    x = x + torch.randn(x.shape, generator=g) * noise * u(b, 1, 1, 1)
    return x.clamp(0, 1)


