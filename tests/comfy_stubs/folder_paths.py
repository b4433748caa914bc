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


_output_dir = os.path.join(base_path, "output")


def get_output_directory() -> str:
    """ComfyUI's output directory."""
    os.makedirs(_output_dir, exist_ok=True)
    return _output_dir


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0):
    """(folder, file name stem, next counter, subfolder, prefix): ComfyUI's numbering of saved files."""
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    name = os.path.basename(os.path.normpath(filename_prefix))
    folder = os.path.join(output_dir, subfolder)
    os.makedirs(folder, exist_ok=True)
    taken = [f for f in os.listdir(folder) if f.startswith(name + "_")]
    return folder, name, len(taken) + 1, subfolder, filename_prefix


def get_annotated_filepath(name: str) -> str:
    """``"file [output]"`` -> the output folder, else the input folder."""
    if name.endswith(" [output]"):
        return os.path.join(get_output_directory(), name[: -len(" [output]")])
    return os.path.join(get_input_directory(), name)


def exists_annotated_filepath(name: str) -> bool:
    return os.path.exists(get_annotated_filepath(name))
