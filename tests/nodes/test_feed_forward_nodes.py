"""Load Feed-Forward Model and Feed-Forward Text to Latent (stub ComfyUI, tiny random models): the latent decodes,
is seeded, starts the optimiser, and a feed-forward model next to the wrong VQGAN or CLIP is a clean error."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.nodes.node_helpers import OPT, _start, harness, run

pytestmark = pytest.mark.usefixtures("comfy_state")

FILE = "tiny_ff.safetensors"
TEXT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def ff_file(pack, vqgan, guide):
    """A tiny random feed-forward net for the tiny VQGAN (4x4 codes = 16x16 pixels) and toy CLIP, saved in
    models/vqgan_feed_forward before any schema lists the folder."""
    import os

    from vqgan_core import FeedForwardConfig, FeedForwardNet, save_feed_forward, vqgan_fingerprint

    cfg = FeedForwardConfig(text_dim=guide.embed_dim(), noise_dim=4, grid=(4, 4), base=(2, 2), width=16, min_width=8,
                            latent_channels=8, n_embed=16, vqgan="tiny_vqgan", vqgan_fingerprint=vqgan_fingerprint(vqgan),
                            clip=guide.spec)
    torch.manual_seed(0)
    with torch.inference_mode(False):
        net = FeedForwardNet(cfg)
        for p in net.parameters():  # a fresh net starts text-blind (zero FiLM): give every weight a value
            torch.nn.init.normal_(p, std=0.5)
    folder = os.path.join(pack.folder_paths.models_dir, "vqgan_feed_forward")
    os.makedirs(folder, exist_ok=True)
    return save_feed_forward(net, os.path.join(folder, FILE))


@pytest.fixture(scope="module")
def ff(pack, ff_file):
    (net,) = run(pack.feed_forward.LoadFeedForward, feed_forward_name=FILE)
    return net


def _latent(pack, vqgan, guide, ff, text=TEXT, seed=0, batch_size=1, **kw):
    (lat,) = run(pack.feed_forward.FeedForwardLatent, vqgan=vqgan, clip_guide=guide, feed_forward=ff, text=text,
                 seed=seed, batch_size=batch_size, **kw)
    return lat


def _other_vqgan(n_embed=16, seed=5):
    """A VQGAN of the tiny one's architecture with other codes (or another codebook size)."""
    from vqgan_core import VQGAN, VQGANConfig

    cfg = VQGANConfig(resolution=32, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(),
                      z_channels=8, embed_dim=8, n_embed=n_embed)
    torch.manual_seed(seed)
    with torch.inference_mode(False):
        return VQGAN(cfg).eval().requires_grad_(False)


