"""The classic cutout augmentation codes, vectorised and driven by an explicit ``torch.Generator``.

Codes (nerdyrodent/VQGAN-CLIP names and strengths): ``Ji`` colour jitter, ``Sh`` sharpness, ``Gn``
Gaussian noise, ``Pe`` perspective, ``Ro`` rotation, ``Af`` affine, ``Et`` elastic, ``Ts`` thin-plate
spline, ``Cr`` random crop, ``Er`` erasing, ``Re`` resized crop, plus ``Hf`` (EleutherAI's flip).
Three deliberate differences: ``Ji`` is one affine colour matrix (hue rotated in YIQ rather than HSV,
one clamp at the end: see ``_jitter``); the classic ``Cr`` cropped a cutout to its own size (a no-op), here it takes a
75-100 % crop resized back; the classic ``Er`` erased the same box in every cutout, here each cutout
gets its own box (more variety for the same cost).

Why not kornia's ``nn.Module`` augmentations: they sample parameters from the global RNG on the host
(irreproducible, and a device sync per step). Here every parameter is drawn with the caller's generator
on the tensor's device; kornia's functional ops apply the photometric ones. Consecutive geometric codes
are fused into one homography, so ``Af,Pe`` costs one resampling instead of two. Each geometric sampler
returns the *inverse* map (output pixel -> source pixel) in closed form, avoiding matrix inversions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..util.registry import Registry
from .warp import warp

__all__ = ["AUGMENTS", "DEFAULT_AUGMENTS", "Augmenter", "augment_names", "parse_augments"]

DEFAULT_AUGMENTS = ("Af", "Pe", "Ji", "Er")


@dataclass(frozen=True)
class AugSpec:
    """``geometric``: ``fn(n, size, gen, device) -> inverse 3x3 maps``; else ``fn(x, gen) -> x``.

    ``capturable``: free of host synchronisation on CUDA, so it can run inside a CUDA graph.
    """

    fn: Callable
    p: float
    geometric: bool
    capturable: bool = True


AUGMENTS: Registry = Registry("augmentation")


_CONSTS: dict[tuple, torch.Tensor] = {}


def _const(values: list, dev: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A small constant tensor on ``dev``, uploaded once (a host-to-device copy each step would sync CUDA)."""
    key = (repr(values), str(dev), dtype)
    if key not in _CONSTS:
        # A memo of immutable constants, never inference tensors: ComfyUI runs nodes under inference_mode,
        # and a constant first made there could not be saved for backward by a later optimisation.
        with torch.inference_mode(False):
            _CONSTS[key] = torch.tensor(values, dtype=dtype).to(dev)
    return _CONSTS[key]


def _u(n: int, lo: float, hi: float, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=dev) * (hi - lo) + lo


def _eye(n: int, dev: torch.device) -> torch.Tensor:
    return torch.eye(3, device=dev).expand(n, 3, 3).clone()


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _inv_rot_shear(n: int, size: int, deg: float, shear: float, trans: float, gen, dev) -> torch.Tensor:
    """Inverse of ``T(c+t) R Sh T(-c)`` (rotation about the centre, shear in degrees, translation)."""
    c = (size - 1) / 2
    a = _u(n, -deg, deg, gen, dev) * (math.pi / 180)
    if shear:
        sx = torch.tan(_u(n, -shear, shear, gen, dev) * (math.pi / 180))
        sy = torch.tan(_u(n, -shear, shear, gen, dev) * (math.pi / 180))
    else:
        sx = sy = torch.zeros(n, device=dev)
    t = _u(2 * n, -trans, trans, gen, dev).view(2, n) * size if trans else torch.zeros(2, n, device=dev)
    # forward linear part L = R @ Sh, Sh = [[1, sx], [sy, 1]]; inverse via closed-form 2x2 inverse
    cos, sin = a.cos(), a.sin()
    l00, l01 = cos - sin * sy, cos * sx - sin
    l10, l11 = sin + cos * sy, sin * sx + cos
    det = l00 * l11 - l01 * l10
    inv = _eye(n, dev)
    inv[:, 0, 0], inv[:, 0, 1] = l11 / det, -l01 / det
    inv[:, 1, 0], inv[:, 1, 1] = -l10 / det, l00 / det
    return _translate(torch.full((n,), c, device=dev), torch.full((n,), c, device=dev)) @ inv @ _translate(
        -(c + t[0]), -(c + t[1])
    )


def _geo_affine(n, size, gen, dev):
    return _inv_rot_shear(n, size, 15.0, 5.0, 0.1, gen, dev)


def _geo_rotate(n, size, gen, dev):
    return _inv_rot_shear(n, size, 15.0, 0.0, 0.0, gen, dev)


