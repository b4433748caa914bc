"""Model files for the loaders: which VQGANs Load VQGAN offers, released models fetched on first use, and
messages in ComfyUI's terms (folders, not command-line flags).

Released models (``vqgan_core.hub.known_models.KNOWN_VQGANS``) are offered as the file they become in models/vqgan,
``<name>.ckpt``; until that file is there the option reads ``<name>.ckpt (download)``. Choosing either downloads
the checkpoint (and its yaml, as ``<name>.yaml`` beside it) into the first models/vqgan folder, with ComfyUI's
progress bar, Cancel, ``.part`` resume and size/sha256 checks (``vqgan_core.hub.download``). Once downloaded, the plain
``<name>.ckpt`` is an ordinary file in the folder: a saved workflow keeps working, and on another machine the same
value downloads the model again. Workflows saved with the marked name load too.
"""

from __future__ import annotations

import logging
import os

from . import comfy_adapters as ca

log = logging.getLogger(__name__)

DOWNLOAD_MARK = " (download)"  # suffix of a released model that is not in models/vqgan yet
_REPORTED: set[tuple[str, str]] = set()  # files left out of the menu, logged once each


# -- what Load VQGAN offers -----------------------------------------------------------------------------------
def known_vqgan_name(choice: object) -> str | None:
    """The released model a menu value stands for (``<name>.ckpt``, ``<name>.ckpt (download)``, ``<name>`` or
    ``<name> (download)``), else None."""
    from ..vqgan_core import KNOWN_VQGANS

    if not isinstance(choice, str):
        return None
    name = choice[: -len(DOWNLOAD_MARK)] if choice.endswith(DOWNLOAD_MARK) else choice
    name = name[: -len(".ckpt")] if name.endswith(".ckpt") else name
    return name if name in KNOWN_VQGANS else None


def _local_known_file(name: str) -> str | None:
    """Full path of a released model's checkpoint already in a models/vqgan folder, or None."""
    from ..vqgan_core import known_file_names

    return ca.find_model_file(ca.VQGAN_FOLDER, known_file_names(name)[0])


def known_vqgan_choices() -> list[str]:
    """Every released model: ``<name>.ckpt`` when it is in models/vqgan, else ``<name>.ckpt (download)``."""
    from ..vqgan_core import KNOWN_VQGANS, known_file_names

    out = []
    for name in KNOWN_VQGANS.names():
        file = known_file_names(name)[0]
        out.append(file if _local_known_file(name) else file + DOWNLOAD_MARK)
    return out


def loadable_vqgan_files() -> list[str]:
    """Files in models/vqgan that can be loaded as a VQGAN, released models' files excepted (they are listed with
    the released models). A training run's discriminator, optimizer states and other non-VQGAN safetensors are
    left out, judged from the file header alone (``vqgan_core.hub.loading.vqgan_file_problem``, cached by mtime)."""
    import folder_paths

    from ..vqgan_core import vqgan_file_problem

    out = []
    for rel in ca.list_models(ca.VQGAN_FOLDER):
        if known_vqgan_name(rel) is not None:
            continue
        path = folder_paths.get_full_path(ca.VQGAN_FOLDER, rel)
        problem = vqgan_file_problem(path) if path else None
        if problem is None:
            out.append(rel)
        elif (rel, problem) not in _REPORTED:
            _REPORTED.add((rel, problem))
            log.info("Load VQGAN: not listing %s (models/%s): %s", rel, ca.VQGAN_FOLDER, problem)
    return out


# -- downloading a released model -------------------------------------------------------------------------------
def vqgan_download_folder() -> str:
    """Where released models are downloaded: the first models/vqgan folder ComfyUI knows."""
    import folder_paths

    try:
        folders = folder_paths.get_folder_paths(ca.VQGAN_FOLDER)
    except KeyError:
        folders = []
    return folders[0] if folders else os.path.join(folder_paths.models_dir, ca.VQGAN_FOLDER)


