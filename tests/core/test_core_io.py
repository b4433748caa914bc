"""Round trips, the CLI, downloads by URL and the fast (bf16/fp16/channels_last) path."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest
import torch

from vqgan_core import VQGAN, VQGANConfig, load_vqgan, save_vqgan
from vqgan_core.cli.main import main
from vqgan_core.hub.download import DownloadError, download


def test_ckpt_to_safetensors_roundtrip_bit_exact(taming_fixtures, tmp_path):
    for name in ("tiny_f4/last.ckpt", "tiny_gumbel_f8/last.ckpt", "tiny_f4_train/last_pl_legacy.ckpt"):
        m = load_vqgan(taming_fixtures / name)
        name = name.replace("/", "_")
        out = save_vqgan(m, tmp_path / f"{name}.safetensors")
        r = load_vqgan(out)
        assert r.config.to_dict() == m.config.to_dict()
        a, b = m.state_dict(), r.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_convert_and_info(taming_fixtures, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    assert main(["convert", str(taming_fixtures / "tiny_gumbel_f8" / "last.ckpt"), str(out)]) == 0
    assert "round-trip bit-exact" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codebook_size"] == 64 and info["downsample_factor"] == 2 and info["quantizer"] == "gumbel"
    assert info["parameters"] == 233_947
    assert main(["info", str(taming_fixtures / "tiny_f4" / "last.ckpt")]) == 0
    text = capsys.readouterr().out
    assert "64 codes x 16 dims" in text and "f4" in text and "313,267" in text


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    (tmp_path / "x.ckpt").write_bytes(b"garbage")
    assert main(["info", str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_cli_convert_with_explicit_config(taming_fixtures, tmp_path):
    src = tmp_path / "elsewhere.ckpt"
    src.write_bytes((taming_fixtures / "tiny_f4" / "last.ckpt").read_bytes())
    out = tmp_path / "o.safetensors"
    assert main(["convert", str(src), str(out), "--config", str(taming_fixtures / "tiny_f4" / "model.yaml")]) == 0
    assert load_vqgan(out).config.n_embed == 64


@pytest.fixture
def http_dir(tmp_path):
    """A loopback HTTP server over a temp folder (downloads are a feature: test them without internet)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_load_by_url_downloads_once_into_cache(taming_fixtures, http_dir, tmp_path, monkeypatch):
    root, base = http_dir
    monkeypatch.setenv("VQGAN_CORE_CACHE", str(tmp_path / "cache"))
    m = load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt")
    save_vqgan(m, root / "tiny.safetensors")
    r = load_vqgan(f"{base}/tiny.safetensors")
    assert torch.equal(r.codebook, m.codebook)
    (root / "tiny.safetensors").unlink()  # second load must come from the cache
    assert torch.equal(load_vqgan(f"{base}/tiny.safetensors").codebook, m.codebook)
    cached = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert cached == [".safetensors", ".sha256"]  # the one download, and the hash it is checked against


def test_download_error_is_actionable(http_dir, tmp_path):
    _, base = http_dir
    with pytest.raises(DownloadError, match="offline.*local path"):
        download(f"{base}/missing.ckpt", tmp_path)
    assert not list(tmp_path.glob("*missing*")), "no partial file is left behind"


