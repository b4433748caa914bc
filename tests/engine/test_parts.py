"""The composable engine (``vqgan_core.engine``): loss terms on known values, config == composed, chains."""

from __future__ import annotations

import math

import pytest
import torch

from vqgan_core.engine import (
    ClipLoss,
    ImageLoss,
    InitLoss,
    LatentParam,
    OptimizerSpec,
    RunInfo,
    StepContext,
    Stepper,
    SumLoss,
    TVLoss,
    Views,
)
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.from_config import parts_from_config
from vqgan_core.engine.loop import GenerationLoop

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    base = {"prompts": "a red circle", "width": 32, "height": 32, "steps": 5, "seed": 3, "cutn": 4, "precision": "fp32",
            "log_every": 1}
    return GenerationConfig(**{**base, **kw})


def _stepper(vqgan, clip, cfg, **kw):
    p = parts_from_config(vqgan, clip, cfg, **kw)
    return Stepper(p.vqgan, p.latent, p.loss, p.optimizer, seed=cfg.seed, planned_steps=cfg.steps,
                   precision=cfg.precision, log_every=cfg.log_every)


@pytest.mark.parametrize("settings", [
    {},
    {"tv_weight": 0.3, "image_losses": {"symmetry": 0.5, "saturation": 0.2}, "init_weight": 0.5},
    {"precision": "auto", "method": "codebook_sampling", "augments": ["Af", "Ji"], "init_weight": 0.2},
    {"prompts": "red^blue", "change_prompts_every": 2, "story_fade": 1, "noise_prompts": "3:0.5", "seamless": True},
])
def test_config_run_equals_composed_run(vqgan, clip, settings):
    cfg = _cfg(**settings)
    old = GenerationLoop(vqgan, clip, cfg).run()
    new = _stepper(vqgan, clip, cfg).run(cfg.steps)
    assert torch.equal(old.latent, new.latent)
    assert torch.equal(old.images, new.images)
    assert [v for _, v in old.losses] == [v for _, v in new.losses]


def _parts(vqgan, clip, z0, **kw):
    loss = SumLoss([ClipLoss(clip, "a red circle", views=Views(cutn=4)), TVLoss(0.2),
                    InitLoss(0.5, "linear")])
    return LatentParam(vqgan, z0, **kw), loss


@pytest.mark.parametrize("method", ["z_quantize", "codebook_sampling"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "plateau"])
def test_chained_steppers_equal_one_run(vqgan, clip, method, schedule):
    """k chained runs of n steps == one run of k*n steps, bit for bit (state = the objects' state_dicts)."""
    z0 = torch.randn(1, vqgan.codebook.shape[1], 8, 8, generator=torch.Generator().manual_seed(1))
    spec = OptimizerSpec("adam", 0.1, schedule, schedule_steps=6)
    latent, loss = _parts(vqgan, clip, z0, method=method)
    whole = Stepper(vqgan, latent, loss, spec, seed=5, planned_steps=6, log_every=1).run(6)
    z, state = z0, None
    for _ in range(3):  # fresh parts each time, as chained graph nodes build them
        latent, loss = _parts(vqgan, clip, z, method=method)
        # the first part starts the run (its seed and plan); the others go on from the state, whatever they say
        seed, plan = (5, 6) if state is None else (99, 2)
        part = Stepper(vqgan, latent, loss, spec, seed=seed, planned_steps=plan, log_every=1, state=state).run(2)
        z, state = part.latent, part.state
    assert torch.equal(z, whole.latent) and torch.equal(part.images, whole.images)
    assert part.losses == whole.losses and state["step"] == 6


def test_state_refuses_other_parts(vqgan, clip):
    z0 = torch.zeros(1, vqgan.codebook.shape[1], 8, 8)
    latent, loss = _parts(vqgan, clip, z0)
    state = Stepper(vqgan, latent, loss, OptimizerSpec("adam"), planned_steps=2).run(1).state
    with pytest.raises(ValueError, match="adamw"):
        Stepper(vqgan, *_parts(vqgan, clip, z0), OptimizerSpec("adamw"), state=state)
    with pytest.raises(ValueError, match="loss terms"):
        Stepper(vqgan, LatentParam(vqgan, z0), SumLoss([TVLoss(1.0)]), OptimizerSpec("adam"), state=state)


def _ctx(img, latent=None, seamless=False):
    b = img.shape[0]
    z = torch.zeros(b, 4, 2, 2) if latent is None else latent
    run = RunInfo(torch.nn.Identity(), torch.device("cpu"), img.shape[-2], img.shape[-1], b, 0, z.clone(), 10,
                  seamless=seamless)
    return StepContext(0, torch.Generator(), z, z, z, run)


