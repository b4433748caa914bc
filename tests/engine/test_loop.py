"""The generation loop end to end (fixture VQGANs, tiny CLIP): seeds, callbacks, resumed runs, stories, regions."""

import numpy as np
import pytest
import torch

from tests.engine.engine_helpers import _cfg
from vqgan_core import load_vqgan
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import GenerationCallbacks, GenerationLoop, run_generation
from vqgan_core.latents.edit_mask import keep_cells
from vqgan_core.media.image_io import load_mask
from vqgan_core.objective.regions import RegionPrompt, RegionView

pytestmark = pytest.mark.usefixtures("one_thread")  # vqgan / clip: the tiny models of conftest.py


def test_same_seed_same_image_bit_identical(vqgan, clip):
    for precision in ("fp32", "auto"):
        a = run_generation(vqgan, clip, _cfg(precision=precision))
        b = run_generation(vqgan, clip, _cfg(precision=precision))
        assert torch.equal(a.images, b.images) and torch.equal(a.latent, b.latent)
        assert a.losses == b.losses
    c = run_generation(vqgan, clip, _cfg(seed=4))
    assert not torch.equal(a.latent, c.latent)


def test_seed_drawn_and_recorded(vqgan, clip):
    r = run_generation(vqgan, clip, _cfg(seed=None, steps=1))
    assert isinstance(r.config.seed, int)
    again = run_generation(vqgan, clip, r.config)
    assert torch.equal(r.images, again.images)


def test_loss_falls(vqgan, clip):
    cfg = _cfg(steps=15, augments=[], aug_noise=0.0, cutn=2, lr=0.2, log_every=1)
    r = run_generation(vqgan, clip, cfg)
    first = sum(v for _, v in r.losses[:3]) / 3
    last = sum(v for _, v in r.losses[-3:]) / 3
    assert last < first - 0.05, r.losses  # about 1.50 -> 1.32 for seeds 0-4


def test_batch_prompts_and_batched_seeds(vqgan, clip):
    cfg = _cfg(batch_size=2, batch_prompts=["red", "blue circle:1|red:-0.5"], steps=2)
    r = run_generation(vqgan, clip, cfg)
    assert r.images.shape == (2, 3, 32, 32) and r.latent.shape[0] == 2 and r.indices.shape == (2, 8, 8)
    # item b starts from the same latent as a solo run with seed+b
    solo = GenerationLoop(vqgan, clip, _cfg(seed=4, steps=0))
    batch = GenerationLoop(vqgan, clip, _cfg(seed=3, batch_size=2, steps=0))
    assert torch.equal(batch.z[1], solo.z[0])


def test_callbacks_save_preview_interrupt(vqgan, clip):
    saved, previews, progress = [], [], []
    stop_after = 4
    cb = GenerationCallbacks(
        progress=lambda s, t, loss: progress.append((s, t, loss)),
        save=lambda s, im: saved.append((s, im.shape)),
        preview=lambda s, im: previews.append(s),
        should_stop=lambda: len(progress) >= stop_after,
    )
    r = run_generation(vqgan, clip, _cfg(steps=10, save_every=2, preview_every=3, log_every=2), cb)
    assert r.interrupted and r.steps_done == stop_after
    assert [s for s, _ in saved] == [0, 2] and saved[0][1] == (1, 3, 32, 32) and previews == [0, 3]
    assert [p[2] is not None for p in progress] == [True, False, True, False]


def test_continue_from_latent_and_init_kinds(vqgan, clip):
    r1 = run_generation(vqgan, clip, _cfg(steps=3))
    loop = GenerationLoop(vqgan, clip, _cfg(steps=3), init_latent=r1.latent)
    assert torch.equal(loop.z.detach(), r1.latent)
    for kind in ("pixels", "gradient", "perlin"):
        r = run_generation(vqgan, clip, _cfg(init=kind, steps=1, init_weight=0.5))
        assert torch.isfinite(r.images).all()
    img = torch.rand(1, 3, 20, 30)
    r = run_generation(vqgan, clip, _cfg(init="image", steps=1), init_image=img, image_prompts=[(img, 1.0, float("-inf"))])
    assert r.images.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="valid names: random, image, gradient, perlin, pixels"):
        GenerationLoop(vqgan, clip, _cfg(init="plasma"))


