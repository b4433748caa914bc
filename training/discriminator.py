"""PatchGAN discriminator with taming's parameter names (``main.{k}``), so ``loss.discriminator.*`` loads.

Isola et al. 2017 (pix2pix) NLayerDiscriminator, as in ``taming/modules/discriminator/model.py``: conv 4x4 s2
(bias) -> LeakyReLU 0.2 -> [conv 4x4 s2 (no bias) -> BatchNorm -> LeakyReLU] x (n_layers-1) -> conv 4x4 s1
(no bias) -> BatchNorm -> LeakyReLU -> conv 4x4 s1 -> one logit per patch.
"""

from __future__ import annotations

import torch
from torch import nn

TAMING_PREFIX = "loss.discriminator."


class NLayerDiscriminator(nn.Module):
    """Patch logits ``[B,1,h',w']`` for images ``[B,in_channels,H,W]``."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"disc_num_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, 1, 1),
        ]
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Taming's ``weights_init``: conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits."""
        return self.main(x)


class DiscPair(nn.Module):
    """Runs D on the real and the fake batch in separate calls (separate BatchNorm statistics, as taming) inside
    one ``forward``, so DDP sees one forward per backward."""

    def __init__(self, disc: nn.Module) -> None:
        super().__init__()
        self.disc = disc

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D(real), D(fake))``."""
        return self.disc(real), self.disc(fake)


def discriminator_state_from_taming(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``loss.discriminator.*`` of a taming training state dict, prefix stripped (empty if absent)."""
    return {k[len(TAMING_PREFIX) :]: v for k, v in sd.items() if k.startswith(TAMING_PREFIX)}


def load_discriminator_state(disc: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load with a clear error when the file's discriminator has another depth or width than the config."""
    own = disc.state_dict()
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if bad or missing or unexpected:
        raise ValueError(
            f"{source}: discriminator weights do not fit loss.disc_num_layers/disc_ndf "
            f"(shape mismatches {bad[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    disc.load_state_dict(sd)
