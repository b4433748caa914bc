"""Stub of ComfyUI's folder_paths: a dict of model folders under a temp models_dir."""

import os
import tempfile

base_path = os.environ.get("COMFY_STUB_BASE") or tempfile.mkdtemp(prefix="comfy_stub_")
models_dir = os.path.join(base_path, "models")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
_input_dir = os.path.join(base_path, "input")


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a path to a folder (creating the key with an empty extension set, like ComfyUI)."""
    if folder_name in folder_names_and_paths:
        paths = folder_names_and_paths[folder_name][0]
        if full_folder_path not in paths:
            paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    """Paths of a folder (KeyError when unknown, like ComfyUI)."""
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    """Relative file names (posix separators) in every path of the folder with a known extension."""
    paths, exts = folder_names_and_paths[folder_name]
    out = set()
    for base in paths:
        for root, _dirs, files in os.walk(base):
            for f in files:
                if not exts or os.path.splitext(f)[1].lower() in exts:
                    out.add(os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/"))
    return sorted(out)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """First existing full path of ``filename`` in the folder, else None."""
    if folder_name not in folder_names_and_paths:
        return None
    for base in folder_names_and_paths[folder_name][0]:
        p = os.path.join(base, filename)
        if os.path.isfile(p):
            return p
    return None


def get_input_directory() -> str:
    """ComfyUI's input directory."""
    os.makedirs(_input_dir, exist_ok=True)
    return _input_dir
