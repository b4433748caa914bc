"""A re-implementation of nerdyrodent/VQGAN-CLIP's default loop, for speed comparisons only.

Written from the behaviour documented in /work/shared/reference/VQGAN_CLIP_ANCHORS.md §2 (no code
copied). What the real ``generate.py`` does, and so does this replica:

- VQGAN frozen: ``load_vqgan_model`` returns ``model.eval().requires_grad_(False)``, so the backward
  through the decoder computes input gradients only (no weight gradients). fp32. The decoder runs
  taming's operations (``x * sigmoid(x)``, ``bmm`` attention, PyTorch's GroupNorm: ``taming_layers.py``).
- CLIP frozen (``clip.load(jit=False)[0].eval().requires_grad_(False)``): fp16 weights on CUDA (OpenAI's
  ``build_model`` converts convs/linears/attention to fp16, LayerNorms compute in fp32), ``.float()`` on
  CPU. ``clip_impl="openai"`` builds OpenAI's own module tree (``clip.model.build_model`` of the PyPI
  package ``openai-clip``: QuickGELU, ``nn.MultiheadAttention``, fp32-casting LayerNorm) from the random
  state dict of open_clip's ViT-B-32, which has the same keys and shapes; ``clip_impl="open_clip"`` uses
  open_clip's ViT-B-32 as shipped (GELU; ``.half()`` on CUDA).
- full-distance vector quantisation each step, ``latest`` cutouts pooled once per cutout, kornia
  augmentation modules (host-side parameter sampling), per-cutout noise, classic spherical loss with
  ``replace_grad`` stop, Adam, per-channel z clamp.

Remaining differences are listed with their measured cost in bench/REPLICAS.md.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch
import torch.nn.functional as F

CLIP_IMPLS = ("open_clip", "openai")


def _openai_clip_model_module() -> ModuleType:
    """``clip/model.py`` of the ``openai-clip`` package, loaded without ``clip/__init__`` (which needs
    ``pkg_resources`` and torchvision only for ``clip.load``'s download and preprocessing)."""
    spec = importlib.util.find_spec("clip")
    path = None if spec is None or not spec.submodule_search_locations else \
        os.path.join(list(spec.submodule_search_locations)[0], "model.py")
    if path is None or not os.path.exists(path):
        raise SystemExit("clip_impl 'openai' needs OpenAI's CLIP code: pip install openai-clip (the PyPI package "
                         "that provides clip.model.build_model); it is not a project requirement")
    mspec = importlib.util.spec_from_file_location("_openai_clip_model", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


def make_clip(impl: str, device) -> torch.nn.Module:
    """ViT-B/32 with random weights, in the module tree and precision the classic script gets from ``clip.load``
    (``openai``) or from open_clip as shipped (``open_clip``), frozen."""
    import open_clip

    device = torch.device(device)
    if impl not in CLIP_IMPLS:
        raise ValueError(f"clip_impl must be one of {CLIP_IMPLS}, got {impl!r}")
    if impl == "openai":
        build_model = _openai_clip_model_module().build_model
        sd = open_clip.create_model("ViT-B-32", pretrained=None).state_dict()  # same keys/shapes as OpenAI's
        model = build_model(sd).to(device)  # converts to fp16 as clip.load does
        if device.type == "cpu":
            model.float()  # clip.load: fp32 on the CPU
    else:
        model = open_clip.create_model("ViT-B-32", pretrained=None, device=device)
        if device.type == "cuda":
            model.half()
    return model.eval().requires_grad_(False)


class _ReplaceGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_forward, x_backward):
        ctx.shape = x_backward.shape
        return x_forward

    @staticmethod
    def backward(ctx, grad_in):
        return None, grad_in.sum_to_size(ctx.shape)


class _ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (g * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def _vector_quantize(x, codebook):
    d = x.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * x @ codebook.T
    idx = d.argmin(-1)
    x_q = F.one_hot(idx, codebook.shape[0]).to(d.dtype) @ codebook
    return _ReplaceGrad.apply(x_q, x)


class ClassicLoop:
    """The classic per-step work on a given VQGAN and CLIP model from :func:`make_clip` (one text prompt).

    ``taming_ops=False`` keeps vqgan_core's faster layers in the decoder (only to measure what they change).
    """

    def __init__(self, vqgan, clip_model, mean, std, size: int, cutn: int, lr: float = 0.1, device="cpu", seed=0,
                 taming_ops: bool = True):
        import kornia.augmentation as K
        import open_clip

        self.vqgan, self.clip, self.cutn = vqgan, clip_model, cutn
        vis = clip_model.visual
        self.cut_size = getattr(vis, "image_size", None) or vis.input_resolution
        self.cut_size = self.cut_size[0] if isinstance(self.cut_size, (tuple, list)) else self.cut_size
        self.mean, self.std = mean.to(device), std.to(device)
        self.in_dtype = vis.conv1.weight.dtype  # what encode_image is fed (OpenAI's casts itself as well)
        self.clip.eval().requires_grad_(False)
        self.vqgan.eval().requires_grad_(False)  # load_vqgan_model: model.eval().requires_grad_(False)
        if taming_ops:
            from taming_layers import use_taming_layers

            use_taming_layers(self.vqgan)
        self.augs = torch.nn.Sequential(
            K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="zeros", keepdim=True),
            K.RandomPerspective(0.7, p=0.7),
            K.ColorJitter(hue=0.1, saturation=0.1, brightness=0.1, contrast=0.1, p=0.7),
            K.RandomErasing((0.1, 0.4), (0.3, 1 / 0.3), same_on_batch=True, p=0.7),
        )
        f = vqgan.downsample_factor
        cb = vqgan.codebook
        g = torch.Generator().manual_seed(seed)
        toks = size // f
        idx = torch.randint(cb.shape[0], (toks * toks,), generator=g).to(device)
        self.z = (F.one_hot(idx, cb.shape[0]).float() @ cb.detach()).view(1, toks, toks, -1).permute(0, 3, 1, 2)
        self.z.requires_grad_(True)
        self.z_min = cb.detach().amin(0)[None, :, None, None]
        self.z_max = cb.detach().amax(0)[None, :, None, None]
        self.opt = torch.optim.Adam([self.z], lr=lr)
        with torch.no_grad():
            # clip.tokenize and open_clip's ViT-B-32 tokenizer are the same BPE (once, outside the loop)
            tok = open_clip.get_tokenizer("ViT-B-32")(["a painting of a lighthouse"]).to(device)
            self.target = self.clip.encode_text(tok).float()

    def _cutouts(self, img):
        cuts = []
        for _ in range(self.cutn):
            cuts.append((F.adaptive_avg_pool2d(img, self.cut_size) + F.adaptive_max_pool2d(img, self.cut_size)) / 2)
        batch = self.augs(torch.cat(cuts))
        facs = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, 0.1)
        return batch + facs * torch.randn_like(batch)

    def step(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        z_q = _vector_quantize(self.z.movedim(1, 3), self.vqgan.codebook).movedim(3, 1)
        img = _ClampWithGrad.apply(self.vqgan.decode(z_q).add(1).div(2), 0.0, 1.0)
        x = (self._cutouts(img) - self.mean) / self.std
        emb = self.clip.encode_image(x.to(self.in_dtype)).float()
        a, b = F.normalize(emb.unsqueeze(1), dim=2), F.normalize(self.target.unsqueeze(0), dim=2)
        d = (a - b).norm(dim=2).div(2).arcsin().pow(2).mul(2)
        d = _ReplaceGrad.apply(d, torch.maximum(d, torch.full_like(d, float("-inf"))))
        loss = d.mean()
        loss.backward()
        self.opt.step()
        with torch.inference_mode():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        return loss.detach()
