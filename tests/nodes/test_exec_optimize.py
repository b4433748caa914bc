"""The Optimize, Generate and animation nodes: progress, determinism, chaining, saved latents (stub ComfyUI)."""

from __future__ import annotations

import pytest
import torch

from tests.nodes.node_helpers import OPT, _start, harness, image, run

pytestmark = pytest.mark.usefixtures("comfy_state")


# -- optimise / generate ---------------------------------------------------------------------------------
def test_optimize_runs_under_inference_mode_with_progress_and_previews(pack, vqgan, guide):
    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    out, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=vqgan, clip_guide=guide, targets=tt, **OPT)
    assert out.z.shape == lat.z.shape and not torch.equal(out.z, lat.z)
    assert not out.z.requires_grad and out.z.device.type == "cpu"
    ups = pack.comfy_utils.UPDATES
    assert [u[0] for u in ups] == [1, 2, 3] and all(u[1] == 3 for u in ups)
    previews = [u[2] for u in ups if u[2] is not None]
    assert len(previews) == 2 and previews[0][0] == "JPEG" and previews[0][1].size == (16, 16)
    assert pack.mm.INTERRUPT["checks"] >= 6  # before and after every step


def test_optimize_is_deterministic_and_chaining_continues(pack, vqgan, guide):
    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {"vqgan": vqgan, "clip_guide": guide, "targets": tt}
    a, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, **kw, **OPT)
    b, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, **kw, **OPT)
    assert torch.equal(a.z, b.z)
    assert a.state["steps"] == 3 and a.state["optimizer"] == "adam"
    cont, _ = run(pack.optimize.VQGANCLIPOptimize, latent=a, **kw, **OPT)
    fresh, _ = run(pack.optimize.VQGANCLIPOptimize, latent=a, **kw, **{**OPT, "continue_run": False})
    assert cont.state["steps"] == 6 and fresh.state["steps"] == 3
    assert not torch.equal(cont.z, fresh.z)  # Adam moments carried over change the steps


def test_chained_optimize_never_mutates_the_upstream_latent(pack, vqgan, guide):
    """Re-running the second Optimize of a chain (ComfyUI re-executes it, the first is cached) is reproducible."""
    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {"vqgan": vqgan, "clip_guide": guide, "targets": tt}
    a, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, **kw, **OPT)
    opt_state = a.state["optimizer_state"]["state"]
    before = {k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)} for k, v in opt_state.items()}
    z_before = a.z.clone()
    b1, _ = run(pack.optimize.VQGANCLIPOptimize, latent=a, **kw, **OPT)
    b2, _ = run(pack.optimize.VQGANCLIPOptimize, latent=a, **kw, **OPT)
    assert torch.equal(b1.z, b2.z)
    assert torch.equal(a.z, z_before)
    assert set(before) == set(opt_state) and len(before) == 1
    for k, tensors in before.items():
        assert {n for n, t in opt_state[k].items() if torch.is_tensor(t)} == set(tensors)
        for n, t in tensors.items():
            assert torch.equal(opt_state[k][n], t), n
    b_state = b1.state["optimizer_state"]["state"][0]
    assert all(b_state[n] is not opt_state[0][n] for n in ("exp_avg", "exp_avg_sq"))


def test_optimize_with_image_targets_ensemble_and_batch(pack, vqgan, guide):
    lat = _start(pack, vqgan, batch=2)
    (ti,) = run(pack.prompts.CLIPImagePrompt, image=image(1, 20, 20), weight=1.0, stop=-1.0)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="blue:-0.5", weight=1.0)
    (targets,) = run(pack.prompts.CombineTargets, targets_1=ti, targets_2=tt)
    (ens,) = run(pack.loaders.CombineCLIPGuides, guide_1=guide, weight_1=1.0, guide_2=harness.tiny_guide(24),
                 weight_2=1.0)
    out, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=vqgan, clip_guide=ens, targets=targets, **OPT)
    assert out.z.shape == (2, 8, 4, 4)


