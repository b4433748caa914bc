"""Loader, latent, codebook, prompt and score nodes, and ComfyUI's memory management (stub ComfyUI, tiny models)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch

from tests.nodes.node_helpers import OPT, _start, harness, image, run

pytestmark = pytest.mark.usefixtures("comfy_state")


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


def test_codebook_edit_codes_are_checked_before_the_run(pack):
    check = pack.codebook.CodebookEdit.validate_inputs
    assert check(codes="3, 40 7") is True and check(codes=None) is True  # None: a linked input
    assert check(codes="3, x").startswith("codes: 'x' is not a code index")
    assert check(codes="-1") == "codes: Code -1 does not exist: code indices start at 0."
    assert "at least one" in check(codes=" ")


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

# -- latent morphs, scores, the shipped demo and taming models through the nodes ----------------------
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
    # the shipped demo: f4 VQGAN with 256 codes of dim 8; the guide is the pair (colours, shapes) seeing 64x64 images
    assert m.downsample_factor == 4 and tuple(m.codebook.shape) == (256, 8)
    assert [(m.name, m.image_size) for m, _ in g.guides] == [("demo", 64), ("demo-robust", 64)]
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
