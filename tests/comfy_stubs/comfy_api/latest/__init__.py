"""Stub of comfy_api.latest: ``io``, ``ui`` and ``ComfyExtension``."""

from . import io, ui  # noqa: F401


class ComfyExtension:
    async def on_load(self) -> None:
        return None

    async def get_node_list(self):
        raise NotImplementedError
