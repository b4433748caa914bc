"""What the generation loop optimises and how it becomes the decoder's input: the latent (snapped to the
codebook, the classic method) or, for codebook sampling, logits over the codes (``vqgan_core.code_sampling``).

Why a separate piece: several callers work on "the run's latent" while the loop may optimise logits; this
mixin is the one place that tells them apart (``latent()``, ``latent_shape``, ``set_latent``,
``continue_logits``). :class:`LatentState` is mixed into ``GenerationLoop`` and uses its attributes: ``z``,
``z_init``, ``_codes``, ``_cb``, ``_cb_sq``, ``_z_keep``, ``_latent_keep``, ``vqgan``, ``opt``, ``config``,
``step_index``, ``_decay_start``, ``_decay_len``.
"""

from __future__ import annotations

import logging

import torch

from vqgan_core.quantize import nearest_code

__all__ = ["LatentState"]

log = logging.getLogger(__name__)


class LatentState:
    """The run's latent, its shape, and the snap to the codebook (see the module doc)."""

    def set_latent(self, z: torch.Tensor, reset_optimizer: bool = True, steps_ahead: int | None = None) -> None:
        """Continue from ``z`` (same shape): the classic zoom video re-encodes each frame this way.

        Copies in place, so a captured CUDA graph stays valid. The init pull-back (``init_weight``)
        targets the new latent and its decay starts again, over ``steps_ahead`` steps (default: the
        rest of the run); the optimiser starts afresh (Adam's moments belong to the old latent).
        """
        if tuple(z.shape) != self.latent_shape:
            raise ValueError(f"set_latent needs shape {self.latent_shape}, got {tuple(z.shape)}")
        self._decay_start = self.step_index
        self._decay_len = steps_ahead if steps_ahead is not None else self.config.steps - self.step_index
        with torch.inference_mode(False), torch.no_grad():
            z = z.to(self.z.device, torch.float32)
            self.z.copy_(z if self._codes is None else self._codes.logits_from_latent(z))
            if self.z_init is not None:
                self.z_init.copy_(self.latent())
            if self._z_keep is not None:
                self._z_keep.copy_(self.z)
                self._latent_keep.copy_(self.latent())
        if reset_optimizer:
            self.opt.state.clear()

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(B, C, h, w)`` of the run's latent (codebook sampling optimises ``(B, K, h, w)`` logits instead)."""
        b, _, h, w = self.z.shape
        return (b, self._cb.shape[1], h, w)

    def latent(self) -> torch.Tensor:
        """The run's latent now (a copy): the optimised latent, or the most likely codes' vectors."""
        if self._codes is None:
            return self.z.detach().clone()
        return self._codes.most_likely(self.z)[0]

    def continue_logits(self, logits: torch.Tensor) -> bool:
        """Codebook sampling: go on with a saved code distribution (``vqgan_core.run_state``). Not when its
        shape differs or the latent this loop started from is no longer its most likely codes (edited in
        between: the distribution built from the latent stays). Returns whether it did."""
        if self._codes is None or tuple(logits.shape) != tuple(self.z.shape):
            return False
        logits = logits.to(self.z.device, self.z.dtype)
        if not torch.equal(logits.argmax(1), self.z.detach().argmax(1)):
            log.info("the latent is not the saved run's most likely codes: its code distribution starts afresh")
            return False
        with torch.inference_mode(False), torch.no_grad():
            self.z.copy_(logits)
            if self._z_keep is not None:  # the kept cells go on with the saved (their start's) logits
                self._z_keep.copy_(logits)
        return True

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook entry per cell (fp32), straight-through gradient to ``z``."""
        if getattr(getattr(self.vqgan, "config", None), "l2_normalize", False):
            return self.vqgan.quantize_latent(z)  # cosine lookup: defer to the model
        idx = nearest_code(z.detach(), self._cb, self._cb_sq)
        z_q = self._cb[idx].permute(0, 3, 1, 2)
        return z + (z_q - z).detach(), idx
