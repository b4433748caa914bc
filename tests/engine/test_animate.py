"""Animation in the engine: the frame motion, chunked runs, the zoom animation loop, restyled source frames."""

import dataclasses

import numpy as np
import pytest
import torch

from vqgan_core.animation.animate import AnimationConfig, SourceFrames, frame_transform, run_animation
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import GenerationCallbacks, GenerationLoop, run_generation

pytestmark = pytest.mark.usefixtures("one_thread")  # vqgan / clip: the tiny models of conftest.py


def _cfg(**kw):
    base = {"prompts": "a red circle", "width": 32, "height": 32, "steps": 3, "seed": 5, "cutn": 2, "precision": "fp32",
            "log_every": 1}
    return GenerationConfig(**{**base, **kw})

def _img(h=16, w=16):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))

def test_frame_transform_motions():
    x = _img()
    assert frame_transform(x, AnimationConfig(zoom=1.0)) is x  # no motion: the frame itself
    shifted = frame_transform(x, AnimationConfig(zoom=1.0, shift_x=2, shift_y=1))
    assert torch.allclose(shifted[..., 1:, 2:], x[..., :-1, :-2], atol=1e-5)  # content moved right 2, down 1
    rot = frame_transform(x, AnimationConfig(zoom=1.0, rotate=90))
    assert torch.allclose(rot, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)  # counter-clockwise on screen
    zoomed = frame_transform(x, AnimationConfig(zoom=2.0))
    for i, j in [(0, 0), (3, 10), (15, 15)]:  # each output pixel shows the source point c + (p - c) / zoom
        assert torch.allclose(zoomed[0, :, i, j], frame_ref(x, i, j), atol=1e-5)
    out = frame_transform(x, AnimationConfig(zoom=0.5, padding="zeros"))
    assert (out[..., 0, 0] == 0).all() and (out[..., 8, 8] > 0).all()  # zooming out reveals the zero padding

def test_wrap_padding_continues_the_image_as_a_tile():
    x = _img()
    for dx, dy in ((3, -2), (20, 37), (-50, 0)):  # any distance, even several tiles: a pure roll
        wrapped = frame_transform(x, AnimationConfig(zoom=1.0, shift_x=dx, shift_y=dy, padding="wrap"))
        assert torch.allclose(wrapped, torch.roll(x, (dy, dx), dims=(2, 3)), atol=1e-4)
    half = frame_transform(x, AnimationConfig(zoom=1.0, shift_x=0.5, padding="wrap"))  # across the seam too
    assert torch.allclose(half[..., 0], (x[..., 0] + x[..., -1]) / 2, atol=1e-5)
    far = frame_transform(x, AnimationConfig(zoom=0.25, padding="wrap"))  # 4 x 4 tiles: periodic, no fill
    assert torch.allclose(far[..., :4], far[..., 4:8], atol=1e-5) and torch.allclose(far[..., :4, :], far[..., 12:, :],
                                                                                      atol=1e-5)
    out = frame_transform(x, AnimationConfig(zoom=0.5, padding="wrap"))  # zooming out shows 2 x 2 tiles:
    assert out.shape == x.shape and torch.allclose(out[..., :8], out[..., 8:], atol=1e-6)  # periodic, no fill
    assert torch.allclose(out[..., :8, :], out[..., 8:, :], atol=1e-6)
    rot = frame_transform(x, AnimationConfig(zoom=1.0, rotate=90, padding="wrap"))
    assert torch.allclose(rot, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)  # inside the tile, as before

def frame_ref(x, i, j, zoom=2.0, c=7.5):
    """Bilinear sample of ``x`` at the source point of output pixel (i, j) under a zoom about the centre."""
    si, sj = c + (i - c) / zoom, c + (j - c) / zoom
    i0, j0 = int(np.floor(si)), int(np.floor(sj))
    di, dj = si - i0, sj - j0
    p = x[0]
    return ((1 - di) * (1 - dj) * p[:, i0, j0] + (1 - di) * dj * p[:, i0, j0 + 1]
            + di * (1 - dj) * p[:, i0 + 1, j0] + di * dj * p[:, i0 + 1, j0 + 1])

