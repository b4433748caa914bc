"""Run the nodes against stub ComfyUI modules with tiny random models (what ComfyUI would do, minus the server)."""

from __future__ import annotations

import gc
import importlib.util
import weakref
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("comfy_stub_harness", REPO / "tests" / "comfy_stubs" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


@pytest.fixture(scope="module")
def pack():
    ns, saved = harness.load_pack()
    yield ns
    harness.unload_pack(saved)


@pytest.fixture(scope="module")
def vqgan():
    return harness.tiny_vqgan()


@pytest.fixture(scope="module")
def guide():
    return harness.tiny_guide()


@pytest.fixture(autouse=True)
def _comfy_state(pack):
    pack.comfy_utils.UPDATES.clear()
    pack.mm.INTERRUPT.update(flag=False, after_checks=None, checks=0)


def run(node_cls, **kw):
    """Execute like ComfyUI: under torch.inference_mode(), returning the output tuple."""
    with torch.inference_mode():
        out = node_cls.execute(**kw)
    return out.args


def image(b=1, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, 3, generator=g)


OPT = {"steps": 3, "optimizer": "adam", "lr": 0.1, "cutouts": 2, "cutout_method": "latest", "augmentations": "Af,Ji",
       "seed": 0, "init_weight": 0.0, "tv_weight": 0.0, "continue_run": True, "preview_every": 2}


# -- loaders ---------------------------------------------------------------------------------------------
def test_load_vqgan_from_models_folder_and_cache(pack, vqgan, tmp_path):
    from vqgan_core import save_vqgan

    folder = pack.folder_paths.get_folder_paths("vqgan")[-1]
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_vqgan(vqgan, Path(folder) / "tiny.safetensors")
    schema = pack.loaders.LoadVQGAN.define_schema()
    assert "tiny.safetensors" in schema.inputs[0].options["options"]
    (m1,) = run(pack.loaders.LoadVQGAN, vqgan_name="tiny.safetensors")
    (m2,) = run(pack.loaders.LoadVQGAN, vqgan_name="tiny.safetensors")
    assert m1 is m2 and m1.downsample_factor == 4
    assert not m1.codebook.is_inference()  # loaded outside inference mode: usable by autograd later
    ref = weakref.ref(m1)
    del m1, m2
    gc.collect()
    assert ref() is None  # the loader cache holds no strong reference: ComfyUI's "free cache" frees it


def test_ckpt_without_yaml_loads_and_a_broken_one_is_named(pack, taming_fixtures):
    """A taming .ckpt alone in models/vqgan loads (architecture read from the weights); a file that is no
    checkpoint gets an error naming it."""
    import shutil

    folder = Path(pack.folder_paths.get_folder_paths("vqgan")[-1])
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(taming_fixtures / "tiny_gumbel_f8" / "last.ckpt", folder / "lonely.ckpt")
    (model,) = run(pack.loaders.LoadVQGAN, vqgan_name="lonely.ckpt")
    assert model.config.quantizer == "gumbel" and model.config.extra["config_source"] == "inferred from the weights"
    shutil.copy(taming_fixtures / "tiny_gumbel_f8" / "model.yaml", folder / "lonely.yaml")  # its yaml arrives
    (again,) = run(pack.loaders.LoadVQGAN, vqgan_name="lonely.ckpt")
    assert again is not model and "config_source" not in again.config.extra and again.config.resolution == 16
    (folder / "broken.ckpt").write_bytes(b"x")
    with pytest.raises(Exception, match=r"broken\.ckpt.*not a readable PyTorch checkpoint"):
        run(pack.loaders.LoadVQGAN, vqgan_name="broken.ckpt")


def test_image_to_bchw_handles_grey_la_rgb_rgba(pack):
    ca = pack.comfy_adapters
    grey = torch.rand(2, 5, 6, 1)
    for c in (1, 2):
        x = ca.image_to_bchw(torch.cat([grey, torch.rand(2, 5, 6, c - 1)], -1))
        assert x.shape == (2, 3, 5, 6) and all(torch.equal(x[:, i], grey[..., 0]) for i in range(3))
    rgb = torch.rand(5, 6, 3)
    assert torch.equal(ca.image_to_bchw(rgb), rgb.movedim(-1, 0)[None])
    assert torch.equal(ca.image_to_bchw(torch.cat([rgb, torch.ones(5, 6, 1)], -1)), rgb.movedim(-1, 0)[None])
    with pytest.raises(ValueError, match="1, 2, 3 or 4 channels"):
        ca.image_to_bchw(torch.rand(1, 5, 6, 5))


def test_missing_model_file_names_the_folder(pack):
    with pytest.raises(ValueError, match="was not found in models/vqgan"):
        run(pack.loaders.LoadVQGAN, vqgan_name="nope.safetensors")


def test_combine_guides_flattens_and_weights(pack, guide):
    (ens,) = run(pack.loaders.CombineCLIPGuides, guide_1=guide, weight_1=1.0, guide_2=guide, weight_2=0.5)
    (ens2,) = run(pack.loaders.CombineCLIPGuides, guide_1=ens, weight_1=2.0, guide_2=guide, weight_2=1.0,
                  guide_3=None, weight_3=1.0)
    assert [w for _, w in ens2.guides] == [2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="weights are 0"):
        run(pack.loaders.CombineCLIPGuides, guide_1=guide, weight_1=0.0, guide_2=guide, weight_2=0.0)


# -- latents and codebook --------------------------------------------------------------------------------
def test_encode_decode_roundtrip_shapes_and_devices(pack, vqgan):
    (lat,) = run(pack.latent.VQGANEncode, vqgan=vqgan, image=image(2, 34, 30))  # cropped to 32x28
    assert lat.z.shape == (2, 8, 8, 7) and lat.model is vqgan and lat.pixel_size() == (28, 32)
    (img,) = run(pack.latent.VQGANDecode, latent=lat)
    assert img.shape == (2, 32, 28, 3) and img.dtype == torch.float32 and img.device.type == "cpu"
    assert 0 <= float(img.min()) and float(img.max()) <= 1


def test_encode_too_small_image_explains(pack, vqgan):
    with pytest.raises(ValueError, match="needs at least 4x4"):
        run(pack.latent.VQGANEncode, vqgan=vqgan, image=image(1, 3, 3))


def test_random_latent_seeded_and_batch_items_match_single_runs(pack, vqgan):
    kw = {"vqgan": vqgan, "width": 32, "height": 32, "init": "random"}
    (a,) = run(pack.latent.RandomVQLatent, seed=5, batch_size=3, **kw)
    (b,) = run(pack.latent.RandomVQLatent, seed=5, batch_size=3, **kw)
    (c,) = run(pack.latent.RandomVQLatent, seed=6, batch_size=1, **kw)
    assert torch.equal(a.z, b.z) and a.z.shape == (3, 8, 8, 8)
    assert torch.equal(a.z[1:2], c.z)  # item i == seed + i alone
    for init in ("pixels", "gradient", "perlin"):
        (d,) = run(pack.latent.RandomVQLatent, seed=1, batch_size=1, **{**kw, "init": init})
        assert d.z.shape == (1, 8, 8, 8)


def test_random_latent_seed_derivation_matches_the_engine(pack, vqgan, monkeypatch):
    """Item i is seeded with (seed + i) % 2**64 like vqgan_core.engine.loop, also past the 32-bit widget maximum.

    (CPU generators only use the low 32 bits, so the values agree either way; the seeds must match too.)
    """
    import vqgan_core

    seed, seen = 2**32 - 1, []
    real = vqgan_core.init_latent

    def spy(*args, **kwargs):
        seen.extend(g.initial_seed() for g in args[5])
        return real(*args, **kwargs)

    monkeypatch.setattr(vqgan_core, "init_latent", spy)  # the public name the node imports
    (a,) = run(pack.latent.RandomVQLatent, vqgan=vqgan, width=16, height=16, seed=seed, init="random", batch_size=2)
    assert seen == [seed, seed + 1]
    with torch.no_grad():
        ref = real(vqgan, "random", 1, 16, 16, [torch.Generator().manual_seed(seed + 1)])
    assert torch.equal(a.z[1:2], ref)


def test_random_latent_image_init_needs_image(pack, vqgan):
    with pytest.raises(ValueError, match="no init_image is connected"):
        run(pack.latent.RandomVQLatent, vqgan=vqgan, width=32, height=32, seed=0, init="image", batch_size=1)
    (lat,) = run(pack.latent.RandomVQLatent, vqgan=vqgan, width=32, height=32, seed=0, init="image", batch_size=2,
                 init_image=image(1, 50, 40))
    assert lat.z.shape == (2, 8, 8, 8)
    assert pack.latent.RandomVQLatent.validate_inputs(init="bogus").startswith("Unknown init 'bogus'")


def test_resize_latent(pack, vqgan):
    (lat,) = run(pack.latent.RandomVQLatent, vqgan=vqgan, width=16, height=16, seed=0, init="random", batch_size=1)
    (big,) = run(pack.latent.ResizeVQLatent, latent=lat, scale=2.0, mode="nearest")
    assert big.z.shape == (1, 8, 8, 8) and torch.equal(big.z[..., ::2, ::2], lat.z)


def test_codebook_lookup_edit_and_back(pack, vqgan):
    (lat,) = run(pack.latent.VQGANEncode, vqgan=vqgan, image=image(1, 32, 32))
    codes, code_map, text = run(pack.codebook.CodebookLookup, latent=lat)
    assert codes.indices.shape == (1, 8, 8) and code_map.shape == (1, 8, 8, 3) and len(text.splitlines()) == 8
    (back,) = run(pack.codebook.CodesToLatent, codes=codes)
    codes2, _, _ = run(pack.codebook.CodebookLookup, latent=back)
    assert torch.equal(codes.indices, codes2.indices)
    (edited,) = run(pack.codebook.CodebookEdit, latent=lat, codes="3, 5", pattern="tile", x=0, y=0, width=16,
                    height=32, seed=0)
    idx, _, _ = run(pack.codebook.CodebookLookup, latent=edited)
    left = idx.indices[0, :, :4]
    assert set(left.unique().tolist()) == {3, 5} and torch.equal(idx.indices[0, :, 4:], codes.indices[0, :, 4:])
    mask = torch.zeros(1, 32, 32)
    mask[:, 16:, :] = 1
    (edited,) = run(pack.codebook.CodebookEdit, latent=lat, codes="7", pattern="random", x=0, y=0, width=0,
                    height=0, seed=1, mask=mask)
    idx, _, _ = run(pack.codebook.CodebookLookup, latent=edited)
    assert (idx.indices[0, 4:] == 7).all() and torch.equal(idx.indices[0, :4], codes.indices[0, :4])
    assert not torch.equal(lat.z, edited.z)  # input untouched, new object


@pytest.mark.parametrize(("codes", "msg"), [("99", "codes 0 to 15"), ("a", "not a code index"), (" ", "at least one")])
def test_codebook_edit_errors(pack, vqgan, codes, msg):
    (lat,) = run(pack.latent.RandomVQLatent, vqgan=vqgan, width=16, height=16, seed=0, init="random", batch_size=1)
    with pytest.raises(ValueError, match=msg):
        run(pack.codebook.CodebookEdit, latent=lat, codes=codes, pattern="tile", x=0, y=0, width=8, height=8, seed=0)


# -- prompts ---------------------------------------------------------------------------------------------
def test_text_prompt_grammar_and_errors(pack):
    (t,) = run(pack.prompts.CLIPTextPrompt, text="a red circle:2|blurry:-1:0.1", weight=0.5)
    assert [(x.text, x.weight, x.stop) for x in t.items] == [("a red circle", 1.0, float("-inf")),
                                                              ("blurry", -0.5, 0.1)]
    assert pack.prompts.CLIPTextPrompt.validate_inputs(text="a||b").startswith("Prompt not understood")
    assert "empty" in pack.prompts.CLIPTextPrompt.validate_inputs(text="  ")
    assert pack.prompts.CLIPTextPrompt.validate_inputs(text=None) is True  # linked input


def test_image_prompt_and_combine(pack):
    (ti,) = run(pack.prompts.CLIPImagePrompt, image=image(2), weight=0.5, stop=-1.0)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="x", weight=1.0)
    (all_,) = run(pack.prompts.CombineTargets, targets_1=tt, targets_2=ti)
    assert [x.kind for x in all_.items] == ["text", "image", "image"]
    assert all_.items[1].image.shape == (1, 3, 32, 32) and all_.items[1].stop == float("-inf")


