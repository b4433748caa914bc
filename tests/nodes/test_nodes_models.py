"""Model menus of the loaders under stub ComfyUI: released VQGANs offered by name and downloaded on first use into
models/vqgan (progress bar, .part resume, sha256 recorded and checked, an offline message naming folder and files),
no non-VQGAN safetensors in the menu, and Load CLIP Guide offering and accepting only (model, tag) pairs open_clip
publishes, with offline advice in ComfyUI's terms.

Downloads come from a loopback HTTP server through ``$VQGAN_CORE_MIRROR`` (the released links are never contacted).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import threading
from pathlib import Path

import pytest
import torch

from tests.nodes.node_helpers import harness, run

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "vqgan_imagenet_f16_1024"  # a released model with a yaml; served here from the tiny taming fixture


# -- a loopback server for the mirror ---------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes); requests for a .ckpt behave as ``server.modes[n]`` in turn (the
    last mode repeats): ``full``, ``short`` (announces all, sends half, hangs up) or ``range`` (honours Range)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        srv.requests.append((self.path, dict(self.headers)))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        mode = "full"
        if self.path.endswith(".ckpt"):
            srv.ckpt_requests += 1
            mode = srv.modes[min(srv.ckpt_requests, len(srv.modes)) - 1]
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if mode == "range" and m and self.headers.get("If-Range", '"v1"') == '"v1"':
            start = int(m.group(1))
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", '"v1"')
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        try:
            self.wfile.write(data[: len(data) // 2] if mode == "short" else data[start:])
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def mirror(monkeypatch, taming_fixtures):
    """``start(*modes)`` -> the server, set as ``$VQGAN_CORE_MIRROR``, holding MODEL's .ckpt and .yaml."""
    started = []

    def start(*modes: str):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.daemon_threads = True
        srv.files = {f"/{MODEL}.ckpt": (taming_fixtures / "tiny_f4" / "last.ckpt").read_bytes(),
                     f"/{MODEL}.yaml": (taming_fixtures / "tiny_f4" / "model.yaml").read_bytes()}
        srv.modes, srv.requests, srv.ckpt_requests = modes or ("full",), [], 0
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        monkeypatch.setenv("VQGAN_CORE_MIRROR", f"http://127.0.0.1:{srv.server_address[1]}/")
        return srv

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused: what an offline machine sees, fast)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the pack under stub ComfyUI ----------------------------------------------------------------------------------
@pytest.fixture
def comfy(pack, monkeypatch, tmp_path):
    """The pack with an empty models/vqgan, no recorded progress, no Cancel, and the download cache in tmp."""
    import shutil

    monkeypatch.setenv("VQGAN_CORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VQGAN_CORE_MIRROR", raising=False)
    folder = Path(pack.folder_paths.get_folder_paths("vqgan")[0])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pack.comfy_utils.UPDATES.clear()
    pack.mm.INTERRUPT.update(flag=False, after_checks=None, checks=0)
    pack.vqgan_folder = folder
    yield pack
    shutil.rmtree(folder, ignore_errors=True)


def vqgan_options(pack) -> list[str]:
    return next(i for i in pack.loaders.LoadVQGAN.define_schema().inputs if i.id == "vqgan_name").options["options"]


def clip_options(pack, name: str) -> list[str]:
    return next(i for i in pack.loaders.LoadCLIPGuide.define_schema().inputs if i.id == name).options["options"]


