"""Module boundaries from the brief: the core and the trainer never import ComfyUI; training never imports nodes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFY = {"comfy", "comfy_api", "comfy_execution", "folder_paths", "server", "nodes", "execution"}


def _imports(py: Path) -> set[str]:
    tree = ast.parse(py.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_core_and_training_import_no_comfyui_statically():
    for pkg, banned in (("vqgan_core", COMFY | {"training"}), ("training", COMFY)):
        for py in (REPO / pkg).rglob("*.py"):
            bad = _imports(py) & banned
            assert not bad, f"{py.relative_to(REPO)} imports {bad}"


def test_core_imports_without_comfyui_at_runtime():
    banned = sorted(COMFY)
    code = (
        "import sys, vqgan_core, vqgan_core.cli.main; "
        f"bad = [m for m in sys.modules if m.split('.')[0] in {banned!r}]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
