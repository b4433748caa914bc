"""CLIP loading: spec parsing, folder/file/URL/none sources, clear errors, the demo folder, ensembles."""

import functools
import http.server
import json
import threading

import pytest
import torch

from tests.gen_helpers import TINY_CLIP_CFG
from vqgan_core.clip.guide import (
    ClipLoadError,
    load_clip,
    load_clip_ensemble,
    parse_clip_spec,
)
from vqgan_core.clip.speed import ShortSeqAttention, _seq_first, apply_speed_patches

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ViT-B-32", ("ViT-B-32", None)),
        ("ViT-B-32:openai", ("ViT-B-32", "openai")),
        ("ViT-B-32:none", ("ViT-B-32", "none")),
        ("ViT-B-32:C:\\models\\clip.pt", ("ViT-B-32", "C:\\models\\clip.pt")),
        ("ViT-B-32:/abs/clip.safetensors", ("ViT-B-32", "/abs/clip.safetensors")),
        ("ViT-B-32:https://host:8000/w.safetensors", ("ViT-B-32", "https://host:8000/w.safetensors")),
        ("/some/folder", ("/some/folder", None)),
        ("D:\\clip_folder", ("D:\\clip_folder", None)),
        ("demo", ("demo", None)),
    ],
)
def test_parse_clip_spec(spec, expected):
    assert parse_clip_spec(spec) == expected


@pytest.mark.parametrize("bad", ["", ":openai", "ViT-B-32:"])
def test_parse_clip_spec_malformed(bad):
    with pytest.raises(ClipLoadError):
        parse_clip_spec(bad)


def test_folder_with_custom_vocabulary(tiny_clip_dir):
    g = load_clip(str(tiny_clip_dir))
    assert g.image_size == 32 and g.tokenizer.vocab_size == 512 + 10 + 2
    assert torch.allclose(g.mean.flatten(), torch.full((3,), 0.5))
    assert g.encode_text(["red", "blue circle"]).shape == (2, 32)
    x = torch.rand(3, 3, 64, 64, requires_grad=True)  # resized to 32 inside
    e = g.encode_image(x)
    e.sum().backward()
    assert e.shape == (3, 32) and x.grad is not None
    assert not any(p.requires_grad for p in g.model.parameters())


def test_seq_first_is_bit_identical(tiny_clip_dir):
    import open_clip

    torch.manual_seed(0)
    m = open_clip.model.CLIP(**TINY_CLIP_CFG).eval()
    x = torch.rand(2, 3, 32, 32)
    before = m.encode_image(x)
    assert _seq_first(m) == 2  # vision and text stacks
    assert torch.equal(before, m.encode_image(x))


def _stock_and_copy():  # noqa: ANN202
    """A frozen tiny open_clip CLIP and a second one with the same weights (to patch)."""
    import open_clip

    torch.manual_seed(0)
    stock = open_clip.model.CLIP(**TINY_CLIP_CFG).eval().requires_grad_(False)
    patched = open_clip.model.CLIP(**TINY_CLIP_CFG).eval().requires_grad_(False)
    patched.load_state_dict(stock.state_dict())
    return stock, patched


