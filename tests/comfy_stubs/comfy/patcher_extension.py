"""Stub of comfy.patcher_extension: the callback names."""


class CallbacksMP:
    ON_DETACH = "on_detach_after"