def test_story_mode_switches_targets(vqgan, clip):
    loop = GenerationLoop(vqgan, clip, _cfg(prompts="red ^ blue circle", change_prompts_every=2, steps=4))
    e0, e2, e4 = (loop.targets.at(s)[0].embeds for s in (0, 2, 4))
    assert not torch.equal(e0, e2) and torch.equal(e0, e4)


def test_story_fade_mixes_the_two_sets_losses(vqgan, clip):
    """During a crossfade the loss is (1 - a) * loss(previous set) + a * loss(current set), a = 1/3, 2/3."""
    from vqgan_core.objective.losses import prompt_loss

    loop = GenerationLoop(vqgan, clip, _cfg(prompts="red ^ blue circle", change_prompts_every=6, story_fade=3))
    emb = torch.nn.functional.normalize(torch.randn(2, 4, loop.targets.at(0)[0].embeds.shape[1]), dim=-1)

    def loss(pack):
        return prompt_loss(emb, pack.embeds, pack.weights, pack.stops)

    red, blue = loss(loop.targets.at(0)[0]), loss(loop.targets.at(8)[0])
    assert not torch.allclose(red, blue)
    for step, a in ((6, 1 / 3), (7, 2 / 3)):
        assert torch.allclose(loss(loop.targets.at(step)[0]), (1 - a) * red + a * blue, atol=1e-6)
    assert loop.targets.key(6) == loop.targets.key(7)  # one pack (one CUDA graph) for the whole fade
    assert loop.targets.at(6)[0].weights is loop.targets.at(7)[0].weights  # rewritten in place
    story = {"prompts": "red ^ blue circle", "change_prompts_every": 2, "steps": 6}
    faded, cut = run_generation(vqgan, clip, _cfg(**story, story_fade=2)), run_generation(vqgan, clip, _cfg(**story))
    assert torch.isfinite(torch.tensor(faded.losses)).all() and not torch.equal(faded.latent, cut.latent)
    with pytest.raises(ValueError, match="story_fade .* at most change_prompts_every"):
        _cfg(change_prompts_every=2, story_fade=3)


def test_story_fade_per_item_when_stories_change_on_different_steps(clip):
    from vqgan_core.clip.guide import ClipEnsemble
    from vqgan_core.objective.prompts import PromptSchedule, parse_prompt_set
    from vqgan_core.objective.targets import TargetBank

    a, b, c, d = (parse_prompt_set(t) for t in ("red", "blue", "green", "white"))
    schedules = [PromptSchedule([(0, a), (4, b)], period=10), PromptSchedule([(0, c), (3, d)], period=10)]
    bank = TargetBank(ClipEnsemble.of(clip), schedules, None, None, fade=3)
    pack = bank.at(14)[0]  # item 0 is 1 step into "blue" (1/3), item 1 is 2 steps into "white" (2/3)
    w_prev, w_cur = bank._fade_weights[bank.key(14)][0]
    assert torch.allclose(pack.weights[0], torch.lerp(w_prev[0], w_cur[0], 1 / 3))
    assert torch.allclose(pack.weights[1], torch.lerp(w_prev[1], w_cur[1], 2 / 3))


def test_noise_prompts_ensemble_tv_and_options(vqgan, clip):
    cfg = _cfg(prompts="", noise_prompts="5:1|6:-0.5", tv_weight=0.1, optimizer="AdamW", lr_schedule="cosine",
               cutout_method="mixed", clip_weights=[1.0, 0.5], steps=2)
    r = run_generation(vqgan, [clip, clip], cfg)
    assert len(r.losses) == 2
    with pytest.raises(ValueError, match="clip_weights"):
        GenerationLoop(vqgan, clip, cfg)
    with pytest.raises(ValueError, match="no prompts"):
        GenerationLoop(vqgan, clip, _cfg(prompts=""))
    with pytest.raises(ValueError, match="valid names"):
        GenerationLoop(vqgan, clip, _cfg(optimizer="diffgrad"))