def _geo_flip(n, size, gen, dev):
    m = _eye(n, dev)
    m[:, 0, 0], m[:, 0, 2] = -1.0, size - 1.0
    return m


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """3x3 maps taking ``src`` [n,4,2] points to ``dst``; ``solve_ex`` avoids a device sync."""
    n = src.shape[0]
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)  # [n,8,8]
    b = torch.cat([u, v], 1).unsqueeze(-1)
    h, _ = torch.linalg.solve_ex(a, b, check_errors=False)
    return torch.cat([h.squeeze(-1), torch.ones(n, 1, device=src.device, dtype=src.dtype)], 1).view(n, 3, 3)


def _geo_perspective(n, size, gen, dev, distortion: float = 0.7):
    s = size - 1.0
    corners = _const([[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]], dev).expand(n, 4, 2)
    inward = _const([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dev)
    off = torch.rand(n, 4, 2, generator=gen, device=dev) * (distortion * size / 2) * inward
    return _homography(corners + off, corners)  # output (distorted) -> source


def _crop_map(x0, y0, cw, ch, size):
    """Output pixel -> source pixel for a crop (x0, y0, cw, ch) resized to ``size``."""
    m = _eye(x0.shape[0], x0.device)
    m[:, 0, 0], m[:, 1, 1] = (cw - 1) / (size - 1), (ch - 1) / (size - 1)
    m[:, 0, 2], m[:, 1, 2] = x0, y0
    return m


def _geo_crop(n, size, gen, dev):
    side = _u(n, 0.75, 1.0, gen, dev) * size
    x0 = torch.rand(n, generator=gen, device=dev) * (size - side)
    y0 = torch.rand(n, generator=gen, device=dev) * (size - side)
    return _crop_map(x0, y0, side, side, size)


def _geo_resized_crop(n, size, gen, dev):
    area = _u(n, 0.1, 1.0, gen, dev) * size * size
    ratio = torch.exp(_u(n, math.log(0.75), math.log(1.333), gen, dev))
    cw = (area * ratio).sqrt().clamp(max=size)
    ch = (area / ratio).sqrt().clamp(max=size)
    x0 = torch.rand(n, generator=gen, device=dev) * (size - cw)
    y0 = torch.rand(n, generator=gen, device=dev) * (size - ch)
    return _crop_map(x0, y0, cw, ch, size)


_RGB_TO_YIQ = [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
_YIQ_TO_RGB = torch.linalg.inv(torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)).tolist()


def color_matrix(brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(A [n,3,3], bias [n,3])`` of brightness (add), contrast (scale), saturation and hue.

    Saturation scales and hue (radians) rotates the chroma plane (I, Q) of YIQ; luma is kept. The four
    adjustments of the classic ``ColorJitter`` (in its order) compose into one affine colour map.
    """
    dev, dt = brightness.device, brightness.dtype
    t, t_inv = _const(_RGB_TO_YIQ, dev, dt), _const(_YIQ_TO_RGB, dev, dt)
    cos, sin = hue.cos() * saturation, hue.sin() * saturation
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    m = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], -1).view(-1, 3, 3)
    a = contrast.view(-1, 1, 1) * (t_inv @ m @ t)
    return a, brightness.view(-1, 1) * a.sum(-1)


def _jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Classic colour jitter (brightness 0.1, contrast 0.1, saturation 0.1, hue 0.1) as one colour matrix.

    Why not kornia's four HSV-based ops: ~100 kernels and ~60 ms per step on a 2-core CPU for 8 cutouts;
    the matrix is one batched product. Clamped to [0, 1] once at the end instead of after each stage.
    """
    n, dev = x.shape[0], x.device
    a, bias = color_matrix(_u(n, -0.1, 0.1, gen, dev), _u(n, 0.9, 1.1, gen, dev), _u(n, 0.9, 1.1, gen, dev),
                           _u(n, -0.1, 0.1, gen, dev) * (2 * math.pi))
    y = torch.baddbmm(bias.to(x.dtype).unsqueeze(-1), a.to(x.dtype), x.flatten(2))
    return y.view_as(x).clamp(0.0, 1.0)


def _sharpness(x, gen):
    import kornia.enhance as KE

    return KE.sharpness(x, _u(x.shape[0], 0.0, 0.3, gen, x.device).to(x.dtype))


def _gauss_noise(x, gen):
    return x + torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def _erase(x, gen):
    n, _, hh, ww = x.shape
    dev = x.device
    area = _u(n, 0.1, 0.4, gen, dev) * hh * ww
    ratio = torch.exp(_u(n, math.log(0.3), math.log(1 / 0.3), gen, dev))
    eh, ew = (area * ratio).sqrt().clamp(max=hh), (area / ratio).sqrt().clamp(max=ww)
    y0 = torch.rand(n, generator=gen, device=dev) * (hh - eh)
    x0 = torch.rand(n, generator=gen, device=dev) * (ww - ew)
    ys = torch.arange(hh, device=dev).view(1, hh, 1)
    xs = torch.arange(ww, device=dev).view(1, 1, ww)
    box = (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + eh).view(-1, 1, 1)) & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + ew).view(-1, 1, 1))
    return x.masked_fill(box.unsqueeze(1), 0.0)


