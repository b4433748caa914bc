"""Building blocks of the taming-transformers VQGAN, with its exact parameter names.

Reference: Esser et al., "Taming Transformers for High-Resolution Image Synthesis" (2021), and the
diffusionmodules/model.py layout it shares with DDPM. Key names (norm1, conv1, nin_shortcut, q/k/v,
proj_out...) must not change: released checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FAST_PATH_DEVICES = {"cuda"}  # device types that take the split GroupNorm and explicit wide attention


def group_norm_split(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """GroupNorm from a generic reduction plus one fused multiply-add, in ``x``'s dtype and memory format.

    Why: PyTorch's CUDA GroupNorm reduces each (sample, group) in a single thread block. At batch 1
    that is 32 blocks for a whole GPU (8 ms of a 512² decode on an H100-class card), channels_last inputs
    are copied to NCHW and back, and autocast runs it in fp32 (two more copies). ``var_mean`` splits long
    reductions across blocks and accumulates in fp32 for bf16/fp16 inputs; the statistics are combined in
    fp32 into a per-channel scale and shift, applied in fp32 by the one kernel that writes the output in
    ``x``'s dtype (no rounded copies of them: half the bf16 error for large group means, two kernels fewer).
    The backward is written out (:class:`_GroupNormSplit`): autograd through these steps launches about 35
    kernels per layer, the closed form about 17.
    """
    return _GroupNormSplit.apply(x, groups, weight, bias, eps)


class _GroupNormSplit(torch.autograd.Function):
    """:func:`group_norm_split` with the closed-form GroupNorm backward (per-channel sums, two fused passes).

    With ``x̂ = (x - μ) r`` per group (``r = 1 / σ``, ``n`` elements) and ``g = dy γ``:
    ``dx = r (g - mean(g) - x̂ mean(g x̂)) = A dy + B x + C`` with per-channel/group ``A = r γ``,
    ``B = -r² m``, ``C = r² m μ - r mean(g)``, ``m = mean(g x̂)``; ``dγ = Σ r (Σ dy x - μ Σ dy)``, ``dβ = Σ dy``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,  # noqa: ANN001
                eps: float) -> torch.Tensor:
        n, c = x.shape[:2]
        xg = x.unflatten(1, (groups, c // groups))  # [N, G, C/G, *spatial]
        shape = (1, groups, c // groups) + (1,) * (xg.dim() - 3)
        with torch.autocast(x.device.type, enabled=False):
            var, mean = torch.var_mean(xg, dim=tuple(range(2, xg.dim())), correction=0, keepdim=True)
            rstd = (var.float() + eps).rsqrt()
            mean = mean.float()
            gamma = weight.float().view(shape)
            scale = gamma * rstd
            shift = torch.addcmul(bias.float().view(shape), mean, scale, value=-1).flatten(1, 2)
            scale = scale.flatten(1, 2)  # per (sample, channel); also dx's factor of dy
            # fp32 scale and shift straight into an output of x's dtype and layout: one kernel, no rounded
            # copies (the output is x's own shape: torch.compile refuses an out= in a split-channel view)
            out = torch.addcmul(shift, x, scale, out=torch.empty_like(x))
        ctx.groups, ctx.param_dtype = groups, weight.dtype
        ctx.save_for_backward(x, gamma, mean, rstd, scale)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor):  # noqa: ANN001, ANN205
        # every small step below is a kernel launch per layer: the per-group maths is packed to few of them
        x, gamma, mean, rstd, scale = ctx.saved_tensors
        groups, c = ctx.groups, x.shape[1]
        xg, dyg = x.unflatten(1, (groups, c // groups)), dy.unflatten(1, (groups, c // groups))
        spatial = tuple(range(3, xg.dim()))
        with torch.autocast(x.device.type, enabled=False):
            if spatial:
                s_dy = dyg.sum(spatial, keepdim=True, dtype=torch.float32)  # [N, G, C/G, 1...]
                s_dyx = (dyg * xg).sum(spatial, keepdim=True, dtype=torch.float32)
            else:  # [N, C] input: nothing to sum per channel
                s_dy, s_dyx = dyg.float(), (dyg * xg).float()
            dx = dw = db = None
            if ctx.needs_input_grad[0]:
                means = (torch.stack([s_dy, s_dyx]) * gamma).sum(3, keepdim=True).mul_(1 / xg[0, 0].numel())
                m_g, m_gx = means  # mean(g), mean(g x) per (sample, group)
                rm = rstd * torch.addcmul(m_gx, mean, m_g, value=-1) * rstd  # r mean(g x̂)
                rstd_c = rstd.expand(-1, -1, c // groups, *rstd.shape[3:])  # per channel, for free
                b = (rm * rstd_c).flatten(1, 2)  # -B
                cst = ((rm * mean - m_g) * rstd_c).flatten(1, 2)
                part = torch.addcmul(cst, x, b, value=-1, out=torch.empty_like(x))  # fp32 factors, x's dtype
                dx = torch.addcmul(part, dy, scale, out=part)
            if ctx.needs_input_grad[2]:
                dw = (rstd * (s_dyx - mean * s_dy)).sum(0).flatten().to(ctx.param_dtype)
            if ctx.needs_input_grad[3]:
                db = s_dy.sum(0).flatten().to(ctx.param_dtype)
        return dx, None, dw, db, None


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state-dict keys) with :func:`group_norm_split` for frozen CUDA use.

    Frozen weights (generation, encoding) take the split path; training keeps PyTorch's kernel, whose
    speed the training benchmark measured (batch >= 8 gives it enough blocks). fp16 inputs keep it too:
    fp16 statistics overflow for large activations (a variance above 65504), PyTorch's are fp32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type in FAST_PATH_DEVICES and x.dtype != torch.float16 and self.affine \
                and not self.weight.requires_grad:
            return group_norm_split(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


def normalize(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm(32, eps=1e-6): taming's ``Normalize`` (tiny models may use fewer groups)."""
    return GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v as two batched matmuls (softmax in autocast's precision)."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores + mask.to(scores.dtype)
    return torch.softmax(scores, dim=-1).to(v.dtype) @ v


def spatial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, explicit: bool | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(c)) v over ``[B, 1, HW, C]`` tensors.

    Why not always SDPA: for C > 256 (taming's 512-channel bottleneck) no flash kernel exists and the
    memory-efficient kernel's backward is slow (over 1 ms per call on an H100-class GPU for 1024 tokens);
    two batched matmuls take microseconds. Long sequences keep SDPA (no HW x HW matrix in memory).
    ``explicit`` forces either path (default: that rule).
    """
    c, tokens = q.shape[-1], q.shape[-2]
    if explicit is None:
        explicit = q.device.type in FAST_PATH_DEVICES and c > 256 and tokens <= 8192
    return matmul_attention(q, k, v) if explicit else F.scaled_dot_product_attention(q, k, v)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: norm, swish, conv, twice; 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, groups: int = 32) -> None:
        super().__init__()
        self.norm1 = normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (softmax over keys, scale c**-0.5)."""

    def __init__(self, channels: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = normalize(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        # [B, 1, HW, C]: SDPA picks a fused kernel (flash/memory-efficient on GPU) with the same maths.
        q, k, v = (t(h).reshape(b, 1, c, hh * ww).transpose(-1, -2) for t in (self.q, self.k, self.v))
        out = spatial_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 conv after an asymmetric (right/bottom) zero pad, exactly as taming does (a wrapping pad when
    the conv's ``padding_mode`` is ``circular``: see ``vqgan_core.vqgan.seamless``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "circular" if self.conv.padding_mode == "circular" else "constant"
        return self.conv(F.pad(x, (0, 1, 0, 1), mode=mode))


class Upsample(nn.Module):
    """Nearest 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResnetBlock, attention, ResnetBlock: the bottleneck of encoder and decoder."""

    def __init__(self, channels: int, dropout: float, groups: int = 32) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, dropout, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))