def test_schemas_fit_the_pack(pack, ff_file):
    fwd = pack.feed_forward
    assert fwd.LoadFeedForward in pack.extension.NODES and fwd.FeedForwardLatent in pack.extension.NODES
    loader, node = fwd.LoadFeedForward.define_schema(), fwd.FeedForwardLatent.define_schema()
    assert (loader.category, node.category) == ("vqgan_clip/loaders", "vqgan_clip/latent")
    (name,) = loader.inputs
    assert name.options["options"][:1] == ["demo"] and name.options["default"] == "demo"
    assert FILE in name.options["options"]
    info = harness.object_info(fwd.FeedForwardLatent)
    # the sockets connect to the pack's own: the loader's output, Load VQGAN, Load CLIP Guide, Decode, Optimize
    req = info["input"]["required"]
    assert req["feed_forward"][0] == harness.object_info(fwd.LoadFeedForward)["output"][0]
    assert req["vqgan"][0] == harness.object_info(pack.loaders.LoadVQGAN)["output"][0]
    assert req["clip_guide"][0] == harness.object_info(pack.loaders.LoadCLIPGuide)["output"][0]
    assert info["input"]["optional"]["targets"][0] == harness.object_info(pack.prompts.CLIPTextPrompt)["output"][0]
    assert info["output"] == [harness.object_info(pack.latent.VQGANDecode)["input"]["required"]["latent"][0]]
    assert info["output"][0] == harness.object_info(pack.optimize.VQGANCLIPOptimize)["input"]["required"]["latent"][0]
    widgets = [i.id for i in node.inputs if i.io_type in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
    assert widgets == ["text", "seed", "batch_size"]
    assert pack.folder_paths.folder_names_and_paths["vqgan_feed_forward"][1] == {".safetensors"}


def test_loader_caches_and_refuses_what_is_not_in_its_folder(pack, ff_file, ff, tmp_path):
    import os
    import shutil

    fwd = pack.feed_forward
    (again,) = run(fwd.LoadFeedForward, feed_forward_name=FILE)
    assert again is ff  # one model while anything uses it
    assert not any(p.is_inference() for p in ff.parameters())  # built outside inference mode
    assert fwd.LoadFeedForward.validate_inputs(feed_forward_name=FILE) is True
    assert fwd.LoadFeedForward.validate_inputs(feed_forward_name="demo") is True
    folder = pack.folder_paths.get_folder_paths("vqgan_feed_forward")[0]
    secret = shutil.copyfile(ff_file, tmp_path / "outside.safetensors")  # a valid model, outside the folder
    bad = {"missing": "missing.safetensors", "absolute": str(secret), "absolute missing": str(tmp_path / "no.safetensors"),
           "dotdot": os.path.relpath(secret, folder), "dotdot missing": os.path.relpath(tmp_path / "no.safetensors", folder),
           "absolute inside": str(ff_file), "other suffix": "tiny_ff.ckpt"}
    messages = set()
    for value in bad.values():
        msg = fwd.LoadFeedForward.validate_inputs(feed_forward_name=value)
        assert msg.startswith("Feed-forward model") and f"searched: {folder}" in msg, msg
        with pytest.raises(ValueError, match="was not found in models/vqgan_feed_forward") as e:
            run(fwd.LoadFeedForward, feed_forward_name=value)
        assert str(e.value) == msg
        messages.add(msg.replace(value, "<X>"))
    assert len(messages) == 1, messages  # the same words whether or not such a file exists


def test_latent_decodes_to_the_models_size(pack, vqgan, guide, ff):
    lat = _latent(pack, vqgan, guide, ff, batch_size=2)
    assert isinstance(lat, pack.types.Latent) and lat.model is vqgan
    assert lat.z.shape == (2, 8, 4, 4) and torch.isfinite(lat.z).all() and lat.pixel_size() == (16, 16)
    (img,) = run(pack.latent.VQGANDecode, latent=lat)
    assert img.shape == (2, 16, 16, 3) and 0 <= img.min() and img.max() <= 1 and img.std() > 0


def test_same_seed_same_latent_and_item_b_uses_seed_plus_b(pack, vqgan, guide, ff):
    a = _latent(pack, vqgan, guide, ff, seed=7, batch_size=2)
    b = _latent(pack, vqgan, guide, ff, seed=7, batch_size=2)
    assert torch.equal(a.z, b.z)
    second = _latent(pack, vqgan, guide, ff, seed=8)
    assert torch.allclose(a.z[1:], second.z, atol=1e-6)  # as a single run with seed + 1
    assert not torch.allclose(a.z[0], a.z[1])  # the noise input makes the items differ
    other_text = _latent(pack, vqgan, guide, ff, text="a green square on a white background", seed=7)
    assert not torch.allclose(a.z[:1], other_text.z)  # the network reads the prompt


def test_targets_input_replaces_the_text(pack, vqgan, guide, ff):
    prompt = "a red circle:1|a blue square:-0.5"
    (tt,) = run(pack.prompts.CLIPTextPrompt, text=prompt, weight=1.0)
    from_targets = _latent(pack, vqgan, guide, ff, text="", seed=3, targets=tt)
    from_text = _latent(pack, vqgan, guide, ff, text=prompt, seed=3)
    assert torch.allclose(from_targets.z, from_text.z, atol=1e-6)
    plain = _latent(pack, vqgan, guide, ff, text="a red circle", seed=3)
    assert not torch.allclose(from_text.z, plain.z)  # the weighted second prompt counts
    (noise,) = run(pack.prompts.CLIPNoisePrompt, seed=1, weight=1.0, stop=-1.0)
    with pytest.raises(ValueError, match="hold no whole-image text prompt"):
        _latent(pack, vqgan, guide, ff, targets=noise)
    with pytest.raises(ValueError, match="The prompt is empty"):
        _latent(pack, vqgan, guide, ff, text="  ")
    assert pack.feed_forward.FeedForwardLatent.validate_inputs(text="a||").startswith("Prompt not understood")
    assert pack.feed_forward.FeedForwardLatent.validate_inputs(text="") is True  # targets may be connected


def test_wrong_vqgan_or_clip_is_a_clean_error(pack, vqgan, guide, ff):
    node = pack.feed_forward.FeedForwardLatent
    kw = {"clip_guide": guide, "feed_forward": ff, "text": TEXT, "seed": 0, "batch_size": 1}
    with pytest.raises(ValueError, match=r"other codes than the one this feed-forward model was trained with: it was "
                       r"trained for VQGAN tiny_vqgan.*Connect the Load VQGAN"):
        run(node, vqgan=_other_vqgan(), **kw)
    with pytest.raises(ValueError, match="predicts 16 codes of 8 channels, this VQGAN \\(32 codes of 8 channels\\) "
                       "has 32 of 8"):
        run(node, vqgan=_other_vqgan(n_embed=32), **kw)
    wide = harness.tiny_guide(dim=16)  # the CLIP it names, with other embeddings
    with pytest.raises(ValueError, match=r"reads 8-d CLIP text embeddings \(toy\); the CLIP given embeds to 16"):
        run(node, vqgan=vqgan, **{**kw, "clip_guide": wide})
    wide = dataclasses.replace(wide, name="other")
    with pytest.raises(ValueError, match="reads 8-d text embeddings of CLIP toy; none of the run's CLIP models "
                       r"\(other\) gives them"):
        run(node, vqgan=vqgan, **{**kw, "clip_guide": wide})
    # in an ensemble the network picks the guide it was trained with
    (ens,) = run(pack.loaders.CombineCLIPGuides, guide_1=wide, weight_1=1.0, guide_2=guide, weight_2=1.0)
    assert torch.equal(run(node, vqgan=vqgan, **{**kw, "clip_guide": ens})[0].z, run(node, vqgan=vqgan, **kw)[0].z)


def test_latent_is_a_start_for_the_optimiser(pack, vqgan, guide, ff):
    """Optimize moves the feed-forward latent a few small steps (it does not restart from random codes), under
    ComfyUI's inference mode, and the result decodes."""
    lat = _latent(pack, vqgan, guide, ff, seed=2)
    (tt,) = run(pack.prompts.CLIPTextPrompt, text=TEXT, weight=1.0)
    out, _ = run(pack.optimize.VQGANCLIPOptimize, latent=lat, vqgan=vqgan, clip_guide=guide, targets=tt, **OPT)
    assert out.z.shape == lat.z.shape and not torch.equal(out.z, lat.z)
    moved = (out.z - lat.z).abs().mean()
    assert moved < OPT["steps"] * OPT["lr"]  # Adam moves each value by about lr per step
    assert (_start(pack, vqgan).z - lat.z).abs().mean() > 2 * moved  # a restart from random codes would be far
    (img,) = run(pack.latent.VQGANDecode, latent=out)
    assert img.shape == (1, 16, 16, 3)
