"""Speed patches for open_clip models used as frozen guides; each keeps the parameters and state-dict keys.

* sequence-first attention stacks (``_seq_first``): no per-call weight expansion in MHA projections;
* the ViT patch embedding as one matrix product (``_PatchEmbedLinear``): fast input gradients on CPU;
* self-attention from one packed projection (``ShortSeqAttention``): on the CPU as two explicit matmuls
  (PyTorch's CPU flash-attention backward costs ~10 ms per ViT-B/32 block at 8 cutouts in bf16, the
  matmuls ~2 ms); elsewhere (CUDA) through SDPA on views of the projection, without the stock module's
  copies (a contiguous copy of q/k/v forward; three zero-filled ``select`` gradients, their sums and
  transposed copies backward: about 10 kernels and 40 MB per ViT-B/32 block at 32 cutouts).
* the last ViT block for the class token only (``class_token_forward``): with class-token pooling nothing reads the
  other tokens' outputs, so their query, attention output, projection and MLP rows are skipped (about 7 % of a
  ViT-B/32 image encode, forward and backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..vqgan.layers import matmul_attention

__all__ = ["ShortSeqAttention", "apply_speed_patches", "class_token_forward"]


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


def class_token_forward(self: torch.nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``ResidualAttentionBlock.forward`` for the class token only: a 1-token sequence out.

    Why: a ViT pooled by its class token (CLIP's ``pool_type='tok'``) reads only token 0 after the last block;
    the other tokens still serve as keys and values there, but their queries, attention outputs, output
    projection and MLP are dead work. The pooled result is the stock one up to summation order.
    """
    if attn_mask is not None:  # no vision tower masks its tokens; if one does, the stock path (all tokens out)
        return self.stock_forward(x, attn_mask=attn_mask)
    attn = self.attn
    e, h = attn.embed_dim, attn.num_heads
    y = self.ln_1(x)
    if self.class_token_batch_first:  # [N, L, E]
        x0, y0, n = x[:, :1], y[:, :1], x.shape[0]
    else:  # [L, N, E]
        x0, y0, n = x[:1], y[:1], x.shape[1]
    q = F.linear(y0, attn.in_proj_weight[:e], attn.in_proj_bias[:e])
    kv = F.linear(y, attn.in_proj_weight[e:], attn.in_proj_bias[e:])
    if self.class_token_batch_first:
        q = q.view(n, 1, h, e // h).transpose(1, 2)  # [N, H, 1, d]
        k, v = kv.view(n, -1, 2, h, e // h).permute(2, 0, 3, 1, 4).unbind(0)  # [N, H, L, d]
    else:
        q = q.view(1, n, h, e // h).permute(1, 2, 0, 3)
        k, v = kv.view(-1, n, 2, h, e // h).permute(2, 1, 3, 0, 4).unbind(0)
    o = _attend(q, k, v, None)  # [N, H, 1, d]
    o = o.transpose(1, 2).reshape(n, 1, e) if self.class_token_batch_first else o.permute(2, 0, 1, 3).reshape(1, n, e)
    x0 = x0 + self.ls_1(attn.out_proj(o))
    return x0 + self.ls_2(self.mlp(self.ln_2(x0)))


_CLASS_TOKEN_TYPES: dict[type, type] = {}


def _class_token_last_block(model: torch.nn.Module) -> bool:
    """Run the vision tower's last block by :func:`class_token_forward` where only the class token is read.

    The block's class is swapped in place (a subclass whose ``forward`` is that function), so parameters and
    state-dict keys stay.
    """
    from open_clip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer

    vis = getattr(model, "visual", None)
    if not (isinstance(vis, VisionTransformer) and isinstance(vis.transformer, Transformer)):
        return False
    blocks = vis.transformer.resblocks
    last = blocks[-1] if len(blocks) else None
    if hasattr(last, "class_token_batch_first"):  # patched already
        return True
    attn = getattr(last, "attn", None)
    fits = (
        isinstance(last, ResidualAttentionBlock) and not hasattr(last, "ln_1_kv")
        and isinstance(attn, torch.nn.MultiheadAttention) and attn._qkv_same_embed_dim
        and attn.in_proj_bias is not None and attn.dropout == 0.0
        and vis.pool_type == "tok" and vis.attn_pool is None and not vis.output_tokens
        and not vis.transformer.grad_checkpointing
    )
    if fits:
        base = type(last)
        if base not in _CLASS_TOKEN_TYPES:
            _CLASS_TOKEN_TYPES[base] = type(f"ClassToken{base.__name__}", (base,),
                                            {"forward": class_token_forward, "stock_forward": base.forward})
        last.__class__ = _CLASS_TOKEN_TYPES[base]
        last.class_token_batch_first = vis.transformer.batch_first
    return fits


def apply_speed_patches(model: torch.nn.Module) -> None:
    """Apply every patch that fits ``model`` (an open_clip CLIP); results match the stock model."""
    _seq_first(model)
    _patch_embed_as_linear(model)
    _short_seq_attention(model)
    _class_token_last_block(model)
