"""Written once: the nearest-code search, the Gumbel draw, the image warp, the mask reader and the atomic writer each
live in one function, and every user calls it. The scan fails when a second implementation appears; the unit tests
pin what the shared functions do (the Gumbel draw's random stream included: seeded runs depend on it)."""

from __future__ import annotations

import ast
import math
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from vqgan_core.media.image_io import load_mask
from vqgan_core.util.atomic import atomic_write_bytes
from vqgan_core.views.warp import warp
from vqgan_core.vqgan.quantize import GumbelQuantizer, nearest_code

REPO = Path(__file__).resolve().parents[2]
#: bench/ is left out on purpose: its replicas copy other projects' code (bench/REPLICAS.md)
SOURCES = sorted(p for d in ("vqgan_core", "training", "nodes", "workflows") for p in (REPO / d).rglob("*.py"))

QUANTIZE, WARP, IMAGE_IO, ATOMIC = (
    "vqgan_core/vqgan/quantize.py",
    "vqgan_core/views/warp.py",
    "vqgan_core/media/image_io.py",
    "vqgan_core/util/atomic.py",
)

#: what may appear only in the one module that holds the shared function
TEXT_RULES = [
    ("nearest-code search (argmin over distances)", re.compile(r"\bargmin\(|\bcdist\("), {QUANTIZE}),
    ("Gumbel draw", re.compile(r"exponential_\(|gumbel_softmax\(|log\(\s*-\s*(torch\.)?log\("), {QUANTIZE}),
    ("image warp", re.compile(r"\b(grid_sample|affine_grid|warp_affine|warp_perspective|homography_warp)\("), {WARP}),
    ("mask reader", re.compile(r"getchannel\(|while \w+\.dim\(\) > 2"), {IMAGE_IO}),
    ("ComfyUI MASK reader", re.compile(r"\[0\] if \w+\.(dim\(\)|ndim) == 3"), {"nodes/comfy_adapters.py"}),
]

#: renames into place outside util/atomic.py, each for a reason that is not "write a file atomically"
RENAME_ALLOWED = {
    "vqgan_core/hub/download.py": "the resumable .part download is renamed into place once complete",
    "training/checkpointing.py": "checkpoint folders (not files) are renamed into place, aside and away",
}


def _rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def test_each_shared_function_has_no_second_implementation():
    found = []
    for py in SOURCES:
        text = py.read_text(encoding="utf-8")
        for what, pattern, allowed in TEXT_RULES:
            if _rel(py) not in allowed:
                found += [f"{_rel(py)}:{text.count(chr(10), 0, m.start()) + 1}: {what}: {m.group(0)}"
                          for m in pattern.finditer(text)]
    assert not found, "a second implementation (call the shared one instead):\n" + "\n".join(found)


