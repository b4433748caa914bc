"""A real ComfyUI server for test_comfyui_real.py: the subprocess, a tiny HTTP client, a minimal WebSocket client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
BOOT_TIMEOUT = 240
RUN_TIMEOUT = 420


class Server:
    """A ComfyUI subprocess and a tiny HTTP client for it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, extra_yaml: Path) -> float:
        comfy = Path(COMFYUI_DIR)
        python = os.environ.get("COMFYUI_PYTHON") or str(comfy / ".venv" / "bin" / "python")
        if not Path(python).exists():
            python = sys.executable
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--extra-model-paths-config", str(extra_yaml),
               "--database-url", "sqlite:///:memory:", "--disable-auto-launch", "--preview-method", "auto"]
        t0 = time.monotonic()
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self.log, stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < BOOT_TIMEOUT:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
            try:
                self.get("/system_stats")
                return time.monotonic() - t0
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"ComfyUI did not answer in {BOOT_TIMEOUT}s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:  # noqa: S310 - loopback only
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback only
                raw = r.read()
                return r.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run_prompt(self, prompt: dict, timeout: float = RUN_TIMEOUT) -> tuple[dict, float]:
        """Queue an API prompt; assert it validated; wait for its history entry."""
        t0 = time.monotonic()
        status, resp = self.post("/prompt", {"prompt": prompt, "client_id": "vqclip-test"})
        assert status == 200, resp
        assert resp.get("node_errors") == {}, resp["node_errors"]
        pid = resp["prompt_id"]
        while time.monotonic() - t0 < timeout:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None and (
                hist[pid]["status"]["completed"] or hist[pid]["status"].get("status_str") == "error"
            ):
                return hist[pid], time.monotonic() - t0
            time.sleep(0.5)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout}s")


class MiniWebSocket:
    """Just enough of a WebSocket client (RFC 6455) to read ComfyUI's events; no extra dependency."""

    def __init__(self, port: int, client_id: str) -> None:
        import base64

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next message (server frames are unmasked and unfragmented)."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        return b0 & 0x0F, self._read(n)

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