def _elastic(x, gen):
    from kornia.geometry.transform import elastic_transform2d

    noise = torch.rand(x.shape[0], 2, *x.shape[-2:], generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
    return elastic_transform2d(x, noise, kernel_size=(63, 63), sigma=(32.0, 32.0), alpha=(1.0, 1.0))


def _thin_plate(x, gen, scale: float = 0.8):
    from kornia.geometry.transform import get_tps_transform, warp_image_tps

    n, dev = x.shape[0], x.device
    src = _const([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], dev, x.dtype).expand(n, 5, 2)
    dst = src + (torch.rand(n, 5, 2, generator=gen, device=dev, dtype=x.dtype) * 2 - 1) * scale
    kernel, affine = get_tps_transform(dst, src)
    return warp_image_tps(x, src, kernel, affine, align_corners=False)


for _code, _fn, _p, _geo in [
    ("Af", _geo_affine, 0.7, True),
    ("Ro", _geo_rotate, 0.7, True),
    ("Pe", _geo_perspective, 0.7, True),
    ("Hf", _geo_flip, 0.5, True),
    ("Cr", _geo_crop, 0.5, True),
    ("Re", _geo_resized_crop, 0.5, True),
    ("Ji", _jitter, 0.7, False),
    ("Sh", _sharpness, 0.5, False),
    ("Gn", _gauss_noise, 0.5, False),
    ("Er", _erase, 0.7, False),
    ("Et", _elastic, 0.7, False),
    ("Ts", _thin_plate, 0.7, False),
]:
    AUGMENTS.register(_code, AugSpec(_fn, _p, _geo, capturable=_code != "Ts"))  # kornia's TPS solve checks on the host


def augment_names() -> list[str]:
    """Valid augmentation codes."""
    return AUGMENTS.names()


def parse_augments(codes: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"Af,Pe,Ji"`` / ``["Af","Pe"]`` / ``"none"`` -> validated codes (ValueError lists valid ones)."""
    if codes is None:
        return DEFAULT_AUGMENTS
    if isinstance(codes, str):
        codes = [] if codes.strip().lower() in ("", "none") else [c.strip() for c in codes.replace(" ", ",").split(",")]
    codes = [c for c in codes if c]
    for c in codes:
        AUGMENTS.get(c)
    return tuple(codes)


class Augmenter:
    """Apply augmentation codes in order to a batch of cutouts, then per-cutout noise (classic).

    Args:
        codes: augmentation codes (see module doc); validated here.
        noise_fac: per-cutout noise std drawn from ``U(0, noise_fac)`` (classic 0.1; 0 disables).
        padding: grid-sample padding of geometric warps: ``zeros`` (classic), ``border`` or ``reflection``.
    """

    def __init__(self, codes: str | Sequence[str] | None = DEFAULT_AUGMENTS, noise_fac: float = 0.1, padding: str = "zeros"):
        self.codes = parse_augments(codes)
        if padding not in ("zeros", "border", "reflection"):
            raise ValueError(f"unknown augmentation padding {padding!r}; valid: border, reflection, zeros")
        self.noise_fac, self.padding = noise_fac, padding
        self._stages: list[tuple[bool, list[AugSpec]]] = []
        for c in self.codes:
            spec = AUGMENTS.get(c)
            if spec.geometric and self._stages and self._stages[-1][0]:
                self._stages[-1][1].append(spec)
            else:
                self._stages.append((spec.geometric, [spec]))

    @property
    def not_capturable(self) -> list[str]:
        """Codes that cannot run inside a CUDA graph (see :class:`AugSpec`)."""
        return [c for c in self.codes if not AUGMENTS.get(c).capturable]

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Augment ``x`` [N,3,S,S] in [0,1]; all randomness from ``gen`` (on ``x``'s device)."""
        n, dev = x.shape[0], x.device
        for geometric, specs in self._stages:
            if geometric:
                inv = _eye(n, dev)
                for spec in specs:  # inverse of (B after A) is A^-1 @ B^-1: right-multiply in application order
                    m = spec.fn(n, x.shape[-1], gen, dev)
                    apply = (torch.rand(n, generator=gen, device=dev) < spec.p).view(n, 1, 1)
                    inv = inv @ torch.where(apply, m, _eye(n, dev))
                x = warp(x, inv, self.padding)
            else:
                spec = specs[0]
                apply = (torch.rand(n, generator=gen, device=dev) < spec.p).view(n, 1, 1, 1)
                x = torch.where(apply, spec.fn(x, gen), x)
        if self.noise_fac:
            facs = torch.rand(n, 1, 1, 1, generator=gen, device=dev, dtype=x.dtype) * self.noise_fac
            x = x + facs * torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype)
        return x
