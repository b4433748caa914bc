"""Small helpers that hide ComfyUI plumbing from the node files.

Everything ComfyUI-specific that is not a schema lives here: model folders, devices, the
``inference_mode`` escape hatch, progress bars with JPEG previews and interruption. ``folder_paths``
and ``comfy.*`` are imported inside the functions, so the CI stubs (tests/comfy_stubs) can be swapped
in per test and the module imports without ComfyUI.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

VQGAN_FOLDER = "vqgan"
CLIP_FOLDER = "clip_guide"
FEED_FORWARD_FOLDER = "vqgan_feed_forward"
VQGAN_EXTENSIONS = {".safetensors", ".ckpt"}
CLIP_EXTENSIONS = {".safetensors", ".bin", ".pt", ".pth"}
FEED_FORWARD_EXTENSIONS = {".safetensors"}
DEMO_NAME = "demo"


def first_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """ComfyUI MASK ``[B,H,W]`` or ``[H,W]`` -> its first ``[H,W]`` map, float (None stays None); other shapes
    raise a ValueError (read by the core's ``load_mask``)."""
    from ..vqgan_core import load_mask

    if mask is None:
        return None
    return load_mask(mask[0] if mask.dim() == 3 else mask, "the MASK")


def register_model_folders() -> None:
    """Register ``models/vqgan``, ``models/clip_guide`` and ``models/vqgan_feed_forward`` with ComfyUI.

    Uses ``add_model_folder_path`` so entries a user put in ``extra_model_paths.yaml`` (loaded before
    packs are imported) are kept, then sets the extensions on the existing tuple.
    """
    import folder_paths

    for name, exts in ((VQGAN_FOLDER, VQGAN_EXTENSIONS), (CLIP_FOLDER, CLIP_EXTENSIONS),
                       (FEED_FORWARD_FOLDER, FEED_FORWARD_EXTENSIONS)):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, old_exts = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(old_exts) | exts)


EXAMPLE_INPUTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "workflows", "example_inputs")


def install_example_inputs() -> list[str]:
    """Copy the example workflows' input images into ComfyUI's input folder (never overwrites).

    The shipped workflows use Load Image on these files; without them the workflows would fail
    validation with "Invalid image file". Returns the names copied.
    """
    import shutil

    import folder_paths

    if not os.path.isdir(EXAMPLE_INPUTS_DIR):
        return []
    dest_dir = folder_paths.get_input_directory()
    os.makedirs(dest_dir, exist_ok=True)
    copied = []
    for name in sorted(os.listdir(EXAMPLE_INPUTS_DIR)):
        dest = os.path.join(dest_dir, name)
        if name.lower().endswith(".png") and not os.path.exists(dest):
            shutil.copyfile(os.path.join(EXAMPLE_INPUTS_DIR, name), dest)
            copied.append(name)
    if copied:
        log.info("VQGAN+CLIP: copied example inputs %s to %s", copied, dest_dir)
    return copied


def searched_folders(folder: str) -> str:
    """The disk folders ComfyUI searches for a model folder kind, for error messages ("not registered" before the
    pack registered it)."""
    import folder_paths

    try:
        return ", ".join(folder_paths.get_folder_paths(folder))
    except KeyError:
        return "not registered"


def list_models(folder: str) -> list[str]:
    """Files in a model folder (sorted); empty when the folder is unknown."""
    import folder_paths

    try:
        return sorted(folder_paths.get_filename_list(folder))
    except KeyError:
        return []


def list_model_folders(folder: str) -> list[str]:
    """Sub-folders of a model folder that hold an open_clip model (``open_clip_config.json``)."""
    import folder_paths

    try:
        bases = folder_paths.get_folder_paths(folder)
    except KeyError:
        return []
    found = set()
    for base in bases:
        if not os.path.isdir(base):
            continue
        for root, _dirs, files in os.walk(base, followlinks=True):
            if "open_clip_config.json" in files and root != base:
                found.add(os.path.relpath(root, base).replace(os.sep, "/"))
    return sorted(found)


def model_folder_path(folder: str, name: str) -> str:
    """Full path of a model sub-folder ``name`` (ValueError naming the searched folders)."""
    import folder_paths

    bases = folder_paths.get_folder_paths(folder)
    for base in bases:
        path = os.path.join(base, name)
        if os.path.isfile(os.path.join(path, "open_clip_config.json")):
            return path
    raise ValueError(f"No open_clip folder '{name}' (with open_clip_config.json) in models/{folder} "
                     f"(searched: {', '.join(bases)}).")


