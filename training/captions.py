"""Captions to train a feed-forward network on: a COCO 2017 layout, a caption list, and held-out phrases.

Accepted ``--data``:

* a COCO-layout folder: ``ROOT/annotations/captions_{split}2017.json`` (real COCO 2017, or ``python -m
  training.shapes``); the images are not read, only the ``annotations[*].caption`` strings;
* a COCO captions ``.json`` file itself;
* a ``.txt`` file with one caption per line, or a ``.json`` list of strings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .data import read_coco

__all__ = ["held_out", "load_captions", "split_held_out"]


def _clean(caps: list, where: str) -> list[str]:
    out = []
    for i, c in enumerate(caps):
        if not isinstance(c, str):
            raise ValueError(f"{where}: caption {i} is a {type(c).__name__}, expected a string")
        c = " ".join(c.split())
        if c:
            out.append(c)
    if not out:
        raise ValueError(f"{where}: no captions")
    return sorted(set(out))  # duplicates add nothing but weight; sorted: the same list on every machine


def load_captions(data: str | Path, split: str = "train") -> list[str]:
    """The distinct captions of ``data`` (see the module doc for the layouts), sorted."""
    p = Path(data)
    if p.is_dir():
        ann = p / "annotations" / f"captions_{split}2017.json"
        if not ann.is_file():
            raise FileNotFoundError(f"{ann} not found: --data must be a COCO 2017 folder (annotations/"
                                    f"captions_{split}2017.json), a .txt caption list or a .json file")
        p = ann
    if not p.is_file():
        raise FileNotFoundError(f"caption data not found: {p}")
    if p.suffix.lower() == ".txt":
        return _clean(p.read_text(encoding="utf-8").splitlines(), str(p))
    if p.suffix.lower() != ".json":
        raise ValueError(f"{p}: caption data must be a COCO folder, a .txt or a .json file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not readable JSON ({e})") from None
    if isinstance(doc, list):
        return _clean(doc, str(p))
    _, anns = read_coco(p)
    caps = []
    for i, a in enumerate(anns):
        if "caption" not in a:
            raise ValueError(f"{p}: annotations[{i}] has no 'caption' (is this a captions_*.json file?)")
        caps.append(a["caption"])
    return _clean(caps, str(p))


def held_out(caption: str, phrases: list[str]) -> bool:
    """True when ``caption`` contains one of ``phrases`` as whole words (case-insensitive, any spacing).

    ``"red square"`` holds out "a red square on a blue background" and "a blue background with a red square",
    not "a red circle on a square background": a colour/shape pair never seen in training.
    """
    low = " ".join(caption.lower().split())
    return any(re.search(r"\b" + re.escape(" ".join(ph.lower().split())) + r"\b", low) for ph in phrases if ph.strip())


def split_held_out(captions: list[str], phrases: list[str]) -> tuple[list[str], list[str]]:
    """``(kept, held out)``; an empty kept list is an error (every caption matched a phrase)."""
    kept = [c for c in captions if not held_out(c, phrases)]
    gone = [c for c in captions if held_out(c, phrases)]
    if not kept:
        raise ValueError(f"the held-out phrases {phrases} match every caption; nothing is left to train on")
    return kept, gone
