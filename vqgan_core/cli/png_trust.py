"""What a PNG's stored settings may make this machine do: ``--from-png`` of someone else's image must not read local
files or download URLs named in its metadata unless the user says so.

Why: the settings chunk is data from elsewhere. Known names (``demo``, the released VQGANs, open_clip's
pretrained tags) are safe to use; a path or URL is a request to open that file or fetch that address.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["names_file_or_url", "untrusted_references"]

def names_file_or_url(value: str) -> bool:
    """A URL, or a string that names a file or folder rather than a known model."""
    from ..clip.guide import looks_like_path

    v = value.strip()
    return v.startswith(("http://", "https://")) or looks_like_path(v) or os.sep in v


def _clip_reference(spec: str) -> bool:
    from ..clip.guide import ClipLoadError, parse_clip_spec

    try:
        name, pretrained = parse_clip_spec(spec)
    except ClipLoadError:
        return True
    return name != "demo" and (names_file_or_url(name) or (pretrained is not None and names_file_or_url(pretrained)))


def untrusted_references(stored: dict[str, Any], meta: dict[str, Any], given: set[str]) -> list[str]:
    """The files and URLs a PNG's settings (``stored``: its ``config``; ``meta``: the whole chunk) would make the
    run read or fetch, leaving out the settings the user gave (``given``: GenerationConfig field names)."""
    from ..hub.known_models import KNOWN_VQGANS
    from ..objective.prompts import PromptSyntaxError, parse_image_prompts

    found: list[str] = []
    vqgan = stored.get("vqgan")
    if "vqgan" not in given and isinstance(vqgan, str) and vqgan != "demo" and vqgan not in KNOWN_VQGANS:
        found.append(f"VQGAN {vqgan}")
    if "clip" not in given:
        found += [f"CLIP {s}" for s in stored.get("clip") or [] if not isinstance(s, str) or _clip_reference(s)]
    for key in ("init_image", "edit_mask"):
        if key not in given and stored.get(key):
            found.append(f"{key} {stored[key]}")
    ff = stored.get("feed_forward")
    if "feed_forward" not in given and ff and ff != "demo":
        found.append(f"feed-forward model {ff}")
    if "image_prompts" not in given and stored.get("image_prompts"):
        try:
            found += [f"image prompt {p.path}" for p in parse_image_prompts(str(stored["image_prompts"]))]
        except PromptSyntaxError:
            found.append(f"image prompts {stored['image_prompts']!r}")
    if "region_prompts" not in given:
        for region in stored.get("region_prompts") or []:
            found.append(f"region mask {region[0] if isinstance(region, (list, tuple)) and region else region!r}")
    if "resume" not in given and meta.get("resumed_from"):
        found.append(f"resumed-from file {meta['resumed_from']}")
    return found
