"""ComfyUI node adapters over ``vqgan_core``.

This package imports nothing from ComfyUI at import time; ``nodes.extension`` (imported by the pack's
root ``__init__``) pulls in ``comfy_api`` and the node modules. ``nodes.workflow_api`` is pure Python
and is used by the tests and ``workflows/make_workflows.py``.
"""
