"""Stub of comfy.model_management: CPU devices and an interrupt flag tests can set."""

import weakref

import torch

INTERRUPT = {"flag": False, "after_checks": None, "checks": 0}


class InterruptProcessingException(Exception):
    """Raised when the user cancels."""


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


LOADS = []  # one entry per load_models_gpu call: (weak refs of the patchers, memory_required, force_full_load)
NOVRAM = {"on": False}  # like --novram: load_models_gpu loads nothing whole


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    LOADS.append(([weakref.ref(m) for m in models], memory_required, force_full_load))
    for m in models:
        m.loaded = 0 if NOVRAM["on"] else m.model_size()


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
