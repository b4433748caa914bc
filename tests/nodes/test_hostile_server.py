"""The pack on a server that clients may attack: what a node reads and downloads is only what the owner allowed.

ComfyUI 0.3.64 does not check a V3 combo value against its options, so these tests send what a hostile client
could: paths outside ComfyUI's folders (existing and missing: the answer must not tell them apart), URLs, and
downloads from loopback servers that truncate, resume, drip or go silent.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.nodes.node_helpers import harness, run
from vqgan_core.hub.download import DownloadError, download

pytestmark = pytest.mark.usefixtures("one_thread")


# -- a loopback HTTP server with scripted misbehaviour ----------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.data``; the n-th request behaves as ``server.modes[n]`` (the last mode repeats)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        srv.requests.append(dict(self.headers))
        mode = srv.modes[min(len(srv.requests), len(srv.modes)) - 1]
        data = srv.data
        try:
            getattr(self, f"_{mode}")(srv, data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
            pass

    def _head(self, code: int, length: int | None, **extra: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()

    def _full(self, srv, data: bytes) -> None:
        self._head(200, len(data), ETag='"v1"')
        self.wfile.write(data)

    def _short(self, srv, data: bytes) -> None:  # announces everything, sends half, hangs up
        self._head(200, len(data), ETag='"v1"', Accept_Ranges="bytes")
        self.wfile.write(data[: len(data) // 2])

    def _range(self, srv, data: bytes) -> None:  # honours Range (If-Range with the same ETag)
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if not m or self.headers.get("If-Range", '"v1"') != '"v1"':
            return self._full(srv, data)
        start = int(m.group(1))
        self._head(206, len(data) - start, ETag='"v1"', Content_Range=f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.wfile.write(data[start:])
        return None

    def _drip(self, srv, data: bytes) -> None:  # one byte per interval (at most 40, so nothing hangs for long)
        self._head(200, len(data))
        for b in data[:40]:
            if srv.stop.wait(srv.interval):
                return
            self.wfile.write(bytes([b]))
            self.wfile.flush()

    def _silent(self, srv, data: bytes) -> None:  # headers, then nothing
        self._head(200, len(data))
        self.wfile.flush()
        srv.stop.wait(10)

    def _nolength(self, srv, data: bytes) -> None:  # no Content-Length, and far more than announced anywhere
        self._head(200, None)
        for _ in range(64):
            self.wfile.write(data)


@pytest.fixture
def server():
    """``start(data, *modes, interval=...)`` -> (server, base URL); all stopped after the test."""
    started = []

    def start(data: bytes, *modes: str, interval: float = 0.05):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.daemon_threads = True
        srv.data, srv.modes, srv.interval, srv.requests, srv.stop = data, modes or ("full",), interval, [], threading.Event()
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return srv, f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in started:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


PAYLOAD = bytes(range(256)) * 64  # 16 KiB


# -- the pack under stub ComfyUI ----------------------------------------------------------------------------
@pytest.fixture
def comfy(pack):
    pack.mm.INTERRUPT.update(flag=False, after_checks=None, checks=0)
    yield pack
    pack.mm.INTERRUPT.update(flag=False, after_checks=None, checks=0)


def _same_refusal(fn, values: dict[str, str]) -> str:
    """Call ``fn(value)`` for each value (label -> value); all must raise ValueError with the same message once the
    value itself is masked. Returns the message."""
    messages = {}
    for label, value in values.items():
        with pytest.raises(ValueError) as e:
            fn(value)
        messages[label] = str(e.value).replace(repr(value), "<X>").replace(value, "<X>")
    assert len(set(messages.values())) == 1, messages
    return next(iter(messages.values()))


# -- 1. Load CLIP Guide ------------------------------------------------------------------------------------------
def test_clip_guide_refuses_paths_outside_its_folder_alike_for_existing_and_missing(comfy, tmp_path, tiny_clip_dir):
    node = comfy.loaders.LoadCLIPGuide
    secret = tmp_path / "secret.pt"
    secret.write_bytes(b"not for clients")
    base = comfy.folder_paths.get_folder_paths("clip_guide")[-1]
    Path(base).mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(secret, base)  # ../../.. up and over to the secret
    values = {"existing": str(secret), "missing": str(tmp_path / "absent.pt"), "dotdot": rel,
              "dotdot missing": rel.replace("secret", "absent"), "etc": "/etc/passwd", "url": "http://127.0.0.1:9/x.pt"}
    msg = _same_refusal(lambda v: run(node, clip_name="demo", pretrained=v), values)
    assert "'none'" in msg and "models/clip_guide" in msg and "VQGAN_CLIP_ALLOWED_URLS" in msg and "openai" in msg
    for value in values.values():  # refused before the run too, with the same message
        assert node.validate_inputs(clip_name="demo", pretrained=value).replace(repr(value), "<X>") == msg
    # clip_name: a real open_clip folder outside models/clip_guide is refused like a missing one
    names = {"folder": str(tiny_clip_dir), "missing": str(tmp_path / "nope"),
             "local dotdot": "local:" + os.path.relpath(tiny_clip_dir, base), "local missing": "local:../../nope"}
    msg = _same_refusal(lambda v: run(node, clip_name=v, pretrained="none"), names)
    assert "'demo'" in msg and "local:<folder>" in msg and "ViT-B-32" in msg


def test_clip_guide_loads_what_its_folder_holds(comfy, tiny_registered, tiny_clip_dir):
    import shutil

    base = Path(comfy.folder_paths.get_folder_paths("clip_guide")[-1])
    shutil.copytree(tiny_clip_dir, base / "tiny", dirs_exist_ok=True)
    shutil.copyfile(tiny_registered, base / "tiny_weights.safetensors")
    (folder_guide,) = run(comfy.loaders.LoadCLIPGuide, clip_name="local:tiny", pretrained="none")
    (file_guide,) = run(comfy.loaders.LoadCLIPGuide, clip_name="tiny-gen-test", pretrained="tiny_weights.safetensors")
    a, b = folder_guide.model.state_dict(), file_guide.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert comfy.loaders.LoadCLIPGuide.validate_inputs(clip_name="local:tiny", pretrained="openai") is True


def test_clip_guide_downloads_only_urls_the_owner_allowed(comfy, tiny_registered, server, monkeypatch, tmp_path):
    monkeypatch.setenv("VQGAN_CORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VQGAN_CLIP_ALLOWED_URLS", raising=False)
    srv, base = server(tiny_registered.read_bytes(), "full")
    url = f"{base}/models/tiny.safetensors"
    with pytest.raises(ValueError, match="no URL .*VQGAN_CLIP_ALLOWED_URLS"):
        run(comfy.loaders.LoadCLIPGuide, clip_name="tiny-gen-test", pretrained=url)
    assert srv.requests == []  # refused without contacting the server
    monkeypatch.setenv("VQGAN_CLIP_ALLOWED_URLS", f"https://example.invalid/x/ {base}/models/")
    with pytest.raises(ValueError, match="under one of the prefixes"):
        run(comfy.loaders.LoadCLIPGuide, clip_name="tiny-gen-test", pretrained=f"{base}/other/tiny.safetensors")
    assert srv.requests == []
    (guide,) = run(comfy.loaders.LoadCLIPGuide, clip_name="tiny-gen-test", pretrained=url)
    assert guide.pretrained == url and len(srv.requests) == 1


def test_url_allow_list_compares_parts_not_strings():
    from vqgan_core.hub.download import url_allowed

    allowed = ["https://models.example.com/vqgan/", "http://127.0.0.1:8000/w.pt"]
    assert url_allowed("https://models.example.com/vqgan/a.pt", allowed)
    assert url_allowed("https://MODELS.example.com/vqgan/sub/a.pt?dl=1", allowed)
    assert url_allowed("http://127.0.0.1:8000/w.pt", allowed)
    for bad in ("https://models.example.com.evil.net/vqgan/a.pt", "https://models.example.com@evil.net/vqgan/a.pt",
                "https://user@models.example.com/vqgan/a.pt", "http://models.example.com/vqgan/a.pt",
                "https://models.example.com/vqgan/../admin", "https://models.example.com/vqgan/%2e%2e/admin",
                "https://models.example.com/vqganx/a.pt", "http://127.0.0.1:8000/w.pt.evil", "file:///etc/passwd",
                "http://127.0.0.1:8001/w.pt"):
        assert not url_allowed(bad, allowed), bad
    assert not url_allowed("https://models.example.com/vqgan/a.pt", [])


def test_clip_guide_download_from_a_dripping_server_is_cancelled(comfy, tiny_registered, server, monkeypatch,
                                                                  tmp_path):
    """1 byte per 0.1 s: Cancel (ComfyUI's interrupt check, called between chunks) stops it within a few bytes."""
    monkeypatch.setenv("VQGAN_CORE_CACHE", str(tmp_path / "cache"))
    _, base = server(tiny_registered.read_bytes(), "drip", interval=0.1)
    monkeypatch.setenv("VQGAN_CLIP_ALLOWED_URLS", base)
    comfy.mm.INTERRUPT["after_checks"] = 5
    t0 = time.monotonic()
    with pytest.raises(comfy.mm.InterruptProcessingException):
        run(comfy.loaders.LoadCLIPGuide, clip_name="tiny-gen-test", pretrained=f"{base}/tiny.safetensors")
    assert time.monotonic() - t0 < 3
    assert not list((tmp_path / "cache" / "clip").glob("*.safetensors"))  # nothing cached as complete


# -- 2. Load VQ Latent -------------------------------------------------------------------------------------------
def _latent_file(path: Path, vqgan) -> Path:
    from vqgan_core.latents.files import LatentFile, save_latent

    z = torch.zeros(1, vqgan.config.embed_dim, 4, 4)
    return save_latent(path, LatentFile.of(z, vqgan, {}))


def test_load_vq_latent_reads_only_the_input_and_output_folders(comfy, tmp_path):
    vqgan = harness.tiny_vqgan()
    node = comfy.latent_files.LoadVQLatent
    inp, out = Path(comfy.folder_paths.get_input_directory()), Path(comfy.folder_paths.get_output_directory())
    secret = _latent_file(tmp_path / "secret.vqlatent", vqgan)  # a valid latent, but outside ComfyUI's folders
    (inp / "link.vqlatent").symlink_to(secret)
    (inp / "dangling.vqlatent").symlink_to(tmp_path / "absent.vqlatent")
    values = {"absolute": str(secret), "absolute missing": str(tmp_path / "absent.vqlatent"),
              "dotdot": os.path.relpath(secret, inp), "dotdot missing": os.path.relpath(tmp_path / "absent.vqlatent", inp),
              "output dotdot": os.path.relpath(secret, out) + " [output]", "link": "link.vqlatent",
              "dangling link": "dangling.vqlatent", "shadow": "/etc/shadow", "not a latent": "../../etc/passwd"}
    msg = _same_refusal(lambda v: run(node, vqgan=vqgan, latent_file=v), values)
    assert "input folder" in msg and "[output]" in msg and ".vqlatent" in msg
    for value in values.values():
        assert node.validate_inputs(latent_file=value) == f"Invalid latent file: {value}"
        assert node.fingerprint_inputs(latent_file=value) == value  # nothing outside was looked at
    choices = comfy.latent_files.latent_choices()
    assert "link.vqlatent" not in choices and "dangling.vqlatent" not in choices
    _latent_file(inp / "mine.vqlatent", vqgan)  # what the folders hold still loads
    (lat,) = run(node, vqgan=vqgan, latent_file="mine.vqlatent")
    assert lat.z.shape == (1, vqgan.config.embed_dim, 4, 4)
    assert node.validate_inputs(latent_file="mine.vqlatent") is True


def test_load_vqgan_still_refuses_paths_outside_its_folder(comfy, tmp_path):
    from vqgan_core import save_vqgan

    secret = save_vqgan(harness.tiny_vqgan(), tmp_path / "outside.safetensors")
    base = Path(comfy.folder_paths.get_folder_paths("vqgan")[-1])
    base.mkdir(parents=True, exist_ok=True)
    values = {"absolute": str(secret), "absolute missing": str(tmp_path / "absent.safetensors"),
              "dotdot": os.path.relpath(secret, base), "dotdot missing": os.path.relpath(tmp_path / "absent.x", base)}
    msg = _same_refusal(lambda v: run(comfy.loaders.LoadVQGAN, vqgan_name=v), values)
    assert "was not found in models/vqgan" in msg


# -- 3. downloads: complete or not at all ----------------------------------------------------------------------
def test_truncated_download_is_kept_as_part_and_resumed_with_range(server, tmp_path):
    from vqgan_core.hub.download import sidecar_path

    srv, base = server(PAYLOAD, "short", "range")
    url = f"{base}/w.bin"
    with pytest.raises(DownloadError, match=r"closed after 8,192 of 16,384 bytes.*\.part.*resume"):
        download(url, tmp_path)
    assert [p.name.split("-", 1)[1] for p in tmp_path.iterdir() if not p.name.endswith(".json")] == ["w.bin.part"]
    path = download(url, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert srv.requests[1]["Range"] == "bytes=8192-" and srv.requests[1]["If-Range"] == '"v1"'
    assert sidecar_path(path).read_text().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.name + ".sha256"])