def test_dead_links_are_named_not_parsed(taming_fixtures, http_dir, tmp_path):
    """A dead heibox link answers with an HTML page: refused at download, and named when already saved."""
    from vqgan_core.hub.checkpoint import CheckpointError
    from vqgan_core.vqgan.config import ConfigError, VQGANConfig

    root, base = http_dir
    page = "<!DOCTYPE html>\n<html><body>Link does not exist :(</body></html>\n"
    (root / "gone.html").write_text(page)
    with pytest.raises(DownloadError, match="answered with a web page.*probably dead"):
        download(f"{base}/gone.html", tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*gone*"))
    (tmp_path / "last.ckpt").write_text(page)
    (tmp_path / "model.yaml").write_text(page)
    with pytest.raises(CheckpointError, match=r"last\.ckpt is a web page \(HTML\), not a checkpoint.*mirror"):
        load_vqgan(tmp_path / "last.ckpt", config=taming_fixtures / "tiny_f4" / "model.yaml")
    with pytest.raises(ConfigError, match=r"model\.yaml is a web page \(HTML\), not a taming model\.yaml"):
        VQGANConfig.from_taming_yaml(tmp_path / "model.yaml")
    with pytest.raises(CheckpointError, match=r"model\.yaml is a web page"):  # named through the loader too
        load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt", config=tmp_path / "model.yaml")


@pytest.mark.parametrize(("dtype", "channels_last", "tol"), [
    (torch.float32, True, 1e-4),
    (torch.bfloat16, False, 0.08),
    (torch.bfloat16, True, 0.08),
    (torch.float16, False, 0.02),
])
def test_fast_path_matches_fp32(taming_fixtures, dtype, channels_last, tol):
    """Low precision / NHWC decode and encode agree with fp32 within a stated tolerance (max abs, images in [-1,1])."""
    ref = load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt")
    fast = load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt", dtype=dtype)
    if channels_last:
        fast.to_channels_last()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z_ref, idx_ref = ref.encode(x)
        z_fast, idx_fast = fast.encode(x.to(memory_format=torch.channels_last) if channels_last else x)
        dec_ref, dec_fast = ref.decode(z_ref), fast.decode(z_ref)
    assert dec_fast.dtype == dtype
    assert (dec_fast.float() - dec_ref).abs().max() < tol
    assert (idx_fast == idx_ref).float().mean() > 0.9  # near-ties may flip in low precision
    assert (z_fast.float() - z_ref).abs().max() < 0.5


def test_config_json_roundtrip_and_unknown_keys():
    cfg = VQGANConfig(ch=32, ch_mult=(1, 2), n_embed=8, embed_dim=4, z_channels=4, resolution=16, attn_resolutions=())
    assert VQGANConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown VQGAN config keys.*'chmult'"):
        VQGANConfig.from_dict({"chmult": [1]})
    with pytest.raises(ValueError, match="divisible by 32"):
        VQGANConfig(ch=48)
    m = VQGAN(cfg)
    assert m.downsample_factor == 2 and m.codebook.shape == (8, 4)


def test_known_model_by_name_through_mirror(taming_fixtures, http_dir, tmp_path, monkeypatch):
    """Released models resolve by name; a mirror (here a loopback server) replaces the dead links."""
    root, base = http_dir
    (root / "vqgan_imagenet_f16_1024.ckpt").write_bytes((taming_fixtures / "tiny_f4" / "last.ckpt").read_bytes())
    (root / "vqgan_imagenet_f16_1024.yaml").write_bytes((taming_fixtures / "tiny_f4" / "model.yaml").read_bytes())
    monkeypatch.setenv("VQGAN_CORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VQGAN_CORE_MIRROR", base)
    m = load_vqgan("vqgan_imagenet_f16_1024")
    assert m.config.n_embed == 64
    (root / "vqgan_coco_f16_8192.ckpt").write_bytes((taming_fixtures / "tiny_gumbel_f8" / "last.ckpt").read_bytes())
    coco = load_vqgan("vqgan_coco_f16_8192")  # published without a yaml: none is asked for, the weights tell
    assert coco.config.quantizer == "gumbel" and coco.config.extra["config_source"] == "inferred from the weights"
    from vqgan_core.hub.known_models import fetch_known

    ckpt, yaml_path = fetch_known("vqgan_coco_f16_8192")
    assert ckpt.name.endswith("-vqgan_coco_f16_8192.ckpt") and yaml_path is None
    from vqgan_core.hub.download import _filename_for

    heibox = "https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fckpts%2Flast.ckpt&dl=1"
    assert _filename_for(heibox, "vqgan_imagenet_f16_16384.ckpt").endswith("-last.ckpt")  # caches made before stay found
    assert _filename_for("https://heibox.uni-heidelberg.de/f/78dea9589974474c97c1/?dl=1", "coco.ckpt").endswith("-coco.ckpt")
    with pytest.raises(ValueError, match="unknown known VQGAN.*valid names: vqgan_coco_f16_8192"):
        fetch_known("vqgan_typo")


def test_norm_groups_reach_every_groupnorm():
    """Tiny models may use fewer GroupNorm groups; every norm layer (encoder, decoder, mid, attention) gets it."""
    from vqgan_core.vqgan.encoder_decoder import Encoder

    cfg = VQGANConfig(ch=32, ch_mult=(1, 2), n_embed=8, embed_dim=4, z_channels=4, resolution=16, attn_resolutions=(8,), norm_groups=8)
    groups = {m.num_groups for m in VQGAN(cfg).modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {8}
    assert {m.num_groups for m in Encoder(cfg).modules() if isinstance(m, torch.nn.GroupNorm)} == {8}
    with pytest.raises(ValueError, match="norm_groups must divide 32"):
        VQGANConfig(norm_groups=5)


def test_atomic_files_get_normal_permissions(tmp_path):
    import os
    import stat

    from vqgan_core.util.atomic import atomic_write

    p = atomic_write(tmp_path / "f.bin", lambda tmp: open(tmp, "wb").write(b"x"))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
