"""Module boundaries: the core's layers point one way, ``nodes/`` and ``training/`` use only the core's public API,
nothing in the core or the trainer imports ComfyUI, and nothing edits ``sys.path``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import vqgan_core

REPO = Path(__file__).resolve().parents[2]
COMFY = {"comfy", "comfy_api", "comfy_execution", "folder_paths", "server", "nodes", "execution"}

#: the core's subpackages, lowest first: a module may import its own subpackage and those to its left
LAYERS = ["util", "vqgan", "views", "hub", "media", "clip", "objective", "latents", "feedforward", "engine", "animation", "cli"]


def _imports(py: Path) -> list[tuple[int, str]]:
    """(level, absolute-or-relative module) of every import in a file, function-level ones included."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out += [(node.level, node.module or "")]
            if node.module is None:  # from . import x: x may be a module
                out += [(node.level, a.name) for a in node.names]
    return out


def _core_target(py: Path, level: int, module: str) -> str | None:
    """The core module an import names, as 'sub.module' inside vqgan_core, or None when it is not the core."""
    if level == 0:
        return module[len("vqgan_core."):] if module.startswith("vqgan_core.") else None
    parts = list(py.relative_to(REPO / "vqgan_core").with_suffix("").parts[:-1])
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _layer(dotted: str) -> int | None:
    head = dotted.split(".")[0]
    return LAYERS.index(head) if head in LAYERS else None


def test_every_core_module_lives_in_a_layer():
    loose = [p.name for p in (REPO / "vqgan_core").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert not loose, f"modules outside the subpackages: {loose}"
    folders = {p.name for p in (REPO / "vqgan_core").iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS), folders ^ set(LAYERS)


def test_lower_layers_never_import_higher_ones():
    bad = []
    for py in sorted((REPO / "vqgan_core").rglob("*.py")):
        rel = py.relative_to(REPO / "vqgan_core")
        own = _layer(".".join(rel.parts))
        if own is None:
            continue
        for level, module in _imports(py):
            target = _core_target(py, level, module)
            if target is None or level == 0 and module.split(".")[0] != "vqgan_core":
                continue
            there = _layer(target)
            if there is not None and there > own:
                bad.append(f"{rel} ({LAYERS[own]}) imports {target} ({LAYERS[there]})")
    assert not bad, "imports pointing up the layers:\n" + "\n".join(bad)


def test_the_core_imports_itself_relatively():
    absolute = [f"{py.relative_to(REPO)}: {m}" for py in (REPO / "vqgan_core").rglob("*.py")
                for level, m in _imports(py) if level == 0 and m.split(".")[0] == "vqgan_core"]
    assert not absolute, absolute


def test_nodes_and_training_use_only_the_public_api():
    public = set(vqgan_core.__all__)
    bad = []
    for pkg, rel_level in (("nodes", 2), ("training", None)):
        for py in (REPO / pkg).rglob("*.py"):
            tree = ast.parse(py.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom):
                    is_core = (node.level == 0 and (node.module or "").startswith("vqgan_core")) or (
                        rel_level is not None and node.level == rel_level and (node.module or "").startswith("vqgan_core"))
                    if not is_core:
                        continue
                    if node.module != "vqgan_core":
                        bad.append(f"{py.relative_to(REPO)} imports the module {node.module}")
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.Import):
                    bad += [f"{py.relative_to(REPO)} imports {a.name}" for a in node.names
                            if a.name.startswith("vqgan_core.")]
                bad += [f"{py.relative_to(REPO)} imports {n}, not in vqgan_core.__all__" for n in names
                        if n not in public]
    assert not bad, "\n".join(bad)
    # and every public name resolves
    for name in vqgan_core.__all__:
        getattr(vqgan_core, name)


def test_nodes_import_the_core_relatively():
    """ComfyUI loads the pack as a package: an absolute ``vqgan_core`` would be whatever the process found first."""
    for py in (REPO / "nodes").rglob("*.py"):
        absolute = [m for level, m in _imports(py) if level == 0 and m.split(".")[0] in ("vqgan_core", "training")]
        assert not absolute, f"{py.relative_to(REPO)}: {absolute}"


def test_nothing_edits_sys_path():
    edit = re.compile(r"sys\.path\.(append|insert|extend)|sys\.path\s*\+?=")
    for pkg in ("vqgan_core", "training", "nodes"):
        for py in [*(REPO / pkg).rglob("*.py"), REPO / "__init__.py"]:
            assert not edit.search(py.read_text(encoding="utf-8")), f"{py.relative_to(REPO)} edits sys.path"


def test_core_and_training_import_no_comfyui_statically():
    for pkg, banned in (("vqgan_core", COMFY | {"training"}), ("training", COMFY)):
        for py in (REPO / pkg).rglob("*.py"):
            bad = {m.split(".")[0] for level, m in _imports(py) if level == 0} & banned
            assert not bad, f"{py.relative_to(REPO)} imports {bad}"


def test_core_imports_without_comfyui_at_runtime():
    banned = sorted(COMFY)
    code = (
        "import sys, vqgan_core, vqgan_core.cli.main; "
        "[getattr(vqgan_core, n) for n in vqgan_core.__all__]; "
        f"bad = [m for m in sys.modules if m.split('.')[0] in {banned!r}]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_the_pack_loads_as_a_package_under_any_name(tmp_path):
    """What ComfyUI does: import the folder's ``__init__`` under the folder's name; the core it uses is its own."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('Some-Pack', {str(REPO / '__init__.py')!r},\n"
        f"    submodule_search_locations=[{str(REPO)!r}])\n"
        "pack = importlib.util.module_from_spec(spec); sys.modules['Some-Pack'] = pack; spec.loader.exec_module(pack)\n"
        "core = importlib.import_module('Some-Pack.vqgan_core')\n"
        "assert core.VQGANConfig.__module__ == 'Some-Pack.vqgan_core.vqgan.config', core.VQGANConfig.__module__\n"
        "assert 'vqgan_core' not in sys.modules, 'the pack imported a top-level vqgan_core'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