def test_optimize_interrupt_raises_comfy_exception(pack, vqgan, guide):
    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="x", weight=1.0)
    pack.mm.INTERRUPT["after_checks"] = 2
    with pytest.raises(pack.mm.InterruptProcessingException):
        run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=vqgan, clip_guide=guide, targets=tt,
            **{**OPT, "steps": 50})
    assert len(pack.comfy_utils.UPDATES) <= 2


def test_optimize_validation_messages(pack, vqgan, guide):
    msg = pack.optimize.VQGANCLIPOptimize.validate_inputs(augmentations="Af,Zz")
    assert "Unknown augmentation" in msg and "Pe" in msg
    assert pack.optimize.VQGANCLIPOptimize.validate_inputs(augmentations="none") is True
    lat = _start(pack, vqgan)
    with pytest.raises(ValueError, match="No targets"):
        run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=vqgan, clip_guide=guide,
            targets=pack.types.Targets(), **OPT)
    other = harness.tiny_vqgan()
    other.quantize.codebook.data = other.quantize.codebook.data[:8]  # a different codebook size
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="x", weight=1.0)
    with pytest.raises(ValueError, match="different VQGAN"):
        run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=other, clip_guide=guide, targets=tt, **OPT)


def test_generate_one_node(pack, vqgan, guide):
    kw = {k: v for k, v in OPT.items() if k not in ("init_weight", "tv_weight", "continue_run")}
    img, lat, _ = run(pack.optimize.VQGANCLIPGenerate, vqgan=vqgan, clip_guide=guide, prompt="a red circle",
                   width=18, height=16, **kw)
    assert img.shape == (1, 16, 16, 3) and lat.z.shape == (1, 8, 4, 4)
    img2, _, _ = run(pack.optimize.VQGANCLIPGenerate, vqgan=vqgan, clip_guide=guide, prompt="a red circle",
                  width=16, height=16, **kw)
    assert torch.equal(img, img2)
    assert "Prompt not understood" in pack.optimize.VQGANCLIPGenerate.validate_inputs(prompt="a:1:2:x|")

# -- animation -------------------------------------------------------------------------------------------
def test_zoom_animation_frames_progress_and_determinism(pack, vqgan, guide):
    lat = _start(pack, vqgan, batch=2)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {k: v for k, v in OPT.items() if k not in ("steps", "continue_run")}
    anim = {"frames": 3, "zoom": 1.25, "shift_x": 1.0, "shift_y": 0.0, "rotate": 5.0, "padding": "border",
            "steps_per_frame": 2}
    frames, last = run(pack.animate.VQGANCLIPZoomAnimation, latent=lat, vqgan=vqgan, clip_guide=guide, targets=tt,
                       **kw, **anim)
    assert frames.shape == (6, 16, 16, 3) and last.z.shape == lat.z.shape and last.z.device.type == "cpu"
    (first,) = run(pack.latent.VQGANDecode, latent=lat)
    diff = (frames[:2] - first).abs()
    assert diff.mean() < 0.005 and diff.max() < 0.05  # frame 0 is the input latent (decoded in bf16 here)
    assert not torch.equal(frames[2:4], frames[:2])
    ups = pack.comfy_utils.UPDATES
    assert [u[0] for u in ups] == [1, 2, 3, 4] and all(u[1] == 4 for u in ups)
    again, _ = run(pack.animate.VQGANCLIPZoomAnimation, latent=lat, vqgan=vqgan, clip_guide=guide, targets=tt,
                   **kw, **anim)
    assert torch.equal(frames, again)
    codes, last_c = run(pack.animate.VQGANCLIPZoomAnimation, latent=lat, vqgan=vqgan, clip_guide=guide, targets=tt,
                        **kw, **anim, method="codebook_sampling")
    assert not torch.equal(codes[2:], frames[2:])  # the method reaches the engine: each frame's codes are learnt
    cb, flat = vqgan.codebook.detach(), last_c.z.permute(0, 2, 3, 1).reshape(-1, vqgan.codebook.shape[1])
    assert torch.equal(cb[torch.cdist(flat, cb).argmin(1)], flat)  # the last latent is made of codes
    assert "Unknown augmentation" in pack.animate.VQGANCLIPZoomAnimation.validate_inputs(augmentations="Qq")
    with pytest.raises(ValueError, match="No targets"):
        run(pack.animate.VQGANCLIPZoomAnimation, latent=lat, vqgan=vqgan, clip_guide=guide,
            targets=pack.types.Targets(), **kw, **anim)


