"""What a run optimises and how it becomes the decoder's input: the latent parameterisation as one object.

``z_quantize`` (the classic method): a continuous latent, snapped to its nearest code with a straight-through
gradient and clamped to the codebook's range after each step. ``codebook_sampling`` (EleutherAI's notebook):
logits over the codes of every cell, one code drawn per step (``vqgan_core.latents.code_sampling``). An edit mask
keeps some cells at their start (inpainting) in both. The nearest-code search is ``quantize.nearest_code``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..latents.code_sampling import METHODS, CodeSampler
from ..latents.edit_mask import keep_cells
from ..vqgan.quantize import nearest_code

__all__ = ["LatentParam"]

log = logging.getLogger(__name__)


class LatentParam:
    """The optimised tensor of a run and its render to the decoder's latent.

    Args:
        vqgan: the VQGAN whose codebook the latent uses.
        latent: ``[B, C, h, w]`` start latent (copied).
        method: ``z_quantize`` or ``codebook_sampling`` (its logits start with the latent's codes most likely).
        edit_mask: ``[H, W]`` pixel mask, 1 where the image may change; the other cells keep the start.
        clamp: z+quantize: clamp the latent to the codebook's per-channel range after each step (classic).
        logits: codebook sampling: ``[B, K, h, w]`` logits to start from instead of ``latent`` (which may then be
            None): the notebook's random start.
    """

    def __init__(self, vqgan: torch.nn.Module, latent: torch.Tensor | None, method: str = "z_quantize",
                 edit_mask: torch.Tensor | None = None, clamp: bool = True,
                 logits: torch.Tensor | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        if logits is not None and method != "codebook_sampling":
            raise ValueError("logits are a start for codebook_sampling only")
        if logits is None and (latent is None or latent.dim() != 4 or latent.shape[1] != vqgan.codebook.shape[1]):
            raise ValueError(f"the latent must be [B, {vqgan.codebook.shape[1]}, h, w] for this VQGAN, "
                             f"got {None if latent is None else tuple(latent.shape)}")
        self.vqgan, self.method, self.clamp = vqgan, method, clamp
        self.device = vqgan.codebook.device
        cb = vqgan.codebook.detach().float()
        self._cb, self._cb_sq = cb, cb.pow(2).sum(1)
        self._zmin, self._zmax = cb.amin(0).view(1, -1, 1, 1), cb.amax(0).view(1, -1, 1, 1)
        self._codes = CodeSampler(vqgan) if method == "codebook_sampling" else None
        with torch.inference_mode(False):
            if logits is not None:
                if logits.dim() != 4 or logits.shape[1] != self._codes.k:
                    raise ValueError(f"logits must be [B, {self._codes.k}, h, w], got {tuple(logits.shape)}")
                z = logits.detach().float().to(self.device).clone()
            else:
                z = latent.detach().float().to(self.device).clone()
                if self._codes is not None:
                    z = self._codes.logits_from_latent(z)
            self.z = z.requires_grad_(True)
            self._keep = self._z_keep = self._latent_keep = None
            if edit_mask is not None:
                h, w = z.shape[-2:]
                self._keep = keep_cells(edit_mask, h, w, vqgan.downsample_factor, self.device)
                self._z_keep, self._latent_keep = self.z.detach().clone(), self.latent()

    @property
    def shape(self) -> tuple[int, ...]:
        """``(B, C, h, w)`` of the latent (codebook sampling optimises ``(B, K, h, w)`` logits)."""
        b, _, h, w = self.z.shape
        return (b, self._cb.shape[1], h, w)

    def parameters(self) -> list[torch.Tensor]:
        """What the optimiser moves."""
        return [self.z]

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest code per cell (fp32), straight-through gradient to ``z``; ``(latent, indices)``."""
        if getattr(getattr(self.vqgan, "config", None), "l2_normalize", False):
            return self.vqgan.quantize_latent(z)  # cosine lookup: defer to the model
        idx = nearest_code(z.detach(), self._cb, self._cb_sq)
        z_q = self._cb[idx].permute(0, 3, 1, 2)
        return z + (z_q - z).detach(), idx

    def render(self, gen: torch.Generator, z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(decoder latent, pull-back latent)`` this step (of ``z``, default the optimised tensor); codebook
        sampling draws from ``gen``."""
        z = self.z if z is None else z
        if self._codes is None:
            return self.quantize(z)[0], z
        z_q, _ = self._codes.sample(z, gen)
        if self._keep is not None:  # inpainting: the kept cells show their code, never a draw
            z_q = torch.where(self._keep, self._latent_keep, z_q)
        return z_q, z_q.float()

    def latent(self) -> torch.Tensor:
        """The run's latent now (a copy): the optimised latent, or the most likely codes' vectors."""
        if self._codes is None:
            return self.z.detach().clone()
        return self._codes.most_likely(self.z)[0]

    @torch.no_grad()
    def after_step(self) -> None:
        """Clamp to the codebook's range (z+quantize) and restore kept cells; in place (CUDA graphs stay valid)."""
        if self.clamp and self._codes is None:
            self.z.copy_(torch.maximum(torch.minimum(self.z, self._zmax), self._zmin))
        if self._keep is not None:
            self.z.copy_(torch.where(self._keep, self._z_keep, self.z))

    def state_dict(self) -> dict[str, Any]:
        """The method, and for codebook sampling the code distribution (the latent holds only its argmax)."""
        state: dict[str, Any] = {"method": self.method}
        if self._codes is not None:
            state["logits"] = self.z.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on with a saved code distribution when it still describes this latent (not edited in between)."""
        if state.get("method", self.method) != self.method:
            raise ValueError(f"the saved run optimised with {state.get('method')}, this one with {self.method}")
        if state.get("logits") is not None:
            self.continue_logits(state["logits"])

    def continue_logits(self, logits: torch.Tensor) -> bool:
        """Codebook sampling: go on with a saved code distribution. Not when its shape differs or the latent is no
        longer its most likely codes (edited in between: the distribution built from the latent stays)."""
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

    def set_latent(self, z: torch.Tensor) -> None:
        """Continue from latent ``z`` (same shape), in place (a captured CUDA graph stays valid); kept cells
        (inpainting) keep the new latent's."""
        if tuple(z.shape) != self.shape:
            raise ValueError(f"set_latent needs shape {self.shape}, got {tuple(z.shape)}")
        with torch.inference_mode(False), torch.no_grad():
            z = z.to(self.z.device, torch.float32)
            self.z.copy_(z if self._codes is None else self._codes.logits_from_latent(z))
            if self._z_keep is not None:
                self._z_keep.copy_(self.z)
                self._latent_keep.copy_(self.latent())