# -- optimise / generate / score -------------------------------------------------------------------------
def _start(pack, vqgan, batch=1, seed=0):
    (lat,) = run(pack.latent.RandomVQLatent, vqgan=vqgan, width=16, height=16, seed=seed, init="random",
                 batch_size=batch)
    return lat


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
    with pytest.raises(ValueError, match="2 story phrase sets.*change_prompts_every"):
        run(pack.optimize.VQGANCLIPOptimize, targets=both, **kw)
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
    assert "change_prompts_every" in gen.validate_inputs(prompt="a ^ b", change_prompts_every=0)
    assert gen.validate_inputs(prompt="a ^ b", change_prompts_every=10) is True
    # the crossfade widget: the previous and the current set side by side while it lasts
    keys.clear()
    faded, _ = run(pack.optimize.VQGANCLIPOptimize, targets=story, **{**kw, "steps": 4, "change_prompts_every": 2,
                                                                      "story_fade": 2})
    assert configs[-1].story_fade == 2 and ((0, 1),) in keys
    with pytest.raises(ValueError, match="story_fade .3. must be at most change_prompts_every .2."):
        run(pack.optimize.VQGANCLIPOptimize, targets=story, **{**kw, "change_prompts_every": 2, "story_fade": 3})



def test_interpolate_latents_node_makes_a_morph_batch(pack, vqgan):
    a, b = _start(pack, vqgan, batch=2, seed=1), _start(pack, vqgan, batch=2, seed=2)
    (mid,) = run(pack.latent.InterpolateVQLatents, latent_a=a, latent_b=b, frames=4, mode="slerp")
    assert mid.z.shape == (8, *a.z.shape[1:]) and mid.model is vqgan
    assert torch.equal(mid.z[:2], a.z) and torch.equal(mid.z[-2:], b.z)  # frame-major: A first, B last
    (frames,) = run(pack.latent.VQGANDecode, latent=mid)
    assert frames.shape[0] == 8
    with pytest.raises(ValueError, match="differ in shape"):
        run(pack.latent.InterpolateVQLatents, latent_a=a, latent_b=_start(pack, vqgan), frames=4, mode="linear")


