"""What a dead download link leaves behind: an HTML page saved under a model's name.

Lives at the bottom of the core because a VQGAN config, a checkpoint and a download all check for it.
"""

from __future__ import annotations

import os

DEAD_LINK_HINT = ("the link it came from is probably dead or needs a login (heibox and other hosts answer with "
                  "an error page); download it again from a working mirror")


def is_web_page(path: str | os.PathLike) -> bool:
    """True for an HTML page saved under a model's name: what a dead download link leaves behind."""
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))