def model_path(folder: str, name: str) -> str:
    """Full path of ``name`` in ``folder``, or a ValueError that tells the user where to put it."""
    import folder_paths

    path = folder_paths.get_full_path(folder, name)
    if path is None:
        dirs = ", ".join(folder_paths.get_folder_paths(folder))
        raise ValueError(f"Model file '{name}' was not found in models/{folder} (searched: {dirs}).")
    return path


# -- files a client may name ----------------------------------------------------------------------------
# ComfyUI 0.3.64 does not check a V3 combo value against its options, so whatever a client sends over the API
# reaches the node. A node reads only files inside ComfyUI's model/input/output folders: a plain relative name,
# joined to a folder from folder_paths, whose real path (links resolved) stays inside that folder. Every refusal
# happens before (or regardless of) looking at the file, so it never tells a client whether a file exists.


def is_plain_relative(name: object) -> bool:
    """True for a relative name that stays below the folder it is joined to: not absolute, no drive or home
    (``C:``, ``~``), no ``..`` part (either separator), no NUL. Decided from the text alone."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return False
    if os.path.isabs(name) or name.startswith(("/", "\\", "~")) or (name[:1].isalpha() and name[1:2] == ":"):
        return False
    return ".." not in name.replace("\\", "/").split("/")


def is_inside(path: str, base: str) -> bool:
    """True when ``path``'s real path (links resolved) is ``base``'s real path or lies below it."""
    real, root = os.path.realpath(path), os.path.realpath(base)
    try:
        return os.path.commonpath([real, root]) == root
    except ValueError:  # different drives (Windows)
        return False


def find_model_file(folder: str, name: str, *, directory: bool = False) -> str | None:
    """Full path of the file (or, with ``directory``, the folder) ``name`` in the model folder ``folder``, or None.

    Only a plain relative name is looked up, and only a path whose real path stays inside the folder is
    returned, except for a name ComfyUI itself lists there (a link the server's owner made to a model kept
    elsewhere is one of the offered options).
    """
    import folder_paths

    if not is_plain_relative(name):
        return None
    try:
        bases = folder_paths.get_folder_paths(folder)
    except KeyError:
        return None
    listed = name in (list_model_folders(folder) if directory else list_models(folder))
    for base in bases:
        path = os.path.join(base, name)
        if (os.path.isdir(path) if directory else os.path.isfile(path)) and (listed or is_inside(path, base)):
            return path
    return None


def user_file_choices(suffix: str) -> list[str]:
    """Files ending in ``suffix`` in the input folder, then the output folder's (annotated ``[output]``); files whose
    real path leaves its folder (a link to elsewhere) are not offered, as :func:`find_user_file` refuses them."""
    import folder_paths

    found = []
    for base, tag in ((folder_paths.get_input_directory(), ""), (folder_paths.get_output_directory(), " [output]")):
        for root, _dirs, files in os.walk(base):
            found += [os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/") + tag
                      for f in sorted(files) if f.endswith(suffix) and is_inside(os.path.join(root, f), base)]
    return found


def find_user_file(name: str, suffix: str | None = None) -> str | None:
    """Full path of a file in ComfyUI's input folder (``name``, or ``"name [input]"``) or output folder
    (``"name [output]"``), or None: a plain relative name ending in ``suffix``, a file whose real path (links
    resolved) stays inside that folder. None says nothing about whether anything exists elsewhere."""
    import folder_paths

    if not isinstance(name, str):
        return None
    if name.endswith(" [output]"):
        base, rel = folder_paths.get_output_directory(), name[: -len(" [output]")]
    elif name.endswith(" [input]"):
        base, rel = folder_paths.get_input_directory(), name[: -len(" [input]")]
    else:
        base, rel = folder_paths.get_input_directory(), name
    if not is_plain_relative(rel) or (suffix and not rel.endswith(suffix)):
        return None
    path = os.path.join(base, rel)
    return path if os.path.isfile(path) and is_inside(path, base) else None


def compute_device() -> torch.device:
    """Device where the maths runs (``--cpu`` gives cpu)."""
    import comfy.model_management as mm

    return mm.get_torch_device()


def output_device() -> torch.device:
    """Device where node outputs live (CPU unless ``--gpu-only``)."""
    import comfy.model_management as mm

    return mm.intermediate_device()


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user pressed Cancel."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


@contextlib.contextmanager
def outside_inference_mode() -> Iterator[None]:
    """Leave ComfyUI's ``torch.inference_mode()`` so loaded weights are normal tensors.

    Models loaded under inference mode can never take part in autograd later, so every loader
    builds its model inside this context.
    """
    with torch.inference_mode(False):
        yield


def bchw_to_image(x: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> ComfyUI IMAGE [B,H,W,3] float32 on the output device."""
    return x.clamp(0, 1).movedim(1, -1).float().contiguous().to(output_device())