def test_clip_score_ranks_batch(pack, guide):
    imgs = image(3, 16, 16)
    imgs[1] = 0.0
    (ti,) = run(pack.prompts.CLIPImagePrompt, image=imgs[1:2], weight=1.0, stop=-1.0)
    out = pack.score.CLIPScore.execute(clip_guide=guide, targets=ti, images=imgs)
    ranked, best, text, best_score = out.args
    assert torch.equal(best[0], imgs[1]) and ranked.shape == imgs.shape
    assert text.splitlines()[0].startswith("#1: image 1") and best_score == pytest.approx(100, abs=1e-3)
    assert out.ui.as_dict()["text"] == (text,)
    with pytest.raises(ValueError, match="at least one target"):
        pack.score.CLIPScore.execute(clip_guide=guide, targets=pack.types.Targets(), images=imgs)


def test_shipped_demo_models_load_in_the_nodes(pack):
    from vqgan_core.hub.assets import DEMO_DIR

    assert (DEMO_DIR / "vqgan.safetensors").is_file() and (DEMO_DIR / "clip" / "open_clip_config.json").is_file()
    (m,) = run(pack.loaders.LoadVQGAN, vqgan_name="demo")
    (g,) = run(pack.loaders.LoadCLIPGuide, clip_name="demo", pretrained="none")
    # the shipped demo: f4 VQGAN with 256 codes of dim 8, CLIP seeing 64x64 images
    assert m.downsample_factor == 4 and tuple(m.codebook.shape) == (256, 8)
    assert g.image_size == 64
    (lat,) = run(pack.latent.RandomVQLatent, vqgan=m, width=64, height=64, seed=0, init="random", batch_size=2)
    assert lat.z.shape == (2, m.config.embed_dim, 16, 16)
    (img,) = run(pack.latent.VQGANDecode, latent=lat)
    assert img.shape == (2, 64, 64, 3)


