"""Optimize options reaching the engine: regions, masks, image losses, seamless, noise, lr schedule, stories, OOM."""

from __future__ import annotations

import pytest
import torch

from tests.nodes.node_helpers import OPT, _start, image, run

pytestmark = pytest.mark.usefixtures("comfy_state")


def test_region_targets_reach_the_engine(pack, vqgan, guide):
    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    (whole,) = run(pack.prompts.RegionTargets, targets=tt, mask=torch.ones(1, 9, 9))  # any size: resized
    kw = {"vqgan": vqgan, "clip_guide": guide}
    a, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, targets=tt, **kw, **OPT)
    b, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, targets=whole, **kw, **OPT)
    assert torch.equal(a.z, b.z)  # a region covering everything is the whole-image prompt
    top = torch.zeros(16, 16)
    top[:8] = 1
    (sky,) = run(pack.prompts.CLIPTextPrompt, text="blue sky", weight=1.0)
    (regional,) = run(pack.prompts.RegionTargets, targets=sky, mask=top)
    (both,) = run(pack.prompts.CombineTargets, targets_1=tt, targets_2=regional)
    assert "region mask (16, 16)" in both.describe()
    regions = pack.optimize.region_prompts(both)
    assert len(regions) == 1 and regions[0].prompts == "blue sky:1.0:-inf" and regions[0].mask is regional.items[0].region
    assert pack.optimize.prompt_string(both) == "a red circle:1.0:-inf"
    c, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, targets=both, **kw, **OPT)
    assert not torch.equal(c.z, a.z)
    with pytest.raises(ValueError, match="mask is empty"):
        run(pack.prompts.RegionTargets, targets=tt, mask=torch.zeros(16, 16))


def test_optimize_with_a_mask_inpaints(pack, vqgan, guide):
    lat = _start(pack, vqgan)  # 16x16 pixels, f=4: a 4x4 latent
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    mask = torch.zeros(1, 16, 16)
    mask[:, 8:, :] = 1  # the bottom half may change
    out, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=vqgan, clip_guide=guide, targets=tt, mask=mask,
                 **OPT)
    assert torch.equal(out.z[..., :2, :], lat.z[..., :2, :]) and not torch.equal(out.z[..., 2:, :], lat.z[..., 2:, :])
    with pytest.raises(ValueError, match="covers no latent cell"):
        run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=vqgan, clip_guide=guide, targets=tt,
            mask=torch.zeros(16, 16), **OPT)


def test_optimize_image_losses_widget(pack, vqgan, guide, monkeypatch):
    from vqgan_core.engine.loop import GenerationLoop

    seen, prepare = [], GenerationLoop._prepare_models
    monkeypatch.setattr(GenerationLoop, "_prepare_models",
                        lambda self: seen.append(self.config.checkpoint_decoder) or prepare(self))
    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {"latent": lat, "vqgan": vqgan, "clip_guide": guide, "targets": tt}
    a, _ = run(pack.optimize.VQGANCLIPOptimize, **kw, **OPT)
    b, _ = run(pack.optimize.VQGANCLIPOptimize, **kw, **OPT, image_losses="symmetry:5,saturation:1")
    assert not torch.equal(a.z, b.z)
    msg = pack.optimize.VQGANCLIPOptimize.validate_inputs(image_losses="glow:1")
    assert "image_losses:" in msg and "symmetry" in msg
    assert pack.optimize.VQGANCLIPOptimize.validate_inputs(image_losses="") is True
    assert "image_losses:" in pack.animate.VQGANCLIPZoomAnimation.validate_inputs(image_losses="x:y")
    c, _ = run(pack.optimize.VQGANCLIPOptimize, **kw, **OPT, low_memory=True)
    assert torch.equal(a.z, c.z)  # decoder checkpointing: the same result
    assert seen == [None, None, True]  # off: only after running out of memory; on: always



def test_out_of_memory_unloads_comfy_models_and_retries(pack, vqgan, guide, monkeypatch):
    from vqgan_core.engine.loop import GenerationLoop

    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {"latent": lat, "vqgan": vqgan, "clip_guide": guide, "targets": tt, **OPT}
    a, _ = run(pack.optimize.VQGANCLIPOptimize, **kw)
    real, failed = GenerationLoop._loss, []

    def tight(self, z):  # short of memory at step 1 until ComfyUI has unloaded its models
        if self.step_index == 1 and not pack.mm.UNLOADS:
            failed.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, z)

    pack.mm.UNLOADS.clear()
    monkeypatch.setattr(GenerationLoop, "_loss", tight)
    b, _ = run(pack.optimize.VQGANCLIPOptimize, **kw)
    assert failed == [1] and pack.mm.UNLOADS == [1] and torch.equal(a.z, b.z)



