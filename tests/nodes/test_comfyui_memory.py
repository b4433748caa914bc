"""The pack's models in a real ComfyUI's memory manager (registered, loaded on use, unloaded, reloaded).

Skipped unless ``COMFYUI_DIR`` points at a ComfyUI checkout; runs ``tests/comfyui_memory_check.py`` with
ComfyUI's Python (``COMFYUI_PYTHON``, default ``$COMFYUI_DIR/.venv/bin/python``) on CPU::

    COMFYUI_DIR=/path/to/ComfyUI pytest -m comfyui tests/nodes/test_comfyui_memory.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run the real-ComfyUI tests"),
]
CHECKS = ["registered, not loaded until used", "loaded through ComfyUI by Generate",
          "free_others keeps the run's models", "unloaded by ComfyUI; no low-precision copies left behind",
          "reloaded with normal tensors; same image", "a seamless twin loads its original"]


def test_models_live_in_comfyui_memory_management():
    python = os.environ.get("COMFYUI_PYTHON") or str(Path(COMFYUI_DIR) / ".venv" / "bin" / "python")
    if not Path(python).exists():
        python = sys.executable
    script = Path(__file__).resolve().parents[1] / "comfyui_memory_check.py"
    out = subprocess.run([python, str(script), COMFYUI_DIR], capture_output=True, text=True, timeout=600, check=False)
    done = [ln[3:] for ln in out.stdout.splitlines() if ln.startswith("OK ")]
    assert out.returncode == 0 and done == CHECKS, out.stdout[-2000:] + out.stderr[-4000:]
