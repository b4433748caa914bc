"""ComfyUI entry point of the VQGAN+CLIP node pack (V3 ``comfy_entrypoint``).

ComfyUI imports this folder as a package under its folder name; every import inside the pack is relative
(``nodes`` imports ``..vqgan_core``), so nothing is added to ``sys.path`` and a ``vqgan_core`` installed elsewhere
in ComfyUI's Python can neither shadow the pack's own nor be shadowed by it. Without ComfyUI (plain ``import``,
pytest) the package imports cleanly and exposes nothing.
"""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)

WEB_DIRECTORY = None  # no front-end extension

if importlib.util.find_spec("comfy_api") is not None and __package__:
    from .nodes.extension import comfy_entrypoint  # noqa: F401  (ComfyUI reads this name)
else:
    log.debug("ComfyUI not found: VQGAN+CLIP nodes not registered")