def test_seamless_vqgan_node_makes_tileable_runs_and_decodes(pack, vqgan, guide):
    from vqgan_core.vqgan.seamless import is_seamless

    (twin,) = run(pack.loaders.SeamlessVQGAN, vqgan=vqgan)
    assert is_seamless(twin) and not is_seamless(vqgan) and twin.codebook is vqgan.codebook
    lat = _start(pack, twin)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    out, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=twin, clip_guide=guide, targets=tt, **OPT)
    assert out.model is twin  # VQGAN Decode follows the latent's model: the circular decoder
    (img,) = run(pack.latent.VQGANDecode, latent=out)
    rolled = pack.types.Latent(z=torch.roll(out.z, (1, 2), (2, 3)), model=twin)
    (img_r,) = run(pack.latent.VQGANDecode, latent=rolled)
    f = vqgan.downsample_factor
    assert torch.allclose(img_r, torch.roll(img, (f, 2 * f), (1, 2)), atol=1e-5)  # IMAGE is [B,H,W,C]: no seams



def test_noise_prompt_node_reaches_the_engine(pack, vqgan, guide, monkeypatch):
    from vqgan_core.engine.loop import GenerationLoop

    configs, prepare = [], GenerationLoop._prepare_models
    monkeypatch.setattr(GenerationLoop, "_prepare_models", lambda self: configs.append(self.config) or prepare(self))
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    (noise,) = run(pack.prompts.CLIPNoisePrompt, seed=7, weight=0.5, stop=-1.0)
    assert noise.items[0].kind == "noise" and "seed 7" in noise.describe()
    (both,) = run(pack.prompts.CombineTargets, targets_1=tt, targets_2=noise)
    lat = _start(pack, vqgan)
    kw = {"latent": lat, "vqgan": vqgan, "clip_guide": guide, **OPT}
    a, _ = run(pack.optimize.VQGANCLIPOptimize, targets=tt, **kw)
    b, _ = run(pack.optimize.VQGANCLIPOptimize, targets=both, **kw)
    assert configs[-1].noise_prompts == "7:0.5:-inf" and configs[0].noise_prompts == ""
    assert not torch.equal(a.z, b.z)  # the random direction pulled too
    imgs = image(2, 16, 16)
    only_text = pack.score.CLIPScore.execute(clip_guide=guide, targets=tt, images=imgs).args[3]
    with_noise = pack.score.CLIPScore.execute(clip_guide=guide, targets=both, images=imgs).args[3]
    assert only_text == with_noise  # a random direction says nothing about quality: not scored
    with pytest.raises(ValueError, match="Noise prompts apply to the whole image"):
        run(pack.prompts.RegionTargets, targets=both, mask=torch.ones(1, 8, 8))



def test_lr_schedule_widget(pack, vqgan, guide, monkeypatch):
    from vqgan_core.engine.loop import GenerationLoop

    lrs, step = [], GenerationLoop.step

    def spy(self):  # the learning rate of each run's last step
        out = step(self)
        if self.step_index == self.config.steps:
            lrs.append(self.opt.param_groups[0]["lr"])
        return out

    monkeypatch.setattr(GenerationLoop, "step", spy)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {"latent": _start(pack, vqgan), "vqgan": vqgan, "clip_guide": guide, "targets": tt, **OPT}
    a, _ = run(pack.optimize.VQGANCLIPOptimize, **kw)
    b, _ = run(pack.optimize.VQGANCLIPOptimize, **kw, lr_schedule="cosine")
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.01)  # cosine ends at 0.1x
    assert not torch.equal(a.z, b.z)
    gen = {"vqgan": vqgan, "clip_guide": guide, "prompt": "a red circle", "width": 16, "height": 16, "steps": 2,
           "optimizer": "adam", "lr": 0.1, "cutouts": 2, "cutout_method": "latest", "augmentations": "none",
           "seed": 0, "preview_every": 0}
    run(pack.optimize.VQGANCLIPGenerate, **gen, lr_schedule="step")
    assert lrs[-1] == pytest.approx(0.01)  # pixray's drop after 75 %