class DownloadProgress:
    """``progress(received, total)`` for ``vqgan_core.hub.download``, shown on ComfyUI's progress bar of the running
    node: at most one update per percent (a 1 GB checkpoint arrives in thousands of chunks) plus the last one."""

    def __init__(self) -> None:
        """No bar until the size is known."""
        self.bar = None
        self._shown: tuple[int, int] | None = None

    def __call__(self, received: int, total: int | None) -> None:
        """Update the bar; a download without a Content-Length shows no bar (its size is unknown)."""
        if not total:
            return
        import comfy.utils

        step = (total, min(received, total) * 100 // total)
        if step == self._shown:
            return
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(total)
        self.bar.update_absolute(min(received, total), total)
        self._shown = step


def offline_vqgan_message(name: str, reason: str) -> str:
    """What to do when a released model cannot be downloaded: the folder, the exact file names, and the links."""
    from ..vqgan_core import KNOWN_VQGANS, MIRROR_ENV, OFFLINE_HINT, known_file_names, known_urls

    folder = vqgan_download_folder()
    spec = KNOWN_VQGANS.get(name)
    files = [(f, u, p) for f, u, p in zip(known_file_names(name), known_urls(name), (spec.ckpt_url, spec.yaml_url),
                                          strict=True) if f and u]
    listing = "; ".join(f"{os.path.join(folder, f)} from {u}{f' (published at {p})' if p != u else ''}"
                        for f, u, p in files)
    reason = reason.replace(OFFLINE_HINT, "").strip().rstrip(".")
    return (f"Load VQGAN could not download the released model '{name}' ({reason}). Download the file"
            f"{'s' if len(files) > 1 else ''} on a connected machine (or from another mirror) and put "
            f"{'them' if len(files) > 1 else 'it'} in ComfyUI/models/{ca.VQGAN_FOLDER} under exactly "
            f"{'these names' if len(files) > 1 else 'this name'}: {listing}. Then choose '{files[0][0]}'. "
            f"The server's owner can also set {MIRROR_ENV} to a server holding "
            f"{' and '.join(f for f, _u, _p in files)}.")


def fetch_known_vqgan(name: str) -> str:
    """Full path of a released model's checkpoint in models/vqgan, downloaded (with its yaml) on first use.

    A file already there is checked against the published sha256, or the one recorded when it was downloaded;
    a damaged one is refused with its name and what to do. A failed download raises a message naming the
    folder, the file names and the links (the partial file is kept and resumed next time)."""
    from ..vqgan_core import KNOWN_VQGANS, DownloadError, fetch_known, known_file_names, verify_cached

    spec = KNOWN_VQGANS.get(name)
    found = _local_known_file(name)
    if found is not None:
        verify_cached(found, spec.ckpt_sha256)
        yaml_name = known_file_names(name)[1]
        yaml = os.path.join(os.path.dirname(found), yaml_name) if yaml_name else None
        if yaml and os.path.isfile(yaml):
            verify_cached(yaml, spec.yaml_sha256)
        return found
    folder = vqgan_download_folder()
    yaml_name = known_file_names(name)[1]
    if yaml_name and os.path.isfile(os.path.join(folder, yaml_name)):  # from an earlier try: damaged is not offline
        verify_cached(os.path.join(folder, yaml_name), spec.yaml_sha256)
    log.info("Load VQGAN: downloading the released model %s into %s", name, folder)
    try:
        ckpt, _yaml = fetch_known(name, ca.check_interrupt, dest_dir=folder, progress=DownloadProgress())
    except OSError as e:  # DownloadError, or the folder is not writable / the disk is full
        log.warning("Load VQGAN: download of %s failed: %s", name, e)
        raise DownloadError(offline_vqgan_message(name, str(e))) from None
    return str(ckpt)


# -- Load CLIP Guide --------------------------------------------------------------------------------------------
def clip_offline_hint(name: str, tag: str, source: str) -> str:
    """``offline_hint`` for ``vqgan_core.clip.guide.load_clip``: where to put the weights in ComfyUI's folders."""
    folders = ca.searched_folders(ca.CLIP_FOLDER)
    return (f"If this machine is offline, download the weights from {source} (open_clip_model.safetensors or "
            f"open_clip_pytorch_model.bin) on a connected machine and put the file in "
            f"ComfyUI/models/{ca.CLIP_FOLDER} ({folders}), e.g. as {name}_{tag}.safetensors (keep its extension); "
            f"then choose it as 'pretrained' with clip_name {name}. Copying the Hugging Face cache (HF_HUB_CACHE, "
            "default ~/.cache/huggingface/hub) to this machine also works.")
