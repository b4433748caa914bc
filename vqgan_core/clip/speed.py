"""Speed patches for open_clip models used as frozen guides; each keeps the parameters and state-dict keys.

* sequence-first attention stacks (``_seq_first``): no per-call weight expansion in MHA projections;
* the ViT patch embedding as one matrix product (``_PatchEmbedLinear``): fast input gradients on CPU;
* self-attention from one packed projection (``ShortSeqAttention``): on the CPU as two explicit matmuls
  (PyTorch's CPU flash-attention backward costs ~10 ms per ViT-B/32 block at 8 cutouts in bf16, the
  matmuls ~2 ms); elsewhere (CUDA) through SDPA on views of the projection, without the stock module's
  copies (a contiguous copy of q/k/v forward; three zero-filled ``select`` gradients, their sums and
  transposed copies backward: about 10 kernels and 40 MB per ViT-B/32 block at 32 cutouts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..vqgan.layers import matmul_attention

__all__ = ["ShortSeqAttention", "apply_speed_patches"]


def _seq_first(model: torch.nn.Module) -> int:
    """Run open_clip's ``nn.MultiheadAttention`` stacks sequence-first; returns the stacks switched.

    Why: with ``batch_first=True`` torch's MHA transposes its input to a non-contiguous view, so each
    in/out projection becomes a ``bmm`` against the weight expanded over the sequence, which autocast
    materialises (a 50x copy of every projection weight per call on CPU). Sequence-first, open_clip makes
    the activations contiguous once per stack and the projections are plain matrix products. The
    results are bit-identical.
    """
    from open_clip.transformer import Transformer

    n = 0
    for mod in model.modules():
        if isinstance(mod, Transformer) and mod.batch_first:
            blocks = list(mod.resblocks)
            if blocks and all(isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention) for b in blocks):
                mod.batch_first = False
                for b in blocks:
                    b.attn.batch_first = False
                n += 1
    return n


class _PatchEmbedLinear(torch.nn.Module):
    """A ViT patch-embedding conv (kernel == stride) computed as one matrix product.

    Why: oneDNN's backward of a stride-32 conv to its input is slow on CPU; as a linear layer it is a
    plain GEMM. Same parameters (same state_dict keys), same result up to summation order.
    """

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias, self.p = conv.weight, conv.bias, conv.kernel_size[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b, c, h, w = x.shape
        p, gh, gw = self.p, h // self.p, w // self.p
        x = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * p * p)
        y = F.linear(x, self.weight.reshape(self.weight.shape[0], -1), self.bias)
        return y.transpose(1, 2).reshape(b, -1, gh, gw)


def _patch_embed_as_linear(model: torch.nn.Module) -> bool:
    conv = getattr(getattr(model, "visual", None), "conv1", None)
    if (
        isinstance(conv, torch.nn.Conv2d)
        and conv.kernel_size == conv.stride
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
    ):
        model.visual.conv1 = _PatchEmbedLinear(conv)
        return True
    return False


EXPLICIT_DEVICES = {"cpu"}  # device types whose short attention runs as explicit matmuls


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v: explicit matmuls on the CPU, SDPA elsewhere (see module doc)."""
    if q.device.type in EXPLICIT_DEVICES:
        return matmul_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(q.dtype))


class ShortSeqAttention(torch.nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose self-attention runs from one packed projection (see module doc).

    Instances are converted in place (``__class__``), so parameters, hooks and state-dict keys stay.
    Anything else (cross-attention, key padding, attention weights requested, CPU sequences longer than
    ``max_len``) goes to the stock implementation.
    """

    max_len = 256  # explicit matmuls only (EXPLICIT_DEVICES): they hold an L x L matrix per head

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,  # noqa: D102
                average_attn_weights=True, is_causal=False):
        fast = (
            key is query and value is query and not need_weights and key_padding_mask is None
            and not is_causal and self._qkv_same_embed_dim and self.in_proj_bias is not None and query.dim() == 3
            and (self.dropout == 0.0 or not self.training)
            and (query.device.type not in EXPLICIT_DEVICES or query.shape[1 if self.batch_first else 0] <= self.max_len)
            and (attn_mask is None or attn_mask.dtype != torch.bool)
        )
        if not fast:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        # projections on the caller's contiguous layout ([N, L, E] or [L, N, E]): plain GEMMs, no copies
        e, h = self.embed_dim, self.num_heads
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
        if self.batch_first:
            n, length = query.shape[:2]
            q, k, v = qkv.view(n, length, 3, h, e // h).permute(2, 0, 3, 1, 4).unbind(0)  # [N, H, L, d]
        else:
            length, n = query.shape[:2]
            q, k, v = qkv.view(length, n, 3, h, e // h).permute(2, 1, 3, 0, 4).unbind(0)
        out = _attend(q, k, v, attn_mask)  # [N, H, L, d]
        out = out.transpose(1, 2).reshape(n, length, e) if self.batch_first else out.permute(2, 0, 1, 3).reshape(length, n, e)
        return self.out_proj(out), None


def _short_seq_attention(model: torch.nn.Module) -> int:
    n = 0
    for mod in model.modules():
        if type(mod) is torch.nn.MultiheadAttention:
            mod.__class__ = ShortSeqAttention
            n += 1
    return n


def apply_speed_patches(model: torch.nn.Module) -> None:
    """Apply every patch that fits ``model`` (an open_clip CLIP); results match the stock model."""
    _seq_first(model)
    _patch_embed_as_linear(model)
    _short_seq_attention(model)