def _renames(tree: ast.AST) -> list[int]:
    """Lines of ``os.replace/rename``, ``shutil.move`` and ``Path.replace/rename(target)`` calls (``str.replace``
    takes two arguments, ``dataclasses.replace`` / ``config.replace`` keywords)."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        f = node.func
        owner = f.value.id if isinstance(f.value, ast.Name) else None
        if (owner, f.attr) in (("os", "replace"), ("os", "rename"), ("shutil", "move")) or (
                f.attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords and owner != "dataclasses"):
            lines.append(node.lineno)
    return lines


def test_one_atomic_writer():
    found = []
    for py in SOURCES:
        if _rel(py) in (ATOMIC, *RENAME_ALLOWED):
            continue
        found += [f"{_rel(py)}:{n}" for n in _renames(ast.parse(py.read_text(encoding="utf-8")))]
    assert not found, "a rename into place outside vqgan_core.util.atomic (use atomic_write):\n" + "\n".join(found)
    assert _renames(ast.parse((REPO / ATOMIC).read_text(encoding="utf-8")))  # the scan does see one
    for path in RENAME_ALLOWED:
        assert _renames(ast.parse((REPO / path).read_text(encoding="utf-8"))), f"{path} no longer renames: drop it"


# -- the shared functions -----------------------------------------------------------------------------------------
def test_nearest_code_latents_rows_and_chunks_agree_with_brute_force():
    g = torch.Generator().manual_seed(0)
    cb = torch.randn(37, 5, generator=g)
    z = torch.randn(2, 5, 3, 4, generator=g)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 5)
    brute = torch.cdist(rows.double(), cb.double()).argmin(1)
    assert torch.equal(nearest_code(z, cb).flatten(), brute)
    assert nearest_code(z, cb).shape == (2, 3, 4)
    assert torch.equal(nearest_code(rows, cb), brute)
    for chunk in (1, 5, 24, 1000):
        assert torch.equal(nearest_code(rows, cb, chunk=chunk), brute)
    assert torch.equal(nearest_code(z.bfloat16(), cb.bfloat16()), nearest_code(z.bfloat16().float(), cb.bfloat16().float()))
    assert nearest_code(rows[:0], cb).shape == (0,)


def test_gumbel_draw_streams_are_pinned_finite_and_gumbel_distributed():
    from vqgan_core.vqgan.quantize import gumbel_noise_like

    like = torch.zeros(4, 7, 50, 50)
    taming = gumbel_noise_like(like, torch.Generator().manual_seed(3))  # F.gumbel_softmax's draw
    assert torch.equal(taming, -torch.empty_like(like).exponential_(generator=torch.Generator().manual_seed(3)).log())
    uniform = gumbel_noise_like(like, torch.Generator().manual_seed(3), from_uniform=True)  # codebook sampling's
    u = torch.rand(like.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(uniform, -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny))))
    for noise in (taming, uniform):
        assert noise.shape == like.shape and noise.dtype == like.dtype and torch.isfinite(noise).all()
        assert abs(noise.mean().item() - 0.5772) < 0.01 and abs(noise.var().item() - math.pi**2 / 6) < 0.03
    torch.manual_seed(5)
    a = gumbel_noise_like(like)
    torch.manual_seed(5)
    assert torch.equal(a, gumbel_noise_like(like))  # no generator: the global stream
    torch.manual_seed(5)
    ref = torch.nn.functional.gumbel_softmax(like, tau=1.0, hard=False, dim=1)
    assert torch.allclose(ref, (like + a).softmax(1))  # what taming's GumbelQuantize draws in training


def test_both_samplers_use_the_one_gumbel_draw(vqgan):
    from vqgan_core.latents.code_sampling import CodeSampler
    from vqgan_core.vqgan.quantize import gumbel_noise_like

    q = GumbelQuantizer(16, 4).eval()
    h = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, _, idx = q(h, generator=torch.Generator().manual_seed(9))
        _, _, ref = q(h, gumbel_noise=gumbel_noise_like(q.proj(h), torch.Generator().manual_seed(9)))
    assert torch.equal(idx, ref)
    codes = CodeSampler(vqgan)
    logits = torch.randn(1, codes.k, 3, 3, generator=torch.Generator().manual_seed(1))
    _, idx = codes.sample(logits, torch.Generator().manual_seed(7))
    noise = gumbel_noise_like(logits, torch.Generator().manual_seed(7), from_uniform=True)
    assert torch.equal(idx, (logits + noise).argmax(1))


def test_warp_identity_roll_and_kornia_agreement():
    from kornia.geometry.transform import get_rotation_matrix2d, invert_affine_transform, warp_affine

    x = torch.rand(2, 3, 9, 12, generator=torch.Generator().manual_seed(0))
    eye = torch.eye(3).expand(2, 3, 3)
    for padding in ("zeros", "border", "reflection", "wrap"):
        assert torch.allclose(warp(x, eye, padding), x, atol=1e-6), padding
    shift = eye.clone()
    shift[:, 0, 2], shift[:, 1, 2] = -3, 2  # output (u, v) shows source (u - 3, v + 2)
    assert torch.allclose(warp(x, shift, "wrap"), torch.roll(x, (-2, 3), dims=(2, 3)), atol=1e-5)
    m = get_rotation_matrix2d(torch.tensor([[5.5, 4.0]]).expand(2, 2), torch.tensor([20.0, -35.0]),
                              torch.tensor([[1.2, 1.2], [0.8, 0.8]]))
    inv = torch.cat([invert_affine_transform(m), torch.tensor([[[0.0, 0.0, 1.0]]]).expand(2, 1, 3)], 1)
    for padding in ("zeros", "border", "reflection"):  # the forward map through kornia, the inverse through ours
        ref = warp_affine(x, m, (9, 12), mode="bilinear", padding_mode=padding, align_corners=True)
        assert torch.allclose(warp(x, inv, padding), ref, atol=1e-5), padding
    with pytest.raises(ValueError, match="valid: zeros, border, reflection, wrap"):
        warp(x, eye, "mirror")


def test_load_mask_reads_tensors_of_one_map_and_names_the_mask_otherwise():
    m = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    got = load_mask(m)
    assert got.shape == (5, 6) and got.dtype == torch.float32 and not got.requires_grad
    assert torch.equal(load_mask(torch.ones(4, 4, dtype=torch.uint8)), torch.ones(4, 4))
    with pytest.raises(ValueError, match=r"an edit mask must be one \[H, W\] map, got shape \(2, 4, 4\)"):
        load_mask(torch.ones(2, 4, 4), "an edit mask")
    with pytest.raises(FileNotFoundError, match="mask not found"):
        load_mask("no/such/mask.png")


def test_atomic_write_bytes(tmp_path):
    p = atomic_write_bytes(tmp_path / "sub" / "a.json", '{"é": 1}\n')
    assert p.read_bytes() == '{"é": 1}\n'.encode()
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01" and os.listdir(p.parent) == ["a.json"]  # no temporary file left
    if os.name == "posix":
        mask = os.umask(0)
        os.umask(mask)
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
