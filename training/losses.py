"""Taming's VQLPIPSWithDiscriminator: L1 + LPIPS, hinge/vanilla PatchGAN with the adaptive weight, codebook loss.

Esser et al. 2021, "Taming Transformers" eq. 7: ``lambda = ||grad_GL[L_rec]|| / (||grad_GL[L_GAN]|| + 1e-4)``
computed on the decoder's last layer. Values match the real ``VQLPIPSWithDiscriminator`` (fixture
``tiny_f4_train/loss_golden``). Log values are returned as detached tensors so that nothing syncs with the
host outside logging steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vqgan_core import Registry

from .config import LossConfig

DiscFn = Callable[[torch.Tensor], torch.Tensor]
PairFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# name -> (logits_real, logits_fake) -> discriminator loss
DISC_LOSSES: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("disc_loss")


@DISC_LOSSES.register("hinge")
def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x_rec)))``."""
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))


@DISC_LOSSES.register("vanilla")
def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 (mean softplus(-D(x)) + mean softplus(D(x_rec)))``."""
    return 0.5 * (torch.mean(F.softplus(-logits_real)) + torch.mean(F.softplus(logits_fake)))


class VQLPIPSWithDiscriminator(nn.Module):
    """Holds LPIPS (``perceptual_loss``) and the PatchGAN (``discriminator``) under taming's attribute names.

    Args:
        cfg: loss settings.
        perceptual: LPIPS module, or None when ``perceptual_weight`` is 0.
        discriminator: the PatchGAN.
    """

    def __init__(self, cfg: LossConfig, perceptual: nn.Module | None, discriminator: nn.Module) -> None:
        super().__init__()
        if cfg.perceptual_weight > 0 and perceptual is None:
            raise ValueError("loss.perceptual_weight > 0 needs an LPIPS module")
        self.cfg = cfg
        self.perceptual_loss = perceptual if cfg.perceptual_weight > 0 else None
        self.discriminator = discriminator
        self.d_loss_fn = DISC_LOSSES.get(cfg.disc_loss)

    def disc_factor(self, global_step: int) -> float:
        """``disc_factor`` once ``global_step >= disc_start``, else 0 (taming ``adopt_weight``)."""
        return self.cfg.disc_factor if global_step >= self.cfg.disc_start else 0.0

    def adaptive_weight(self, nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
        """Balance the GAN gradient against the reconstruction gradient at the decoder's last layer."""
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        w = torch.norm(nll_grad.float()) / (torch.norm(g_grad.float()) + 1e-4)
        return torch.clamp(w, 0.0, 1e4).detach() * self.cfg.disc_weight

    def generator_loss(
        self,
        x: torch.Tensor,
        xrec: torch.Tensor,
        qloss: torch.Tensor,
        global_step: int,
        last_layer: torch.Tensor | None,
        disc: DiscFn | None = None,
        gan_when_inactive: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Autoencoder loss (taming ``optimizer_idx == 0``).

        Args:
            x: real images in [-1,1].
            xrec: reconstructions (with graph).
            qloss: quantizer loss.
            global_step: optimiser step, for ``disc_start``.
            last_layer: ``decoder.conv_out.weight``; None (or no grad) gives ``d_weight = 0`` as taming does in eval.
            disc: discriminator call to use (default ``self.discriminator``).
            gan_when_inactive: still run D and the adaptive weight before ``disc_start`` (taming does; it only
                changes logs and BatchNorm running stats, so the trainer skips it unless it replays taming).
        """
        disc = disc or self.discriminator
        rec = torch.abs(x.float() - xrec.float())
        p_loss = torch.zeros((), device=x.device)
        if self.perceptual_loss is not None:
            p_loss = self.perceptual_loss(xrec, x)
            rec = rec + self.cfg.perceptual_weight * p_loss
        nll = rec.mean()
        factor = self.disc_factor(global_step)
        zero = torch.zeros((), device=x.device)
        g_loss, d_weight = zero, zero
        if factor > 0 or gan_when_inactive:
            logits_fake = disc(xrec).float()
            g_loss = -torch.mean(logits_fake)
            if last_layer is not None and torch.is_grad_enabled() and last_layer.requires_grad:
                d_weight = self.adaptive_weight(nll, g_loss, last_layer)
        qloss = qloss.float().mean()
        loss = nll + d_weight * factor * g_loss + self.cfg.codebook_weight * qloss
        logs = {
            "total_loss": loss.detach(),
            "quant_loss": qloss.detach(),
            "nll_loss": nll.detach(),
            "rec_loss": nll.detach(),
            "p_loss": p_loss.detach().mean(),
            "d_weight": d_weight.detach(),
            "disc_factor": torch.tensor(factor),
            "g_loss": g_loss.detach(),
        }
        return loss, logs

    def discriminator_loss(
        self, x: torch.Tensor, xrec: torch.Tensor, global_step: int, pair: PairFn | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Discriminator loss (taming ``optimizer_idx == 1``); real and fake go through D separately.

        ``pair(real, fake) -> (logits_real, logits_fake)`` lets DDP see both calls as one forward.
        """
        if pair is None:
            logits_real, logits_fake = self.discriminator(x.detach()), self.discriminator(xrec.detach())
        else:
            logits_real, logits_fake = pair(x.detach(), xrec.detach())
        logits_real, logits_fake = logits_real.float(), logits_fake.float()
        factor = self.disc_factor(global_step)
        d_loss = factor * self.d_loss_fn(logits_real, logits_fake)
        logs = {
            "disc_loss": d_loss.detach(),
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
        }
        return d_loss, logs