def test_zoom_padding_auto_wraps_for_a_seamless_vqgan(pack, vqgan, guide, monkeypatch):
    import vqgan_core
    from vqgan_core.vqgan.seamless import seamless_copy

    seen = []
    monkeypatch.setattr(vqgan_core, "run_animation", lambda vq, clip, cfg, anim, *a, **k: seen.append(anim.padding)
                        or (_ for _ in ()).throw(KeyboardInterrupt))
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {k: v for k, v in OPT.items() if k not in ("steps", "continue_run")}
    anim = {"frames": 2, "zoom": 1.0, "shift_x": 3.0, "shift_y": 0.0, "rotate": 0.0, "steps_per_frame": 1}
    for model, padding in ((vqgan, "auto"), (seamless_copy(vqgan), "auto"), (seamless_copy(vqgan), "zeros")):
        with pytest.raises(KeyboardInterrupt):
            run(pack.animate.VQGANCLIPZoomAnimation, latent=_start(pack, model), vqgan=model, clip_guide=guide,
                targets=tt, padding=padding, **kw, **anim)
    assert seen == ["reflection", "wrap", "zeros"]  # an explicit choice wins


def test_restyle_frames_one_output_per_input_frame(pack, vqgan, guide):
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {k: v for k, v in OPT.items() if k not in ("steps", "continue_run")}
    src = image(3, 18, 21)  # cropped/scaled to 16x20 (multiples of the factor 4)
    out, last = run(pack.animate.VQGANCLIPRestyleFrames, frames=src, vqgan=vqgan, clip_guide=guide, targets=tt,
                    first_steps=2, steps_per_frame=1, blend=0.5, smooth=0.0, **kw)
    assert out.shape == (3, 16, 20, 3) and last.z.shape == (1, 8, 4, 5)
    assert [u[0] for u in pack.comfy_utils.UPDATES] == [1, 2, 3, 4]
    smoothed, last_s = run(pack.animate.VQGANCLIPRestyleFrames, frames=src, vqgan=vqgan, clip_guide=guide,
                           targets=tt, first_steps=2, steps_per_frame=1, blend=0.5, smooth=0.8, **kw)
    assert torch.equal(last.z, last_s.z) and torch.equal(out[0], smoothed[0]) and not torch.equal(out, smoothed)
    coded, _ = run(pack.animate.VQGANCLIPRestyleFrames, frames=src, vqgan=vqgan, clip_guide=guide, targets=tt,
                   first_steps=2, steps_per_frame=1, blend=0.5, smooth=0.0, **kw, method="codebook_sampling")
    assert coded.shape == out.shape and not torch.equal(coded, out)
    with pytest.raises(ValueError, match="smaller than this VQGAN's factor 4"):
        run(pack.animate.VQGANCLIPRestyleFrames, frames=image(1, 3, 3), vqgan=vqgan, clip_guide=guide, targets=tt,
            first_steps=1, steps_per_frame=1, blend=0.5, smooth=0.0, **kw)

