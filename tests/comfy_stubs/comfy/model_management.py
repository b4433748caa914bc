"""Stub of comfy.model_management: CPU devices and an interrupt flag tests can set."""

import torch

INTERRUPT = {"flag": False, "after_checks": None, "checks": 0}


class InterruptProcessingException(Exception):
    """Raised when the user cancels."""


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


UNLOADS = []


def soft_empty_cache(force=False):
    return None


def unload_all_models():
    UNLOADS.append(1)


def processing_interrupted():
    return INTERRUPT["flag"]


def throw_exception_if_processing_interrupted():
    INTERRUPT["checks"] += 1
    after = INTERRUPT["after_checks"]
    if INTERRUPT["flag"] or (after is not None and INTERRUPT["checks"] > after):
        INTERRUPT["flag"] = False
        raise InterruptProcessingException()