# -- 1. what Load VQGAN offers ------------------------------------------------------------------------------------
def test_vqgan_menu_lists_released_models_marked_and_leaves_out_non_vqgan_files(comfy):
    from safetensors.torch import save_file

    from vqgan_core import save_vqgan
    from vqgan_core.hub.known_models import KNOWN_VQGANS

    folder = comfy.vqgan_folder
    save_vqgan(harness.tiny_vqgan(), folder / "tiny.safetensors")
    (folder / "run").mkdir()
    save_vqgan(harness.tiny_vqgan(), folder / "run" / "weights.safetensors")
    disc = {"main.0.weight": torch.zeros(8, 3, 4, 4), "main.0.bias": torch.zeros(8)}  # a training run's PatchGAN
    save_file(disc, folder / "run" / "discriminator.safetensors", metadata={"format": "pt"})
    save_file({"state.0.exp_avg": torch.zeros(4)}, folder / "optimizer.safetensors")
    options = vqgan_options(comfy)
    assert options[:3] == ["demo", "run/weights.safetensors", "tiny.safetensors"]
    assert "run/discriminator.safetensors" not in options and "optimizer.safetensors" not in options
    assert options[3:] == [f"{n}.ckpt (download)" for n in KNOWN_VQGANS.names()]  # after demo and the local files
    # judged per (path, mtime): the same name holding a VQGAN now is listed
    save_vqgan(harness.tiny_vqgan(), folder / "run" / "discriminator.safetensors")
    st = os.stat(folder / "run" / "discriminator.safetensors")
    os.utime(folder / "run" / "discriminator.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert "run/discriminator.safetensors" in vqgan_options(comfy)


# -- 2. a released model, downloaded on first use ----------------------------------------------------------------
def test_released_model_downloads_into_models_vqgan_with_progress(comfy, mirror, taming_fixtures):
    srv = mirror("full")
    ckpt_bytes = srv.files[f"/{MODEL}.ckpt"]
    (vq,) = run(comfy.loaders.LoadVQGAN, vqgan_name=f"{MODEL}.ckpt (download)")
    assert vq.config.n_embed == 64
    folder = comfy.vqgan_folder
    assert (folder / f"{MODEL}.ckpt").read_bytes() == ckpt_bytes
    assert (folder / f"{MODEL}.yaml").read_bytes() == srv.files[f"/{MODEL}.yaml"]  # the yaml beside it
    assert not list(folder.glob("*.part*"))
    # ComfyUI's progress bar followed the bytes: rising, ending at the checkpoint's size
    ckpt_updates = [(v, t) for v, t, _ in comfy.comfy_utils.UPDATES if t == len(ckpt_bytes)]
    assert len(ckpt_updates) >= 2 and ckpt_updates[-1] == (len(ckpt_bytes), len(ckpt_bytes))
    assert [v for v, _ in ckpt_updates] == sorted(v for v, _ in ckpt_updates)
    assert len(comfy.comfy_utils.UPDATES) <= 2 * 101  # one update per percent at most, per file
    # now an ordinary file: offered unmarked (the value a saved workflow keeps), and both names load it
    options = vqgan_options(comfy)
    assert f"{MODEL}.ckpt" in options and f"{MODEL}.ckpt (download)" not in options
    n = len(srv.requests)
    (again,) = run(comfy.loaders.LoadVQGAN, vqgan_name=f"{MODEL}.ckpt")
    (marked,) = run(comfy.loaders.LoadVQGAN, vqgan_name=f"{MODEL}.ckpt (download)")
    assert again is vq and marked is vq and len(srv.requests) == n  # nothing downloaded again


def test_broken_download_is_resumed_from_part(comfy, mirror):
    srv = mirror("short", "range")
    size = len(srv.files[f"/{MODEL}.ckpt"])
    with pytest.raises(OSError, match=r"partial file is kept.*run again to resume") as e:
        run(comfy.loaders.LoadVQGAN, vqgan_name=f"{MODEL}.ckpt (download)")
    assert str(comfy.vqgan_folder) in str(e.value)
    assert (comfy.vqgan_folder / f"{MODEL}.ckpt.part").stat().st_size == size // 2
    comfy.comfy_utils.UPDATES.clear()
    (vq,) = run(comfy.loaders.LoadVQGAN, vqgan_name=f"{MODEL}.ckpt")  # the saved value works as well
    assert vq.config.n_embed == 64
    path, headers = srv.requests[-1]
    assert path == f"/{MODEL}.ckpt" and headers["Range"] == f"bytes={size // 2}-"
    assert comfy.comfy_utils.UPDATES[0][:2] == (size // 2, size)  # the bar starts where the part file ended
    assert comfy.comfy_utils.UPDATES[-1][:2] == (size, size)
    assert not (comfy.vqgan_folder / f"{MODEL}.ckpt.part").exists()


def test_sha256_is_recorded_and_a_damaged_file_is_refused_by_name(comfy, mirror):
    from vqgan_core.hub.download import sidecar_path

    srv = mirror("full")
    data = srv.files[f"/{MODEL}.ckpt"]
    run(comfy.loaders.LoadVQGAN, vqgan_name=f"{MODEL}.ckpt (download)")
    path = comfy.vqgan_folder / f"{MODEL}.ckpt"
    assert sidecar_path(path).read_text().split()[0] == hashlib.sha256(data).hexdigest()
    with open(path, "r+b") as fh:  # damaged later: same size, other bytes
        fh.seek(len(data) // 2)
        fh.write(b"\0" * 64)
    n = len(srv.requests)
    with pytest.raises(OSError, match=rf"{re.escape(str(path))} .*damaged.*Delete {re.escape(str(path))}"):
        run(comfy.loaders.LoadVQGAN, vqgan_name=f"{MODEL}.ckpt")
    assert len(srv.requests) == n  # refused, not silently replaced


def test_offline_message_names_the_folder_the_files_and_the_links(comfy, monkeypatch):
    base = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("VQGAN_CORE_MIRROR", base)
    with pytest.raises(OSError) as e:
        run(comfy.loaders.LoadVQGAN, vqgan_name="vqgan_gumbel_f8.ckpt (download)")
    msg = str(e.value)
    folder = str(comfy.vqgan_folder)
    for part in ("ComfyUI/models/vqgan", os.path.join(folder, "vqgan_gumbel_f8.ckpt"),
                 os.path.join(folder, "vqgan_gumbel_f8.yaml"), f"{base}/vqgan_gumbel_f8.ckpt",
                 f"{base}/vqgan_gumbel_f8.yaml", "VQGAN_CORE_MIRROR"):
        assert part in msg, (part, msg)
    assert "pass its local path" not in msg  # command-line advice has no place in ComfyUI


# -- 3. Load CLIP Guide: only pairs open_clip publishes -------------------------------------------------------------
def test_clip_guide_offers_and_accepts_only_published_pairs(comfy):
    import open_clip

    published = {name for name, _ in open_clip.list_pretrained()}
    names = clip_options(comfy, "clip_name")
    assert names[0] == "demo" and "RN50" in names and "ViT-B-32" in names
    assert all(n in published for n in names if n != "demo" and not n.startswith("local:"))
    assert set(open_clip.list_models()) - published, "open_clip lists models without weights"
    assert not (set(open_clip.list_models()) - published) & set(names)
    assert {"none", "openai", "webli"} <= set(clip_options(comfy, "pretrained"))
    node = comfy.loaders.LoadCLIPGuide
    assert node.validate_inputs(clip_name="RN50", pretrained="openai") is True
    assert node.validate_inputs(clip_name="RN50", pretrained=None) is True  # linked: checked when it runs
    msg = node.validate_inputs(clip_name="RN50", pretrained="webli")
    assert isinstance(msg, str) and msg.startswith("Load CLIP Guide: pretrained 'webli'"), msg
    assert "openai, yfcc15m, cc12m" in msg and "models/clip_guide" in msg
    with pytest.raises(ValueError, match="pretrained 'webli' .*openai, yfcc15m, cc12m"):
        run(node, clip_name="RN50", pretrained="webli")


def test_offline_clip_message_speaks_comfyui(comfy, monkeypatch):
    import open_clip

    from vqgan_core.clip.guide import ClipLoadError, load_clip

    real = open_clip.create_model

    def offline(name, pretrained=None, **kw):  # noqa: ANN001, ANN202
        if pretrained:
            raise RuntimeError("We couldn't connect to 'https://huggingface.co' (offline)")
        return real(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(ClipLoadError) as e:
        run(comfy.loaders.LoadCLIPGuide, clip_name="RN50", pretrained="openai")
    msg = str(e.value)
    assert "ComfyUI/models/clip_guide" in msg and comfy.folder_paths.get_folder_paths("clip_guide")[0] in msg
    assert "https://huggingface.co/timm/resnet50_clip.openai" in msg and "'pretrained'" in msg
    assert "--clip" not in msg
    with pytest.raises(ClipLoadError, match=r"--clip RN50:/path"):  # the command line keeps its own wording
        load_clip("RN50", "openai")
