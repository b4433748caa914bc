"""A small BPE vocabulary for the demo CLIP: the subset of open_clip's merges its captions need."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

from open_clip.tokenizer import bytes_to_unicode, default_bpe, get_pairs


def needed_merges(words: list[str], bpe_path: str | None = None) -> list[tuple[str, str]]:
    """BPE merges (in open_clip's rank order) that the standard tokenizer applies to ``words``.

    Keeping only these gives the same token pieces for those words (each applied merge was the best-ranked
    pair present, and it still is in the subset) with a ~600-token vocabulary instead of 49 408.
    """
    lines = gzip.open(bpe_path or default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    ranks = {tuple(m.split()): i for i, m in enumerate(lines)}
    byte_enc = bytes_to_unicode()
    used: set[tuple[str, str]] = set()
    for w in words:
        token = "".join(byte_enc[b] for b in w.lower().encode("utf-8"))
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            bigram = min(get_pairs(word), key=lambda p: ranks.get(p, math.inf))
            if bigram not in ranks:
                break
            used.add(bigram)
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == bigram:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
    return sorted(used, key=ranks.__getitem__)


def write_bpe(path: Path, merges: list[tuple[str, str]]) -> None:
    """Write open_clip's bpe format: a header line, then one "a b" merge per line (no trailing newline)."""
    text = "\n".join(["#version: 0.2 (vqgan_core demo subset)"] + [f"{a} {b}" for a, b in merges])
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


# ----------------------------------------------------------------------------------------- model