def test_gumbel_model_and_inference_mode(taming_fixtures, clip):
    gumbel = load_vqgan(taming_fixtures / "tiny_gumbel_f8" / "last.ckpt")
    with torch.inference_mode():  # as ComfyUI runs nodes
        r = run_generation(gumbel, clip, _cfg(width=32, height=32, steps=2))
    assert r.images.shape == (1, 3, 32, 32) and r.indices.shape == (1, 16, 16)  # f2


def test_config_json_roundtrip():
    cfg = _cfg(batch_size=2, batch_prompts=["a", "b"])
    assert GenerationConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown generation setting"):
        GenerationConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="precision"):
        _cfg(precision="fp8")

def test_region_covering_the_image_equals_a_global_prompt(vqgan, clip):
    whole = run_generation(vqgan, clip, _cfg(steps=3))
    region = run_generation(vqgan, clip, _cfg(prompts="", steps=3),
                            regions=[RegionPrompt(torch.ones(5, 7), "a red circle")])  # any mask size
    assert torch.equal(whole.latent, region.latent) and whole.losses == region.losses


def test_region_view_crops_the_box_and_greys_outside():
    mask = torch.zeros(32, 32)
    mask[4:12, 8:24] = 1.0
    mask[4:6, 8:10] = 0.0  # a notch inside the box
    view = RegionView(mask, 32, 32, torch.device("cpu"))
    img = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = view(img)
    assert view.box == (4, 12, 8, 24) and out.shape == (2, 3, 8, 16)
    assert torch.equal(out[..., 2:, 2:], img[..., 6:12, 10:24]) and (out[..., :2, :2] == 0.5).all()
    out.sum().backward()
    assert img.grad[..., 6:12, 10:24].eq(1).all() and img.grad[..., :4, :].eq(0).all() and img.grad[..., 4:6, 8:10].eq(0).all()


def test_regions_with_global_prompts_and_errors(vqgan, clip, tmp_path):
    from PIL import Image

    top = torch.zeros(32, 32)
    top[:16] = 1
    loop = GenerationLoop(vqgan, clip, _cfg(steps=2), regions=[RegionPrompt(top, "blue sky:1|clouds:0.5")])
    assert len(loop._banks) == 2 and loop._banks[1][0].box == (0, 16, 0, 32)
    r = loop.run()
    assert r.steps_done == 2 and torch.isfinite(r.images).all()
    with pytest.raises(ValueError, match="selects nothing"):
        GenerationLoop(vqgan, clip, _cfg(), regions=[RegionPrompt(torch.zeros(8, 8), "x")])
    with pytest.raises(ValueError, match=r"one \[H, W\] map"):
        GenerationLoop(vqgan, clip, _cfg(), regions=[RegionPrompt(torch.ones(2, 8, 8), "x")])
    with pytest.raises(ValueError, match="region 2 of 2: no prompts given"):
        GenerationLoop(vqgan, clip, _cfg(), regions=[RegionPrompt(top, "sky"), RegionPrompt(torch.ones(8, 8), "")])
    with pytest.raises(ValueError, match=r"\[mask file, prompts\]"):
        _cfg(region_prompts=[["only-a-mask.png"]])
    rgba = tmp_path / "alpha.png"  # the alpha channel wins over the colours: opaque = the region
    Image.fromarray(np.dstack([np.zeros((8, 8, 3), np.uint8), np.tile(np.array([0, 255], np.uint8), (8, 4))]),
                    "RGBA").save(rgba)
    assert load_mask(str(rgba))[0].tolist() == [0.0, 1.0] * 4
    opaque = tmp_path / "opaque.png"  # an RGBA export of a black-and-white mask: constant alpha -> brightness
    Image.fromarray(np.dstack([np.tile(np.array([0, 255], np.uint8), (8, 4))] * 3 + [np.full((8, 8), 255, np.uint8)]),
                    "RGBA").save(opaque)
    assert load_mask(str(opaque))[0].tolist() == [0.0, 1.0] * 4
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((4, 4), 255, np.uint8), "L").save(grey)
    assert load_mask(str(grey)).eq(1).all()
    from_file = GenerationLoop(vqgan, clip, _cfg(prompts="", region_prompts=[[str(grey), "a red circle"]]))
    assert from_file.targets is None and from_file._banks[0][0].box == (0, 32, 0, 32)


