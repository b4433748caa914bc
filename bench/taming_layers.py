"""Make a vqgan_core VQGAN run the operations taming-transformers' modules run (same weights, same maths).

For the speed replicas only. vqgan_core's layers are faster than taming's in ways that would flatter the
replicas: fused ``F.silu`` instead of taming's ``x * torch.sigmoid(x)`` (two kernels, and autograd keeps
both tensors), ``scaled_dot_product_attention`` instead of two ``bmm`` and a softmax, and on CUDA a split
GroupNorm for frozen weights. Written from the description in /work/shared/reference/TAMING.md §1 (no code
copied). What stays different: the final ``norm_out -> swish`` of the encoder and decoder keeps the fused
``F.silu`` (one call each, next to 34 swishes in the decoder's resnet blocks; see bench/REPLICAS.md).
"""

from __future__ import annotations

from types import MethodType

import torch
from torch import nn

from vqgan_core.vqgan.layers import AttnBlock, GroupNorm, ResnetBlock


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)  # taming's nonlinearity(): two element-wise kernels


def _resnet_forward(self: ResnetBlock, x: torch.Tensor) -> torch.Tensor:
    h = self.conv1(_swish(self.norm1(x)))
    h = self.conv2(self.dropout(_swish(self.norm2(h))))
    if hasattr(self, "nin_shortcut"):
        x = self.nin_shortcut(x)
    return x + h


def _attn_forward(self: AttnBlock, x: torch.Tensor) -> torch.Tensor:
    h = self.norm(x)
    q, k, v = self.q(h), self.k(h), self.v(h)
    b, c, hh, ww = q.shape
    scores = torch.bmm(q.reshape(b, c, hh * ww).permute(0, 2, 1), k.reshape(b, c, hh * ww)) * (int(c) ** -0.5)
    w = torch.softmax(scores, dim=2)  # [b, queries, keys]
    out = torch.bmm(v.reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + self.proj_out(out)


def use_taming_layers(model: nn.Module) -> nn.Module:
    """Rebind, per instance, the forward of every resnet block, attention block and GroupNorm of ``model``."""
    for m in model.modules():
        if isinstance(m, ResnetBlock):
            m.forward = MethodType(_resnet_forward, m)
        elif isinstance(m, AttnBlock):
            m.forward = MethodType(_attn_forward, m)
        elif isinstance(m, GroupNorm):
            m.forward = MethodType(nn.GroupNorm.forward, m)  # PyTorch's kernel, as taming's Normalize()
    return model