def _assert_same_image_encoding(stock, patched) -> None:  # noqa: ANN001
    """Same image embedding and the same gradient to the input pixels."""
    x1 = torch.rand(3, 3, 32, 32, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    a, b = stock.encode_image(x1), patched.encode_image(x2)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    gy = torch.randn(a.shape)
    (a * gy).sum().backward()
    (b * gy).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sdpa", [False, True])  # True: the branch CUDA takes (SDPA on views of the projection)
def test_speed_patches_match_stock_model_with_gradients(sdpa, monkeypatch):

    from vqgan_core.clip import speed as clip_speed

    if sdpa:
        monkeypatch.setattr(clip_speed, "EXPLICIT_DEVICES", set())
    calls = {"fast": 0, "explicit": 0}  # the patched path really runs, with the branch asked for
    real_attend, real_matmul = clip_speed._attend, clip_speed.matmul_attention
    monkeypatch.setattr(clip_speed, "_attend", lambda *a: calls.__setitem__("fast", calls["fast"] + 1) or real_attend(*a))
    monkeypatch.setattr(clip_speed, "matmul_attention",
                        lambda *a: calls.__setitem__("explicit", calls["explicit"] + 1) or real_matmul(*a))

    stock, patched = _stock_and_copy()
    apply_speed_patches(patched)
    assert set(patched.state_dict()) == set(stock.state_dict())
    assert sum(isinstance(m, ShortSeqAttention) for m in patched.modules()) == 4  # 2 vision + 2 text blocks
    _assert_same_image_encoding(stock, patched)
    tok = torch.randint(0, 600, (2, 16))
    torch.testing.assert_close(patched.encode_text(tok), stock.encode_text(tok), atol=1e-5, rtol=1e-5)  # causal mask
    assert calls["fast"] == 4 and calls["explicit"] == (0 if sdpa else 4)  # 2 vision + 2 text blocks
    assert patched.visual.transformer.resblocks[-1].class_token_batch_first is False  # the class-token path ran


@pytest.mark.parametrize("batch_first", [True, False])
def test_class_token_last_block_matches_stock_pooling(batch_first):
    """The last vision block computed for the class token only: same pooled embedding and input gradient."""
    import open_clip

    from vqgan_core.clip.speed import _class_token_last_block

    stock, patched = _stock_and_copy()
    if not batch_first:
        _seq_first(patched)
    assert _class_token_last_block(patched) and _class_token_last_block(patched)  # a second call changes nothing
    assert type(patched.visual.transformer.resblocks[-1]).__name__ == "ClassTokenResidualAttentionBlock"
    assert set(patched.state_dict()) == set(stock.state_dict())
    _assert_same_image_encoding(stock, patched)
    if batch_first:  # a masked call (no vision tower makes one) takes the stock path: every token out
        t = torch.randn(2, 5, stock.visual.transformer.width)
        mask = torch.zeros(5, 5)
        torch.testing.assert_close(patched.visual.transformer.resblocks[-1](t, attn_mask=mask),
                                   stock.visual.transformer.resblocks[-1](t, attn_mask=mask))
    fresh = open_clip.model.CLIP(**TINY_CLIP_CFG)
    fresh.visual.pool_type = "avg"  # mean pooling reads every token: the patch must not apply
    assert not _class_token_last_block(fresh)


def test_local_file_none_and_url(tiny_registered, tmp_path, monkeypatch):
    ref = load_clip(str(tiny_registered.parent)).model.state_dict()
    from_file = load_clip("tiny-gen-test", str(tiny_registered))
    assert all(torch.equal(ref[k], v) for k, v in from_file.model.state_dict().items())
    rand = load_clip("tiny-gen-test", "none")
    assert rand.pretrained == "none"
    monkeypatch.setenv("VQGAN_CORE_CACHE", str(tmp_path / "cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tiny_registered.parent))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/open_clip_model.safetensors"
        from_url = load_clip("tiny-gen-test", url)
    finally:
        srv.shutdown()
    assert all(torch.equal(ref[k], v) for k, v in from_url.model.state_dict().items())
    assert list((tmp_path / "cache" / "clip").glob("*open_clip_model.safetensors"))


def test_clear_errors(monkeypatch):
    import open_clip

    with pytest.raises(ClipLoadError, match="valid names: .*ViT-B-32"):
        load_clip("ViT-Nope", "none")
    with pytest.raises(ClipLoadError, match="valid tags: .*openai"):
        load_clip("ViT-B-32", "notatag")
    with pytest.raises(ClipLoadError, match="not found"):
        load_clip("ViT-B-32", "/no/such/clip.safetensors")
    for missing in ("/no/such/clip_folder", "runs/no_such_clip"):  # a folder path, not a model name
        with pytest.raises(ClipLoadError, match=f"CLIP folder not found: {missing} "):
            load_clip(missing)
    assert load_clip("ViT-B/32", "none").image_size == 224  # OpenAI's spelling of a model name still works

    def offline(*a, **k):
        raise RuntimeError("Failed to download weights for tag 'openai': Name or service not known")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(ClipLoadError, match=r"Offline\? Download https://huggingface.co/.*ViT-B-32:/path"):
        load_clip("ViT-B-32", "openai")


def test_ensemble(tiny_clip_dir):
    ens = load_clip_ensemble([str(tiny_clip_dir), str(tiny_clip_dir)], [1.0, 0.5])
    assert [w for _, w in ens.guides] == [1.0, 0.5]
    with pytest.raises(ClipLoadError, match="weights"):
        load_clip_ensemble([str(tiny_clip_dir)], [1.0, 2.0])


def test_demo_clip_is_shipped_and_loads():
    from vqgan_core.hub.assets import DEMO_DIR

    assert (DEMO_DIR / "clip" / "open_clip_config.json").is_file(), f"demo CLIP missing in {DEMO_DIR}"
    g = load_clip("demo")
    assert g.encode_text(["a red circle on a blue background"]).ndim == 2


def test_demo_guide_is_the_colour_and_the_robust_shape_clip():
    """``demo`` in an ensemble spec (CLI ``--clip demo``) is the pair; its weight scales the pair's weights."""
    from vqgan_core.hub import demo

    pair = load_clip_ensemble(["demo"], [2.0])
    assert [g.name for g, _ in pair.guides] == ["demo", "demo-robust"]
    assert [w for _, w in pair.guides] == [2.0 * w for _, w in demo.DEMO_GUIDE]
    robust = pair.guides[1][0]
    assert robust.image_size == 64 and type(robust.model.visual).__name__ == "ModifiedResNet"
    info = json.loads((demo.robust_clip_dir() / "train_info.json").read_text())
    assert info["config"]["adv_eps"] > 0 and info["zero_shot_val"]["shape"] >= 0.95  # trained adversarially


def test_normalisation_follows_the_input_device_once(tiny_clip_dir):
    """A host may move only the weights (ComfyUI): mean/std are copied to the input's device once, then
    reused (a copy every step would synchronise and break CUDA-graph capture)."""
    from vqgan_core.clip.guide import load_clip

    g = load_clip(str(tiny_clip_dir))
    first = g._normalisation(torch.device("meta"), torch.float16)
    assert first[0].device.type == "meta" and first[0].dtype == torch.float16
    assert g._normalisation(torch.device("meta"), torch.float16)[0] is first[0]
    assert g.mean.device.type == "cpu"  # the guide's own constants are left alone
    g.lowp_model(torch.bfloat16)
    g.drop_copies()
    assert "_lowp" not in g.__dict__


def test_random_weights_are_the_same_across_versions():
    """A 'NAME:none' guide's random weights come from a frozen salt: moving the module must not change them."""
    from vqgan_core.clip.guide import random_init_seed

    assert random_init_seed("ViT-B-32") == 6098311822465376146