def image_to_bchw(image: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """ComfyUI IMAGE [B,H,W,C] in [0,1] -> [B,3,H,W] RGB.

    C may be 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA): alpha is dropped, grey is repeated.
    """
    if image.ndim == 3:
        image = image.unsqueeze(0)
    c = image.shape[-1]
    if c not in (1, 2, 3, 4):
        raise ValueError(f"Expected an IMAGE with 1, 2, 3 or 4 channels (last dimension), got {tuple(image.shape)}.")
    x = image[..., :1 if c <= 2 else 3].movedim(-1, 1).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.to(device) if device is not None else x


class Progress:
    """ComfyUI progress bar fed by the engine's callbacks, with JPEG previews and interruption.

    ``should_stop`` (before each step) and ``progress`` (after each step) both call
    ``throw_exception_if_processing_interrupted``, so Cancel stops the run at the next step with
    ComfyUI's own InterruptProcessingException. ``preview`` keeps the newest image, which goes out
    with the next progress update as a ``("JPEG", PIL image, max size)`` tuple (what KSampler sends).
    """

    def __init__(self, total: int, *, models: tuple, preview_size: int | None = None,
                 node_id: str | None = None) -> None:
        """Create the ComfyUI bar for ``total`` steps (preview size: ComfyUI's ``--preview-size``).

        ``models``: what the run uses (VQGAN, guides); they stay loaded when memory is freed for the run.
        ``node_id``: the running node (its ``hidden.unique_id``): the loss shows under it as progress text.
        """
        self.node_id, self.last_loss = node_id, None
        import comfy.utils

        self.models = models
        self.total = max(int(total), 1)
        self.preview_size = preview_size or _preview_size()
        self.bar = comfy.utils.ProgressBar(self.total)
        self._pending = None

    def callbacks(self):  # noqa: ANN201
        """The engine's ``GenerationCallbacks`` wired to this bar (progress, previews, Cancel) and to ComfyUI's
        memory management (out of GPU memory: unload ComfyUI's other models and retry)."""
        from ..vqgan_core import GenerationCallbacks
        from .memory import free_others

        return GenerationCallbacks(progress=self.progress, preview=self.preview, should_stop=self.should_stop,
                                   free_memory=lambda: free_others(*self.models))

    def should_stop(self) -> bool:
        """Engine hook before every step: raise if the user pressed Cancel."""
        check_interrupt()
        return False

    def preview(self, step: int, images: torch.Tensor) -> None:
        """Engine hook every N steps: keep the first image for the next progress update."""
        from ..vqgan_core import to_pil

        self._pending = ("JPEG", to_pil(images), self.preview_size)

    def progress(self, step: int, total: int, loss: float | None = None) -> None:
        """Engine hook after every step: update the bar (with a pending preview), show the loss when it was read
        (under the node, while tuning), check Cancel."""
        if loss is not None:
            self.last_loss = loss
            send_text(self.node_id, f"step {step}/{total} · loss {loss:.4f}")
        preview, self._pending = self._pending, None
        self.bar.update_absolute(step, total, preview)
        check_interrupt()


def _preview_size() -> int:
    """ComfyUI's ``--preview-size`` (512 when it cannot be read, e.g. under the test stubs)."""
    try:
        from comfy.cli_args import args
    except ImportError:
        return 512
    return int(getattr(args, "preview_size", 512) or 512)


def node_id(cls: type) -> str | None:
    """The running node's id (``hidden.unique_id``) of a V3 node class, when ComfyUI gave one."""
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None) if hidden is not None else None


def send_text(node_id: str | None, text: str) -> None:
    """Show ``text`` under the node in the editor (ComfyUI's progress text); nothing when it cannot."""
    if not node_id:
        return
    try:
        from server import PromptServer
    except ImportError:  # no server (tests, scripts)
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(text, node_id)
