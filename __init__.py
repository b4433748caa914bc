"""ComfyUI entry point of the VQGAN+CLIP node pack (V3 ``comfy_entrypoint``).

ComfyUI imports this folder as a package under an arbitrary name, so the node modules are imported
relatively. ``vqgan_core`` (next to this file) is made importable by appending this folder to
``sys.path`` (appended, not prepended: ComfyUI has its own top-level ``nodes`` module). Without
ComfyUI (plain ``import``, pytest) the package imports cleanly and exposes nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

WEB_DIRECTORY = None  # no front-end extension

if importlib.util.find_spec("comfy_api") is not None and __package__:
    from .nodes.extension import comfy_entrypoint  # noqa: F401  (ComfyUI reads this name)
else:
    log.debug("ComfyUI not found: VQGAN+CLIP nodes not registered")