def test_tv_and_image_terms_known_values():
    img = torch.zeros(1, 3, 4, 4)
    img[..., :, 2:] = 1.0  # a vertical edge: 1/3 of horizontal neighbour pairs differ by 1
    ctx = _ctx(img)
    assert TVLoss(2.0)(img, ctx).item() == pytest.approx(2.0 / 3)
    ctx_tile = _ctx(img, seamless=True)  # circular: the wrap-around pair differs too (2 of 4)
    assert TVLoss(1.0)(img, ctx_tile).item() == pytest.approx(0.5)
    assert ImageLoss("symmetry", 1.0)(img, ctx).item() == pytest.approx(1.0)  # every pixel flips 0 <-> 1
    assert ImageLoss("brightness", 3.0)(img, ctx).item() == pytest.approx(-1.5)
    both = SumLoss([TVLoss(2.0), ImageLoss("brightness", 3.0)], weight=0.5)
    assert both(img, ctx).item() == pytest.approx(0.5 * (2.0 / 3 - 1.5))
    with pytest.raises(ValueError, match="valid names: .*symmetry"):
        ImageLoss("symetry")
    with pytest.raises(ValueError, match="finite"):
        TVLoss(float("nan"))


def test_init_loss_known_values_and_decay():
    target = torch.zeros(1, 4, 2, 2)
    latent = torch.full((1, 4, 2, 2), 2.0)  # mse 4
    ctx = _ctx(torch.zeros(1, 3, 8, 8), latent=latent)
    ctx.run.start_latent = target
    for decay, step, factor in [("none", 7, 1.0), ("classic", 1, 1 / 6), ("linear", 5, 0.5)]:
        term = InitLoss(0.5, decay)
        term.bind(ctx.run)
        term.prepare(step)
        assert term(ctx.z_q, ctx).item() == pytest.approx(0.5 * factor * 4.0), decay
    term = InitLoss(1.0, "none", target=torch.ones(1, 4, 2, 2))
    term.bind(ctx.run)
    term.prepare(0)
    assert term(ctx.z_q, ctx).item() == pytest.approx(1.0)
    assert torch.equal(term.state_dict()["target"], torch.ones(1, 4, 2, 2))
    with pytest.raises(ValueError, match="valid: classic, linear, none"):
        InitLoss(1.0, "exp")


def test_clip_loss_value_is_the_spherical_distance(clip):
    """With one cutout of the whole image, no augmentation: the loss is 2 arcsin(|a-b|/2)^2 of the embeddings."""
    torch.manual_seed(0)
    img = torch.rand(1, 3, clip.image_size, clip.image_size)
    term = ClipLoss(clip, "a red circle:2", views=Views("crops", cutn=1, cut_pow=0.0, augments=(), aug_noise=0.0))
    run = RunInfo(torch.nn.Identity(), torch.device("cpu"), clip.image_size, clip.image_size, 1, 0,
                  torch.zeros(1, 4, 2, 2), 1)
    term.bind(run)
    term.prepare(0)
    got = term(img, StepContext(0, torch.Generator(), img, img, img, run)).item()
    with torch.no_grad():
        a = torch.nn.functional.normalize(clip.encode_image(img), dim=-1)
        b = torch.nn.functional.normalize(clip.encode_text(["a red circle"]), dim=-1)
    d = (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2).item()
    assert got == pytest.approx(2 * d, rel=1e-4)


def test_per_guide_prompts_reach_only_their_guide(vqgan, clip, tiny_clip_dir):
    """Two CLIP losses with their own guide and prompt: each guide embeds only its own text."""
    from vqgan_core.clip.guide import load_clip

    other = load_clip(str(tiny_clip_dir))
    seen: dict[int, list[str]] = {id(clip): [], id(other): []}
    for g in (clip, other):
        orig = g.encode_text
        g.encode_text = (lambda o, k: (lambda texts: (seen[k].extend(texts), o(texts))[1]))(orig, id(g))
    try:
        loss = ClipLoss(clip, "apples", views=Views(cutn=2)) + ClipLoss(other, "pears", views=Views(cutn=3))
        z0 = torch.zeros(1, vqgan.codebook.shape[1], 8, 8)
        Stepper(vqgan, LatentParam(vqgan, z0), loss, OptimizerSpec(), planned_steps=1).run(1)
    finally:
        for g in (clip, other):
            del g.encode_text
    assert seen[id(clip)] == ["apples"] and seen[id(other)] == ["pears"]


def test_optimizer_spec_uses_torch_schedulers():
    p = torch.zeros(1, requires_grad=True)
    opt, sched = OptimizerSpec("adam", 0.1, "cosine").build([p], 5)
    assert isinstance(opt, torch.optim.Adam)
    assert isinstance(sched.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    factors = []
    for _ in range(5):
        factors.append(sched.factor())
        sched.step()
    assert factors[0] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert factors[2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    _, sched = OptimizerSpec("sgd", 1.0, "step").build([p], 8)
    assert isinstance(sched.scheduler, torch.optim.lr_scheduler.MultiStepLR) and sched.scheduler.milestones == {6: 1}
    with pytest.raises(ValueError, match="valid names: constant, cosine, plateau, step"):
        OptimizerSpec(schedule="warm")
    with pytest.raises(ValueError, match="valid names: .*adam"):
        OptimizerSpec("adamz")
