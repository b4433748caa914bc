"""What the generation-loop tests share: ``_cfg``, a small fp32 generation config for the tiny models."""

from vqgan_core.engine.config import GenerationConfig


def _cfg(**kw):
    base = {"prompts": "a red circle", "width": 32, "height": 32, "steps": 6, "seed": 3, "cutn": 4, "precision": "fp32",
            "log_every": 1}
    return GenerationConfig(**{**base, **kw})
