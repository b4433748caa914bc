"""A re-implementation of nerdyrodent/VQGAN-CLIP's default loop, for speed comparisons only.

Written from the behaviour documented in /work/shared/reference/VQGAN_CLIP_ANCHORS.md §2 (no code
copied): trainable (not frozen) VQGAN in fp32, CLIP frozen (fp16 weights on CUDA as ``clip.load``
gives, fp32 on CPU), full-distance vector quantisation each step, ``latest`` cutouts pooled once per
cutout, kornia augmentation modules (host-side parameter sampling), per-cutout noise, classic
spherical loss with ``replace_grad`` stop, Adam, per-channel z clamp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    """The classic per-step work on a given VQGAN and open_clip model (one text prompt)."""

    def __init__(self, vqgan, clip_model, mean, std, size: int, cutn: int, lr: float = 0.1, device="cpu", seed=0):
        import kornia.augmentation as K

        self.vqgan, self.clip, self.cutn = vqgan, clip_model, cutn
        self.cut_size = clip_model.visual.image_size
        self.cut_size = self.cut_size[0] if isinstance(self.cut_size, (tuple, list)) else self.cut_size
        self.mean, self.std = mean.to(device), std.to(device)
        self.fp16 = torch.device(device).type == "cuda"
        if self.fp16:
            self.clip.half()
        self.clip.eval().requires_grad_(False)
        self.vqgan.requires_grad_(True)  # the classic script never froze the VQGAN
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
            tok = __import__("open_clip").get_tokenizer("ViT-B-32")(["a painting of a lighthouse"]).to(device)
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
        emb = self.clip.encode_image(x.half() if self.fp16 else x).float()
        a, b = F.normalize(emb.unsqueeze(1), dim=2), F.normalize(self.target.unsqueeze(0), dim=2)
        d = (a - b).norm(dim=2).div(2).arcsin().pow(2).mul(2)
        d = _ReplaceGrad.apply(d, torch.maximum(d, torch.full_like(d, float("-inf"))))
        loss = d.mean()
        loss.backward()
        self.opt.step()
        with torch.inference_mode():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        return loss.detach()