def test_story_phrase_sets_in_the_graph(pack, vqgan, guide, monkeypatch):
    from vqgan_core.engine.loop import GenerationLoop

    configs, prepare = [], GenerationLoop._prepare_models
    monkeypatch.setattr(GenerationLoop, "_prepare_models", lambda self: configs.append(self.config) or prepare(self))
    (story,) = run(pack.prompts.CLIPTextPrompt, text="a red circle ^ a blue square|a cyan square:0.5", weight=1.0)
    assert [t.phase for t in story.items] == [0, 1, 1] and "phrase set 2" in story.describe()
    (style,) = run(pack.prompts.CLIPTextPrompt, text="blurry", weight=-0.5)  # no '^': in every phrase set
    (both,) = run(pack.prompts.CombineTargets, targets_1=story, targets_2=style)
    assert pack.optimize.prompt_string(both) == ("a red circle:1.0:-inf|blurry:-0.5:-inf^a blue square:1.0:-inf|"
                                                 "a cyan square:0.5:-inf|blurry:-0.5:-inf")
    kw = {"latent": _start(pack, vqgan), "vqgan": vqgan, "clip_guide": guide, **OPT}
    # no pace: the node's steps are shared evenly among the sets (a story never stops a graph half-way)
    run(pack.optimize.VQGANCLIPOptimize, targets=both, **kw, story_fade=5)
    assert (configs[-1].change_prompts_every, configs[-1].story_fade) == (-(-OPT["steps"] // 2), 2)
    assert pack.optimize.story_pace(both, 0, 100) == 50 and pack.optimize.story_pace(style, 0, 100) == 0
    assert pack.optimize.VQGANCLIPGenerate.validate_inputs(prompt="a ^ b") is True  # nothing to refuse before the run
    first, _ = run(pack.optimize.VQGANCLIPOptimize, targets=story, **kw, change_prompts_every=100)
    switching, _ = run(pack.optimize.VQGANCLIPOptimize, targets=story, **kw, change_prompts_every=1)
    assert configs[-1].change_prompts_every == 1 and "^" in configs[-1].prompts
    assert not torch.equal(first.z, switching.z)  # the second set took over after step 1
    anim = {"frames": 2, "zoom": 1.0, "shift_x": 0.0, "shift_y": 0.0, "rotate": 0.0, "padding": "border",
            "steps_per_frame": 1}
    opt = {k: v for k, v in OPT.items() if k not in ("steps", "continue_run")}
    run(pack.animate.VQGANCLIPZoomAnimation, latent=kw["latent"], vqgan=vqgan, clip_guide=guide, targets=both,
        **anim, **opt, change_prompts_every=1)
    assert configs[-1].change_prompts_every == 1 and configs[-1].prompts.count("^") == 1
    with pytest.raises(ValueError, match="Phrase set 2 of the story"):
        pack.prompts.parse_text_targets("a red circle ^ ", 1.0)
    # stories of different lengths each cycle on their own, whole-image and regional alike (lcm(2, 3) sets)
    (three,) = run(pack.prompts.CLIPTextPrompt, text="x ^ y ^ z", weight=1.0)
    (region,) = run(pack.prompts.RegionTargets, targets=three, mask=torch.ones(1, 8, 8))
    (two,) = run(pack.prompts.CLIPTextPrompt, text="a ^ b", weight=1.0)
    (mixed,) = run(pack.prompts.CombineTargets, targets_1=two, targets_2=region)
    sets = [s.split(":")[0] for s in pack.optimize.prompt_string(mixed).split("^")]
    assert sets == ["a", "b", "a", "b", "a", "b"]
    assert pack.optimize.prompt_string(region) == ""  # no whole-image text: no empty phrase sets either
    lat2 = _start(pack, vqgan)
    run(pack.optimize.VQGANCLIPOptimize, latent=lat2, vqgan=vqgan, clip_guide=guide, targets=region,
        **{**OPT, "steps": 2}, change_prompts_every=1)  # a regional story alone runs
    (regional,) = pack.optimize.region_prompts(mixed)
    assert [s.split(":")[0] for s in regional.prompts.split("^")] == ["x", "y", "z", "x", "y", "z"]
    (whole_three,) = run(pack.prompts.CombineTargets, targets_1=two, targets_2=three)
    assert [s.replace(":1.0:-inf", "") for s in pack.optimize.prompt_string(whole_three).split("^")] == [
        "a|x", "b|y", "a|z", "b|x", "a|y", "b|z"]
    from vqgan_core.objective.targets import TargetBank  # a continued run goes on with its story (2 steps per set here)

    keys, real_key = [], TargetBank.key
    monkeypatch.setattr(TargetBank, "key", lambda self, step: keys.append(real_key(self, step)) or keys[-1])
    two_steps = {**kw, "steps": 2, "change_prompts_every": 2}
    part1, _ = run(pack.optimize.VQGANCLIPOptimize, targets=story, **two_steps)
    assert set(keys) == {(0,)}
    keys.clear()
    run(pack.optimize.VQGANCLIPOptimize, targets=story, **{**two_steps, "latent": part1})
    assert set(keys) == {(1,)}  # the second phrase set, where the first node stopped
    keys.clear()
    run(pack.optimize.VQGANCLIPOptimize, targets=story, **{**two_steps, "latent": part1, "continue_run": False})
    assert set(keys) == {(0,)}  # a fresh run starts its story again
    gen = pack.optimize.VQGANCLIPGenerate
    assert gen.validate_inputs(prompt="a ^ b") is True  # paced by change_prompts_every, or its steps shared evenly
    # the crossfade widget: the previous and the current set side by side while it lasts
    keys.clear()
    faded, _ = run(pack.optimize.VQGANCLIPOptimize, targets=story, **{**kw, "steps": 4, "change_prompts_every": 2,
                                                                      "story_fade": 2})
    assert configs[-1].story_fade == 2 and ((0, 1),) in keys
    with pytest.raises(ValueError, match="story_fade .3. must be at most change_prompts_every .2."):
        run(pack.optimize.VQGANCLIPOptimize, targets=story, **{**kw, "change_prompts_every": 2, "story_fade": 3})