def test_taming_ckpt_with_yaml_gumbel_through_the_nodes(pack, guide, taming_fixtures):
    """A taming GumbelVQ .ckpt + .yaml from models/vqgan: load, encode/decode, optimise a few steps."""
    import shutil

    folder = Path(pack.folder_paths.get_folder_paths("vqgan")[-1])
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(taming_fixtures / "tiny_gumbel_f8" / "last.ckpt", folder / "tiny_gumbel.ckpt")
    shutil.copyfile(taming_fixtures / "tiny_gumbel_f8" / "model.yaml", folder / "tiny_gumbel.yaml")
    (m,) = run(pack.loaders.LoadVQGAN, vqgan_name="tiny_gumbel.ckpt")
    assert m.config.quantizer == "gumbel" and m.downsample_factor == 2
    (lat,) = run(pack.latent.VQGANEncode, vqgan=m, image=image(1, 32, 32))
    (img,) = run(pack.latent.VQGANDecode, latent=lat)
    assert img.shape == (1, 32, 32, 3)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    out, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=m, clip_guide=guide, targets=tt, **OPT)
    assert out.z.shape == lat.z.shape


# -- ComfyUI memory management (tests/nodes/test_comfyui_memory.py checks the same against the real thing) --
def test_loaders_register_models_and_runs_load_them_through_comfyui(pack, tmp_path):
    from vqgan_core import save_vqgan

    folder = Path(pack.folder_paths.get_folder_paths("vqgan")[-1])
    folder.mkdir(parents=True, exist_ok=True)
    save_vqgan(harness.tiny_vqgan(), folder / "managed.safetensors")
    (vq,) = run(pack.loaders.LoadVQGAN, vqgan_name="managed.safetensors")
    p = pack.memory.patcher_of(vq)
    assert p is not None and p.model is vq and p.offload_device == torch.device("cpu")
    guide = harness.tiny_guide()
    pack.memory.manage(guide.model)
    pack.mm.LOADS.clear()
    lat = _start(pack, vq)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    guide.lowp_model(torch.bfloat16)  # as a bf16 run makes
    run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=vq, clip_guide=guide, targets=tt, **OPT)
    loads = [([r() for r in refs], full) for refs, _mem, full in pack.mm.LOADS]
    assert ([p, pack.memory.patcher_of(guide.model)], True) in loads  # both models, loaded whole
    assert "_lowp" not in guide.__dict__  # copies ComfyUI cannot see do not outlive the run
    assert p.partial_loads == []  # a normal load is whole already
    pack.mm.NOVRAM["on"] = True
    try:  # --novram loads nothing whole: the rest is loaded on ComfyUI's books
        run(pack.latent.VQGANDecode, latent=lat)
    finally:
        pack.mm.NOVRAM["on"] = False
    assert p.partial_loads == [p.model_size()] and p.loaded_size() == p.model_size()


