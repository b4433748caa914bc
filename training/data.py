"""Image datasets (COCO 2017 layout or any folder) that never stop a run on a bad file.

Broken, truncated or too-small images are replaced by the next readable one and counted; grayscale, CMYK,
palette, 16-bit and alpha images are converted to RGB (alpha composited on white) and counted. The counts
travel with each batch (workers are separate processes), so the trainer can log them.

Augmentation randomness comes from the sample key ``(index, epoch)`` rather than from worker RNG state, so
a resumed run sees exactly the crops an uninterrupted one would, whatever ``num_workers`` is.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePath, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler

from .config import DataConfig

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_MAX_TRIES = 16  # consecutive unreadable files tolerated before giving up on one sample


def find_images(folder: Path) -> list[Path]:
    """All image files below ``folder`` (recursive, sorted for a deterministic order)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def read_coco(ann: Path) -> tuple[list[dict], list[dict]]:
    """``images`` and ``annotations`` of a COCO annotation file, each entry checked to be an object with its keys.

    Why: a hand-made or damaged file must fail with the file and the entry named, not with a KeyError deep inside.
    """
    try:
        doc = json.loads(ann.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{ann}: not a readable COCO annotation file ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ValueError(f"{ann}: not a COCO annotation file (expected an object with an 'images' list)")
    anns = doc.get("annotations", [])
    if not isinstance(anns, list):
        raise ValueError(f"{ann}: 'annotations' must be a list, got {type(anns).__name__}")
    for i, im in enumerate(doc["images"]):
        where = f"{ann}: images[{i}]"
        if not isinstance(im, dict):
            raise ValueError(f"{where} is a {type(im).__name__}, expected an object with 'id' and 'file_name'")
        for k in ("id", "file_name"):
            if k not in im:
                raise ValueError(f"{where} has no {k!r} key (it has {sorted(im)[:8]})")
        if not isinstance(im["file_name"], str) or not im["file_name"].strip() or "\0" in im["file_name"]:
            raise ValueError(f"{where}: 'file_name' must be a non-empty string, got {im['file_name']!r}")
        if isinstance(im["id"], bool) or not isinstance(im["id"], (int, str)):
            raise ValueError(f"{where}: 'id' must be an integer (or a string), got {im['id']!r}")
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise ValueError(f"{ann}: annotations[{i}] is a {type(a).__name__}, expected an object with 'image_id'")
        if isinstance(a.get("image_id"), (list, dict)):
            raise ValueError(f"{ann}: annotations[{i}]: 'image_id' must be an image id, got {a['image_id']!r}")
    return doc["images"], anns


def coco_image_path(img_dir: Path, file_name: str, where: str) -> Path:
    """``img_dir / file_name``, refused when the name leads outside ``img_dir`` (``..``, absolute paths).

    The check is on the name as written, so a dataset may still keep its files behind symlinks of its own.
    """
    rel = PurePath(file_name)
    if rel.anchor or file_name.startswith(("/", "\\")) or ".." in PurePosixPath(file_name.replace("\\", "/")).parts:
        raise ValueError(
            f"{where}: file_name {file_name!r} points outside the image folder {img_dir}; refusing to read it "
            f"(COCO file names are plain names inside the split folder)"
        )
    return img_dir / rel


def coco_split(root: Path, split: str) -> tuple[list[Path], dict[str, list[str]]]:
    """Image paths and captions of a COCO 2017 split (``train`` or ``val``).

    Uses ``annotations/captions_{split}2017.json`` when present (its ``images`` list, files that are missing
    on disk are dropped with a warning); otherwise every image in ``{split}2017/``.
    """
    img_dir = root / f"{split}2017"
    ann = root / "annotations" / f"captions_{split}2017.json"
    if not ann.is_file():
        return find_images(img_dir), {}
    images, anns = read_coco(ann)
    try:
        order = sorted(range(len(images)), key=lambda i: images[i]["id"])
    except TypeError:
        raise ValueError(f"{ann}: image ids mix numbers and strings; COCO ids are integers") from None
    caps: dict[int, list[str]] = {}
    for a in anns:
        caps.setdefault(a.get("image_id"), []).append(a.get("caption", ""))
    paths, captions, missing = [], {}, 0
    for i in order:
        im = images[i]
        p = coco_image_path(img_dir, im["file_name"], f"{ann}: images[{i}]")
        if not p.is_file():
            missing += 1
            continue
        paths.append(p)
        captions[p.name] = caps.get(im["id"], [])
    if missing:
        logger.warning("%s: %d images listed in %s are missing on disk and are skipped", img_dir, missing, ann.name)
    return paths, captions


def resolve_splits(cfg: DataConfig) -> tuple[list[Path], list[Path]]:
    """Train and validation file lists for ``cfg.path`` (COCO root or folder)."""
    root = Path(cfg.path)
    if not cfg.path:
        raise ValueError("data.path is empty: pass --data DIR (a COCO 2017 root or an image folder)")
    kind = cfg.kind
    if kind == "auto":
        kind = "coco" if (root / "train2017").is_dir() else "folder"
    if kind == "coco":
        train, _ = coco_split(root, "train")
        val = coco_split(root, "val")[0] if (root / "val2017").is_dir() else []
    elif kind == "folder":
        train, val = find_images(root), []
    else:
        raise ValueError(f"data.kind must be one of ['auto', 'coco', 'folder'], got {cfg.kind!r}")
    if cfg.val_path:
        val = find_images(Path(cfg.val_path))
    elif not val and len(train) > 1:
        # Deterministic hold-out by file-name hash: stable when files are added.
        cut = max(1, int(round(cfg.val_fraction * 1000)))
        val = [p for p in train if zlib.crc32(p.name.encode()) % 1000 < cut] or train[-1:]
        held = set(val)
        train = [p for p in train if p not in held]
    if not train:
        raise ValueError(f"no training images found in {root} (kind {kind}); extensions: {IMAGE_EXTS}")
    return train, val


def to_rgb(img: Image.Image, stats: Counter) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency on white; counts each conversion."""
    if img.mode == "RGB":
        return img
    stats[f"converted_{img.mode}"] += 1
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


class ImageDataset(Dataset):
    """Decoded, resized and cropped images as uint8 ``[3,R,R]`` tensors (convert with ``x/127.5-1``).

    Items are addressed by ``(index, epoch)``; the crop position is drawn from ``seed, epoch, index``.
    """

    def __init__(
        self, paths: list[Path], resolution: int, min_size: int = 0, random_crop: bool = True, seed: int = 0
    ) -> None:
        if not paths:
            raise ValueError("ImageDataset needs at least one image path")
        self.paths = list(paths)
        self.resolution = int(resolution)
        self.min_size = int(min_size) if min_size > 0 else max(1, self.resolution // 2)
        self.random_crop = random_crop
        self.seed = int(seed)
        self._check_usable()

    def _check_usable(self) -> None:
        """Fail now, naming the files, when no image is usable (not with a traceback from a loader worker later).

        Stops at the first usable image, so a healthy dataset costs one decode.
        """
        stats: Counter = Counter()
        tried: list[str] = []
        for path in self.paths:
            before = dict(stats)
            if self._load(path, stats) is not None:
                return
            why = next((k.removeprefix("skipped_") for k in stats if stats[k] != before.get(k, 0)), "unreadable")
            tried.append(f"{path.name} ({why})")
        folders = sorted({str(p.parent) for p in self.paths})
        raise ValueError(
            f"no usable image in {', '.join(folders[:3])}{' ...' if len(folders) > 3 else ''}: tried all "
            f"{len(tried)} files, none decodes to an image with a short side of at least {self.min_size} px "
            f"(data.min_size); first ones: {', '.join(tried[:5])}"
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Counter]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        stats: Counter = Counter()
        for j in range(_MAX_TRIES):
            i = (index + j) % len(self.paths)
            img = self._load(self.paths[i], stats)
            if img is not None:
                rng = np.random.default_rng([self.seed, epoch, i])
                return self._crop(img, rng), stats
        raise RuntimeError(
            f"{_MAX_TRIES} consecutive unreadable images from {self.paths[index % len(self.paths)]}; "
            f"is the data folder damaged? counts: {dict(stats)}"
        )

    def _load(self, path: Path, stats: Counter) -> Image.Image | None:
        try:
            with Image.open(path) as im:
                im.load()  # full decode now: truncated files raise here, not later
                img = ImageOps.exif_transpose(im)
                img = to_rgb(img, stats)
        except Exception as e:  # noqa: BLE001  any decoder failure means "skip this file"
            stats[f"skipped_{type(e).__name__}"] += 1
            logger.debug("skipping unreadable image %s: %s", path, e)
            return None
        if min(img.size) < self.min_size:
            stats["skipped_too_small"] += 1
            return None
        return img

    def _crop(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        r = self.resolution
        w, h = img.size
        s = r / min(w, h)  # SmallestMaxSize: short side -> r
        nw, nh = max(r, round(w * s)), max(r, round(h * s))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        if self.random_crop:
            x0, y0 = int(rng.integers(0, nw - r + 1)), int(rng.integers(0, nh - r + 1))
        else:
            x0, y0 = (nw - r) // 2, (nh - r) // 2
        a = np.asarray(img.crop((x0, y0, x0 + r, y0 + r)), dtype=np.uint8)
        return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous()


def collate(items: list[tuple[torch.Tensor, Counter]]) -> tuple[torch.Tensor, dict[str, int]]:
    """Stack images and sum the per-sample decode counters."""
    stats: Counter = Counter()
    for _, s in items:
        stats.update(s)
    return torch.stack([x for x, _ in items]), dict(stats)


class ResumableSampler(Sampler):
    """Endless, seeded, rank-sharded sample order that can start at any position.

    Each epoch is a fresh permutation (``seed + epoch``), padded to a multiple of ``world_size`` and split
    by rank, as DistributedSampler does. ``start`` counts samples this rank has already consumed, so a
    resumed run continues mid-epoch exactly.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        super().__init__()
        self.n, self.seed, self.rank, self.world = int(n), int(seed), int(rank), int(world_size)
        self.per_rank = math.ceil(self.n / self.world)
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            g = torch.Generator().manual_seed(self.seed + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            perm += perm[: self.per_rank * self.world - self.n]
            mine = perm[self.rank :: self.world]
            for i in mine[offset:]:
                yield i, epoch
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs this for its own bookkeeping
        return 2**62