def test_animation_config_errors():
    with pytest.raises(ValueError, match="valid: reflection, border, zeros, wrap"):
        AnimationConfig(padding="mirror")
    with pytest.raises(ValueError, match="zoom must be between 0.1 and 10"):
        AnimationConfig(zoom=0)
    with pytest.raises(ValueError, match="frames must be between 1 and 1000000"):
        AnimationConfig(frames=0)
    with pytest.raises(ValueError, match="zooom"):
        AnimationConfig.from_dict({"zooom": 1.1})

def test_run_in_chunks_equals_one_run(vqgan, clip):
    whole = run_generation(vqgan, clip, _cfg(steps=5))
    loop = GenerationLoop(vqgan, clip, _cfg(steps=5))
    vqgan.requires_grad_(True).train()
    first = loop.run(max_steps=2)
    assert first.steps_done == 2 and not first.interrupted
    assert vqgan.training and all(p.requires_grad for p in vqgan.parameters())  # handed back between chunks
    rest = loop.run()
    assert rest.steps_done == 5 and torch.equal(rest.latent, whole.latent) and rest.losses == whole.losses
    vqgan.requires_grad_(False).eval()

def test_set_latent_copies_in_place_and_restarts_optimiser(vqgan, clip):
    loop = GenerationLoop(vqgan, clip, _cfg(steps=4, init_weight=0.5))
    loop.run(max_steps=2)
    assert loop.opt.state  # Adam has moments now
    z_before = loop.z
    target = loop.encode_images(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    loop.set_latent(target)
    assert loop.z is z_before and torch.equal(loop.z.detach(), target) and torch.equal(loop.z_init, target)
    assert not loop.opt.state
    with pytest.raises(ValueError, match=r"needs shape \(1, 16, 8, 8\)"):
        loop.set_latent(torch.zeros(1, 3, 4, 4))

def test_animation_frames_steps_seed_and_interrupt(vqgan, clip):
    anim = AnimationConfig(frames=4, steps_per_frame=2, zoom=1.25, rotate=10)
    progress, streamed = [], []
    cb = GenerationCallbacks(progress=lambda s, t, loss: progress.append((s, t)))
    a = run_animation(vqgan, clip, _cfg(), anim, cb, on_frame=lambda i, im: streamed.append(i))
    assert a.frames.shape == (4, 1, 3, 32, 32) and a.frames_done == 4 and not a.interrupted
    assert streamed == [0, 1, 2, 3] and progress[-1] == (3 + 3 * 2, 9) and len(progress) == 9
    assert a.config.steps == 3 and a.config.seed == 5 and a.latent.shape == (1, 16, 8, 8)
    assert not torch.equal(a.frames[0], a.frames[1])
    b = run_animation(vqgan, clip, _cfg(), anim)
    assert torch.equal(a.frames, b.frames)  # same seed, same frames
    # frame 0 is exactly the plain generation of the same settings
    assert torch.equal(a.frames[0], run_generation(vqgan, clip, _cfg()).images)
    stop = GenerationCallbacks(progress=lambda s, t, loss: progress.append(s), should_stop=lambda: len(progress) >= 8)
    progress.clear()
    c = run_animation(vqgan, clip, _cfg(), anim, stop)
    assert c.interrupted and c.frames_done == 3 and torch.equal(c.frames, a.frames[:3])

def test_story_prompts_span_frames(vqgan, clip):
    anim = AnimationConfig(frames=3, steps_per_frame=2, zoom=1.1)
    a = run_animation(vqgan, clip, _cfg(prompts="red ^ blue", change_prompts_every=3), anim)
    b = run_animation(vqgan, clip, _cfg(prompts="red"), anim)
    assert torch.equal(a.frames[0], b.frames[0]) and not torch.equal(a.frames[2], b.frames[2])

def _recon(vqgan, img01):
    with torch.no_grad():
        return vqgan.decode(vqgan.encode(img01 * 2 - 1)[0]).add(1).div(2).clamp(0, 1)

def test_restyle_source_frames_wiring(vqgan, clip):
    src = torch.rand(5, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    anim = AnimationConfig(frames=4, steps_per_frame=0, zoom=1.0)
    r = run_animation(vqgan, clip, _cfg(steps=0), anim, source=src)
    assert r.frames.shape == (4, 1, 3, 32, 32) and r.frames_done == 4  # min(frames, source frames)
    fitted = SourceFrames(src, 32, 32, 1)
    for f in range(4):  # no steps, no blend: each frame is the VQGAN's reconstruction of its source frame
        assert torch.allclose(r.frames[f], _recon(vqgan, fitted[f]), atol=1e-5)
    other = src.clone()
    other[1:] = torch.rand(4, 3, 40, 48, generator=torch.Generator().manual_seed(3))
    carried = run_animation(vqgan, clip, _cfg(steps=0), dataclasses.replace(anim, blend=1.0), source=other)
    same_start = run_animation(vqgan, clip, _cfg(steps=0), dataclasses.replace(anim, blend=1.0), source=src)
    assert torch.equal(carried.frames, same_start.frames)  # blend 1: later source frames are not used
    styled = run_animation(vqgan, clip, _cfg(steps=2), dataclasses.replace(anim, steps_per_frame=2, blend=0.3),
                           source=src)
    assert styled.frames.shape == (4, 1, 3, 32, 32) and not torch.equal(styled.frames, r.frames)

def test_smooth_shows_an_ewma_of_the_latents_and_leaves_the_run_alone(vqgan, clip, monkeypatch):
    src = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    anim = AnimationConfig(frames=4, steps_per_frame=2, zoom=1.0, blend=0.2)
    plain = run_animation(vqgan, clip, _cfg(steps=2), anim, source=src)
    raw, shown = [], []  # each frame's optimised latent; the latents decoded for the frames shown
    real_run, real_decode, real_result = GenerationLoop.run, GenerationLoop.decode, GenerationLoop.result
    in_result = []

    def run(self, max_steps=None):
        r = real_run(self, max_steps=max_steps)
        raw.append(r.latent)
        return r

    def result(self, interrupted=False):
        in_result.append(True)
        try:
            return real_result(self, interrupted)
        finally:
            in_result.pop()

    def decode(self, z):
        if not in_result:  # not the end-of-run decode of the loop's own latent
            shown.append(z.detach().clone())
        return real_decode(self, z)

    monkeypatch.setattr(GenerationLoop, "run", run)
    monkeypatch.setattr(GenerationLoop, "result", result)
    monkeypatch.setattr(GenerationLoop, "decode", decode)
    smooth = run_animation(vqgan, clip, _cfg(steps=2), dataclasses.replace(anim, smooth=0.6), source=src)
    assert torch.equal(smooth.latent, plain.latent)  # the optimisation runs on the unsmoothed latents
    assert torch.equal(smooth.frames[0], plain.frames[0]) and not torch.equal(smooth.frames[1:], plain.frames[1:])
    assert len(raw) == len(shown) == 4 and torch.equal(shown[0], raw[0])
    for f in range(1, 4):
        assert torch.allclose(shown[f], torch.lerp(raw[f], shown[f - 1], 0.6))
    with pytest.raises(ValueError, match="smooth averages latents of frames that stay in place"):
        AnimationConfig(zoom=1.05, smooth=0.5)
    with pytest.raises(ValueError, match="smooth must be between 0 and 0.99"):
        AnimationConfig(zoom=1.0, smooth=1.0)

def test_restyle_errors(vqgan, clip):
    with pytest.raises(ValueError, match="do not also give an init latent or init image"):
        run_animation(vqgan, clip, _cfg(), AnimationConfig(), source=torch.rand(2, 3, 8, 8),
                      init_latent=torch.zeros(1, 16, 8, 8))
    with pytest.raises(ValueError, match=r"\[F,3,H,W\] or \[F,B,3,H,W\]"):
        SourceFrames(torch.rand(2, 4, 8, 8), 32, 32, 1)
    with pytest.raises(ValueError, match="batch size is 3"):
        SourceFrames(torch.rand(2, 2, 3, 8, 8), 32, 32, 3)
    with pytest.raises(ValueError, match="blend must be between 0 and 1"):
        AnimationConfig(blend=1.5)

def test_init_weight_decay_restarts_every_frame(vqgan, clip, monkeypatch):
    import vqgan_core.engine.terms as gen  # the init pull-back term

    calls = []
    real = gen.init_weight_factor
    monkeypatch.setattr(gen, "init_weight_factor", lambda i, total, decay: calls.append((i, total)) or real(i, total, decay))
    run_animation(vqgan, clip, _cfg(steps=3, init_weight=0.5), AnimationConfig(frames=3, steps_per_frame=2, zoom=1.1))
    assert calls == [(0, 7), (1, 7), (2, 7), (0, 2), (1, 2), (0, 2), (1, 2)]  # each frame pulls from its start