def test_truncated_download_restarts_when_the_server_ignores_range(server, tmp_path):
    srv, base = server(PAYLOAD, "short", "full")
    with pytest.raises(DownloadError, match="closed after"):
        download(f"{base}/w.bin", tmp_path)
    assert download(f"{base}/w.bin", tmp_path).read_bytes() == PAYLOAD
    assert "Range" in srv.requests[1]


def test_damaged_cached_download_is_named_with_what_to_do(server, tmp_path, taming_fixtures, monkeypatch):
    from vqgan_core import load_vqgan
    from vqgan_core.hub.download import sidecar_path

    ckpt = (taming_fixtures / "tiny_f4" / "last.ckpt").read_bytes()
    _, base = server(ckpt, "full")
    monkeypatch.setenv("VQGAN_CORE_CACHE", str(tmp_path / "cache"))
    url = f"{base}/last.ckpt"
    path = download(url)
    assert sidecar_path(path).is_file()
    with open(path, "r+b") as fh:  # damaged later (disk, a killed copy...): same size, other bytes
        fh.seek(len(ckpt) // 2)
        fh.write(b"\0" * 64)
    with pytest.raises(DownloadError, match=rf"cached download {re.escape(str(path))}.*Delete {re.escape(str(path))}"):
        load_vqgan(url, config=taming_fixtures / "tiny_f4" / "model.yaml")
    # a file cached by an older version (no .sha256) that is truncated: the loader's error names it too
    sidecar_path(path).unlink()
    path.write_bytes(ckpt[: len(ckpt) // 2])
    with pytest.raises(Exception, match=rf"{re.escape(str(path))}.*cached download of {re.escape(url)}.*delete"):
        load_vqgan(url, config=taming_fixtures / "tiny_f4" / "model.yaml")


def test_known_models_table_checks_a_published_sha256(server, tmp_path, monkeypatch):
    import dataclasses

    from vqgan_core.hub import known_models

    name = "vqgan_coco_f16_8192"  # published without a yaml: one download
    spec = known_models.KNOWN_VQGANS.get(name)
    assert spec.ckpt_sha256 is None and hasattr(spec, "yaml_sha256")  # published digests are not known offline
    _, base = server(PAYLOAD, "full")
    monkeypatch.setenv("VQGAN_CORE_MIRROR", base)
    monkeypatch.setenv("VQGAN_CORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(known_models.KNOWN_VQGANS._items, name, dataclasses.replace(spec, ckpt_sha256="0" * 64))
    with pytest.raises(DownloadError, match="checksum mismatch.*deleted"):
        known_models.fetch_known(name)
    assert not list((tmp_path / "cache").iterdir())
    good = dataclasses.replace(spec, ckpt_sha256=hashlib.sha256(PAYLOAD).hexdigest())
    monkeypatch.setitem(known_models.KNOWN_VQGANS._items, name, good)
    ckpt, yaml = known_models.fetch_known(name)
    assert ckpt.read_bytes() == PAYLOAD and yaml is None


def test_slow_downloads_time_out_stall_or_are_interrupted(server, tmp_path):
    class Stop(Exception):
        pass

    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 4:
            raise Stop

    _, drip = server(PAYLOAD, "drip", interval=0.1)
    t0 = time.monotonic()
    with pytest.raises(Stop):
        download(f"{drip}/w.bin", tmp_path / "a", check_interrupt=check)
    assert time.monotonic() - t0 < 2
    assert [p.name.split("-", 1)[1] for p in (tmp_path / "a").glob("*.part")] == ["w.bin.part"]  # kept to resume
    with pytest.raises(DownloadError, match=r"stalled.*\.part"):  # 10 bytes/s never makes 1 KiB per window
        download(f"{drip}/w.bin", tmp_path / "b", timeout=0.5)
    _, silent = server(PAYLOAD, "silent")
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="read timeout"):
        download(f"{silent}/w.bin", tmp_path / "c", timeout=0.5)
    assert time.monotonic() - t0 < 3


def test_download_size_is_capped(server, tmp_path):
    _, base = server(PAYLOAD, "full")
    with pytest.raises(DownloadError, match="more than the 1,000-byte limit"):
        download(f"{base}/w.bin", tmp_path, max_bytes=1000)
    _, endless = server(PAYLOAD, "nolength")
    with pytest.raises(DownloadError, match="more than 100,000 bytes.*deleted"):
        download(f"{endless}/w.bin", tmp_path, max_bytes=100_000)
    assert not list(tmp_path.iterdir())


# -- 4. random-weight guides are the same in every process ---------------------------------------------------
def test_random_clip_weights_are_fixed_and_leave_the_rng_alone(tiny_registered):
    from vqgan_core.clip.guide import load_clip

    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = load_clip("tiny-gen-test", "none").model.state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # a seeded run draws the same numbers after loading
    torch.manual_seed(2)
    b = load_clip("tiny-gen-test", "none").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in load_clip("tiny-gen-test", str(tiny_registered)).model.state_dict()
                   .items() if k in a and v.is_floating_point())