def test_edit_mask_keeps_the_cells_outside(vqgan, clip):
    right = torch.zeros(32, 32)
    right[:, 16:] = 1
    right[:, 14] = 1  # half of a cell column (f=4): not enough to make it editable
    keep = keep_cells(right, 8, 8, 4, torch.device("cpu"))
    assert keep.shape == (1, 1, 8, 8) and keep[..., :4].all() and not keep[..., 4:].any()
    r = run_generation(vqgan, clip, _cfg(steps=4, batch_size=2, seed=3), edit_mask=right)
    plain = run_generation(vqgan, clip, _cfg(steps=4, batch_size=2, seed=3))
    start_b = GenerationLoop(vqgan, clip, _cfg(steps=0, batch_size=2, seed=3)).z.detach()
    assert torch.equal(r.latent[..., :4], start_b[..., :4])  # kept bit for bit, every batch item
    assert not torch.equal(r.latent[..., 4:], start_b[..., 4:]) and not torch.equal(r.latent, plain.latent)
    with pytest.raises(ValueError, match="covers no latent cell"):
        GenerationLoop(vqgan, clip, _cfg(), edit_mask=torch.zeros(32, 32))

def test_region_image_prompts_are_fitted_to_the_region(vqgan, clip, monkeypatch):
    import vqgan_core.engine.clip_loss as gen  # where CLIP terms fit their image prompts

    sizes = []
    real = gen.fit_image
    monkeypatch.setattr(gen, "fit_image", lambda img, h, w: sizes.append((h, w)) or real(img, h, w))
    top = torch.zeros(32, 32)
    top[:12] = 1
    GenerationLoop(vqgan, clip, _cfg(), regions=[RegionPrompt(top, "", [(torch.rand(1, 3, 20, 20), 1.0, -1.0)])],
                   image_prompts=[(torch.rand(1, 3, 9, 9), 1.0, -1.0)])
    assert sorted(sizes) == [(12, 32), (32, 32)]  # the region's box, and the whole image for the global one

def test_resumed_plateau_schedule_goes_on_like_one_run(vqgan, clip):
    """The plateau schedule's best loss and patience survive a resume, and its checks fall on the whole run's
    cadence: 3 steps + a resume for 3 more == 6 in one go (without the carried state, the drop at step 4 is lost)."""
    from vqgan_core.engine.optim_spec import ScheduleFactor
    from vqgan_core.engine.run_state import continue_run, run_state

    def loop(steps, **kw):
        lp = GenerationLoop(vqgan, clip, _cfg(steps=steps, lr_schedule="plateau", log_every=2), **kw)
        lp.lr_schedule = ScheduleFactor("plateau", 6, patience=0, threshold=10.0)  # every check after the first drops
        return lp

    whole = loop(6).run()
    first = loop(6)
    first.run(max_steps=3)
    state = run_state(first)
    saved = state["lr_schedule"]
    assert saved["name"] == "plateau" and saved["state"]["factor"] == 0.5
    assert saved["state"]["scheduler"]["best"] == first.losses[0][1]
    rest = loop(3, init_latent=first.z.detach(), story_offset=3, schedule_offset=3)
    assert continue_run(rest, state, rng=True)
    assert torch.equal(rest.run().latent, whole.latent)
    forgetful = loop(3, init_latent=first.z.detach(), story_offset=3, schedule_offset=3)
    assert continue_run(forgetful, {k: v for k, v in state.items() if k != "lr_schedule"}, rng=True)
    assert not torch.equal(forgetful.run().latent, whole.latent)