# -- saved latents and codebook sampling ------------------------------------------------------------------
def test_save_and_load_vq_latent_continue_the_run_exactly(pack, vqgan, guide):
    """Optimize 2 steps, save, load, Optimize 2 more == Optimize 2 + Optimize 2 chained in one session."""
    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {"vqgan": vqgan, "clip_guide": guide, "targets": tt, **{**OPT, "steps": 2}}
    first, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, **kw)
    chained, _ = run(pack.optimize.VQGANCLIPOptimize, latent=first, **kw)
    out = pack.latent_files.SaveVQLatent.execute(latent=first, filename_prefix="runs/lighthouse")
    saved = out.ui["latents"][0]
    assert saved["subfolder"] == "runs" and saved["filename"].endswith(".vqlatent")
    name = f"runs/{saved['filename']} [output]"
    assert name in pack.latent_files.LoadVQLatent.define_schema().inputs[1].options["options"]
    (loaded,) = run(pack.latent_files.LoadVQLatent, vqgan=vqgan, latent_file=name)
    assert torch.equal(loaded.z, first.z) and loaded.state["steps"] == 2
    resumed, _ = run(pack.optimize.VQGANCLIPOptimize, latent=loaded, **kw)
    assert torch.equal(resumed.z, chained.z)  # Adam's moments and the story step came back too
    before = pack.latent_files.LoadVQLatent.fingerprint_inputs(latent_file=name)
    assert pack.latent_files.LoadVQLatent.validate_inputs(latent_file="nope.vqlatent") == "Invalid latent file: nope.vqlatent"
    other = harness.tiny_vqgan()
    other.quantize.embedding.weight.data = torch.zeros(32, 8)  # a different codebook size
    with pytest.raises(ValueError, match="codebook .16, 8. and factor 4; this VQGAN has codebook .32, 8."):
        run(pack.latent_files.LoadVQLatent, vqgan=other, latent_file=name)
    import os
    import time

    path = pack.folder_paths.get_annotated_filepath(name)
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)
    assert pack.latent_files.LoadVQLatent.fingerprint_inputs(latent_file=name) != before  # re-read when rewritten


def test_codebook_sampling_chains_and_saves_its_code_distribution(pack, vqgan, guide):
    """method=codebook_sampling: the latent holds the most likely codes, the state the logits; a chained or
    saved-and-loaded Optimize goes on with them (and never changes the upstream node's)."""
    lat = _start(pack, vqgan)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    kw = {"vqgan": vqgan, "clip_guide": guide, "targets": tt, **{**OPT, "steps": 2, "lr": 1.0},
          "method": "codebook_sampling"}
    first, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, **kw)
    logits = first.state["logits"].clone()
    assert logits.shape[1] == vqgan.codebook.shape[0] and first.state["method"] == "codebook_sampling"
    codes = vqgan.codebook.detach()[logits.argmax(1)].permute(0, 3, 1, 2)
    assert torch.equal(first.z, codes)  # the latent is made of the most likely codes
    chained, _ = run(pack.optimize.VQGANCLIPOptimize, latent=first, **kw)
    assert torch.equal(first.state["logits"], logits)
    import dataclasses

    forgetful = dataclasses.replace(first, state={k: v for k, v in first.state.items() if k != "logits"})
    peaked, _ = run(pack.optimize.VQGANCLIPOptimize, latent=forgetful, **kw)  # logits rebuilt from the codes
    assert not torch.equal(chained.state["logits"], peaked.state["logits"])
    out = pack.latent_files.SaveVQLatent.execute(latent=first, filename_prefix="runs/codes")
    name = f"runs/{out.ui['latents'][0]['filename']} [output]"
    (loaded,) = run(pack.latent_files.LoadVQLatent, vqgan=vqgan, latent_file=name)
    resumed, _ = run(pack.optimize.VQGANCLIPOptimize, latent=loaded, **kw)
    assert torch.equal(resumed.z, chained.z) and torch.equal(resumed.state["logits"], chained.state["logits"])
    (img, latent, _) = run(pack.optimize.VQGANCLIPGenerate, vqgan=vqgan, clip_guide=guide, prompt="a red circle",
                        width=32, height=32, **{k: v for k, v in kw.items() if k not in (
                            "vqgan", "clip_guide", "targets", "init_weight", "tv_weight", "continue_run")})
    assert img.shape == (1, 32, 32, 3) and latent.state["method"] == "codebook_sampling"