def test_copies_of_a_managed_model_share_its_patcher(pack, vqgan):
    import copy

    from vqgan_core.vqgan.seamless import seamless_copy

    m = pack.memory.manage(copy.deepcopy(vqgan))
    p = pack.memory.patcher_of(m)
    assert pack.memory.manage(m) is m and pack.memory.patcher_of(m) is p  # registered once
    assert pack.memory.patcher_of(seamless_copy(m)) is p and pack.memory.patcher_of(copy.deepcopy(m)) is p
    ens = harness.tiny_guide()
    assert list(pack.memory.modules_of(None, m, pack.loaders.CombineCLIPGuides.execute(
        guide_1=ens, weight_1=1.0, guide_2=harness.tiny_guide(), weight_2=1.0).args[0]))[0] is m


def test_weights_moved_under_inference_mode_are_made_normal_before_use(pack, vqgan):
    """ComfyUI moves models inside inference mode; autograd refuses such weights, so use() replaces them."""
    import copy

    m = copy.deepcopy(vqgan)
    with torch.inference_mode():
        m._apply(lambda t: t.clone())
    assert all(t.is_inference() for t in m.parameters())
    assert pack.memory.use(m) == torch.device("cpu")
    assert not any(t.is_inference() for t in [*m.parameters(), *m.buffers()])
    z = torch.randn(1, 8, 4, 4, requires_grad=True)
    m.decode(m.quantize_latent(z)[0] + 0 * z).sum().backward()  # usable by autograd again
    assert z.grad is not None


def test_runs_ask_comfyui_for_their_activation_memory_on_a_gpu(pack, vqgan, guide, monkeypatch):
    from vqgan_core.engine.config import GenerationConfig
    from vqgan_core.engine.memory_estimate import run_memory_bytes

    cfg = GenerationConfig(width=32, height=32, cutn=4, batch_size=2, precision="fp32")
    assert pack.memory.run_memory(vqgan, guide, cfg) == 0  # CPU: ComfyUI budgets no memory there
    cuda = torch.device("cuda")
    monkeypatch.setattr(pack.mm, "get_torch_device", lambda: cuda)
    assert pack.memory.run_memory(vqgan, guide, cfg, views=2) == run_memory_bytes(vqgan, guide, cfg, cuda, 2) > 0
    (whole,) = run(pack.prompts.CLIPTextPrompt, text="a red circle", weight=1.0)
    (region,) = run(pack.prompts.RegionTargets, targets=whole, mask=torch.ones(1, 8, 8))
    (both,) = run(pack.prompts.CombineTargets, targets_1=whole, targets_2=region)
    for targets, views in ((whole, 1), (region, 1), (both, 2)):  # each region is one more CLIP pass a step
        assert pack.optimize.run_views(targets, pack.optimize.region_prompts(targets)) == views


def test_use_puts_every_tensor_of_a_model_on_the_compute_device(pack, vqgan, monkeypatch):
    """Unmanaged models and the buffers of weight-sharing copies follow too (meta stands in for a GPU)."""
    import copy

    from vqgan_core.vqgan.seamless import seamless_copy

    m = copy.deepcopy(vqgan)
    m.register_buffer("extra", torch.ones(3))  # taming's segmentation models carry a buffer
    twin = seamless_copy(m)
    monkeypatch.setattr(pack.mm, "get_torch_device", lambda: torch.device("meta"))
    assert pack.memory.use(twin) == torch.device("meta")
    assert {t.device.type for t in [*twin.parameters(), *twin.buffers()]} == {"meta"}


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
