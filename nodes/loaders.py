"""Loader nodes: Load VQGAN, Load CLIP Guide, Combine CLIP Guides.

Models are built outside ``inference_mode`` (see comfy_adapters.outside_inference_mode) and shared
through a module-level *weak* cache (V3 node classes are cloned per run, so state on ``cls`` would be
lost): the same file gives the same object while anything (ComfyUI's output cache, a latent) still uses
it, and ComfyUI's "free model and node cache" really frees the memory.

ComfyUI 0.3.64 does not check a V3 combo value against its options, so the loaders check what a client sent
themselves: a file or folder inside the node's model folder (``comfy_adapters.find_model_file``), one of the
offered names (a released VQGAN is downloaded into models/vqgan on first use: ``nodes.model_downloads``), or (Load
CLIP Guide) a URL the server's owner allowed in ``$VQGAN_CLIP_ALLOWED_URLS``. Anything else is refused with one
message that lists what is allowed and does not depend on whether the file exists. Load CLIP Guide also refuses,
when the prompt is queued, an open_clip tag that is not published for the chosen model.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

from comfy_api.latest import io

from . import comfy_adapters as ca
from . import memory
from . import model_downloads as md
from .types import ClipGuide, VQGANModel

log = logging.getLogger(__name__)

CATEGORY = "vqgan_clip/loaders"
_CACHE: weakref.WeakValueDictionary[tuple, Any] = weakref.WeakValueDictionary()


def cached_model(key: tuple, build):  # noqa: ANN001, ANN202 - tiny helper (also used by nodes.feed_forward)
    """Return the live model for ``key`` or build it (entries vanish once nothing else references them)."""
    value = _CACHE.get(key)
    if value is None:
        value = build()
        _CACHE[key] = value
    return value


def vqgan_choices() -> list[str]:
    """'demo', the loadable VQGAN files in models/vqgan, then the released models (``<name>.ckpt``, marked
    ``(download)`` until they are in models/vqgan; see nodes.model_downloads)."""
    return [ca.DEMO_NAME, *md.loadable_vqgan_files(), *md.known_vqgan_choices()]


def resolve_vqgan(name: str) -> str:
    """Full path (or 'demo') of a VQGAN choice. A taming .ckpt's config is found like the core's loader does
    (its yaml beside it, else read from the weights: ``vqgan_core.hub.checkpoint.resolve_config``). A released model
    (``<name>.ckpt``, with or without ``(download)``) is downloaded into models/vqgan the first time.

    Only files in models/vqgan: absolute paths, '..' and links leading out get the not-found message.
    """
    if name == ca.DEMO_NAME:
        return name
    known = md.known_vqgan_name(name)
    if known is not None:
        return md.fetch_known_vqgan(known)
    path = ca.find_model_file(ca.VQGAN_FOLDER, name)
    if path is None:
        dirs = ca.searched_folders(ca.VQGAN_FOLDER)
        log.warning("Load VQGAN refused %r (not a file in models/%s)", name, ca.VQGAN_FOLDER)
        raise ValueError(f"Model file '{name}' was not found in models/{ca.VQGAN_FOLDER} (searched: {dirs}). "
                         f"Choose 'demo', a released model or a file listed in the menu; paths leading out of "
                         f"models/{ca.VQGAN_FOLDER} are refused.")
    return path


class LoadVQGAN(io.ComfyNode):
    """Load a VQGAN autoencoder (taming .ckpt + .yaml, our .safetensors, or the bundled demo)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: one combo of model files."""
        return io.Schema(
            node_id="VQGAN_Load",
            display_name="Load VQGAN",
            category=CATEGORY,
            description="Loads a VQGAN from models/vqgan (.safetensors, or a taming .ckpt: its .yaml beside it "
            "is used, and without one the architecture is read from the weights). "
            "'demo' is the tiny model shipped with the pack (runs on CPU). The released taming models are listed "
            "too: one marked '(download)' is downloaded into models/vqgan the first time it runs (about 1 GB; "
            "Cancel stops it, the next run resumes it).",
            inputs=[io.Combo.Input("vqgan_name", options=vqgan_choices(), default=ca.DEMO_NAME,
                                   tooltip="File in models/vqgan, 'demo', or a released model ('(download)': "
                                   "fetched into models/vqgan on first use).")],
            outputs=[VQGANModel.Output(display_name="vqgan")],
        )

    @classmethod
    def execute(cls, vqgan_name: str) -> io.NodeOutput:
        """Load (or reuse) the model where ComfyUI keeps idle models; nodes move it to the GPU when they run."""
        from ..vqgan_core import load_vqgan

        path = resolve_vqgan(vqgan_name)
        device = memory.offload_device()
        mtime = os.path.getmtime(path) if os.path.exists(path) else 0.0
        if path.endswith(".ckpt"):  # its yaml (added, edited or removed) decides the model as much as the weights
            from pathlib import Path

            from ..vqgan_core import find_yaml

            found = find_yaml(Path(path))
            mtime = (mtime, str(found), os.path.getmtime(found) if found else 0.0)

        def build():  # noqa: ANN202
            with ca.outside_inference_mode():
                model = load_vqgan(path, device=str(device))
                model.eval().requires_grad_(False)
            return memory.manage(model)

        return io.NodeOutput(cached_model(("vqgan", path, mtime, str(device)), build))


class SeamlessVQGAN(io.ComfyNode):
    """The VQGAN with circular padding: everything made with it tiles without seams."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: VQGAN in, seamless VQGAN out."""
        return io.Schema(
            node_id="VQGAN_Seamless",
            display_name="VQGAN Seamless (Tileable)",
            category=CATEGORY,
            description="Makes every image this VQGAN decodes tileable (no seams when repeated side by side): "
            "its convolutions wrap around the edges. Use it for Optimize / Generate and for VQGAN Decode; "
            "Optimize and Generate also judge the image across its edges. Shares the weights (no extra memory).",
            inputs=[VQGANModel.Input("vqgan", tooltip="The VQGAN to make tileable (from Load VQGAN).")],
            outputs=[VQGANModel.Output(display_name="vqgan")],
        )

    @classmethod
    def execute(cls, vqgan) -> io.NodeOutput:  # noqa: ANN001
        """Wrap the convolutions' padding (a weight-sharing twin; the input model is unchanged)."""
        from ..vqgan_core import seamless_copy

        with ca.outside_inference_mode():
            return io.NodeOutput(seamless_copy(vqgan))


def clip_model_choices() -> list[str]:
    """'demo', open_clip folders found in models/clip_guide ('local:<folder>'), then the open_clip names that have
    published weights (a name without any would only give random weights or need a file: still accepted when
    sent, but not offered)."""
    import open_clip

    published = {name for name, _tag in open_clip.list_pretrained()}
    return [ca.DEMO_NAME, *(f"local:{d}" for d in ca.list_model_folders(ca.CLIP_FOLDER)),
            *(n for n in open_clip.list_models() if n in published)]


def _open_clip_tags() -> list[str]:
    import open_clip

    return sorted({tag for _name, tag in open_clip.list_pretrained()})


def clip_pretrained_choices() -> list[str]:
    """'none', weight files in models/clip_guide, then every open_clip pretrained tag (downloaded when online)."""
    return ["none", *ca.list_models(ca.CLIP_FOLDER), *_open_clip_tags()]


def _few(items: list[str], n: int = 8) -> str:
    """``a, b, c ... (N in all)`` for a message."""
    shown = ", ".join(items[:n]) or "none"
    return f"{shown} ... ({len(items)} in all)" if len(items) > n else shown


def resolve_clip_name(clip_name: str) -> str:
    """'demo', the full path of a 'local:<folder>' in models/clip_guide, or an open_clip model name; anything else
    is refused (ValueError listing what is allowed; the same message whether or not such a path exists)."""
    import open_clip

    if clip_name == ca.DEMO_NAME:
        return clip_name
    if isinstance(clip_name, str) and clip_name.startswith("local:"):
        path = ca.find_model_file(ca.CLIP_FOLDER, clip_name[len("local:"):], directory=True)
        if path is not None and os.path.isfile(os.path.join(path, "open_clip_config.json")):
            return path
    elif clip_name in open_clip.list_models():
        return clip_name
    log.warning("Load CLIP Guide refused clip_name %r", clip_name)
    folders = [f"local:{d}" for d in ca.list_model_folders(ca.CLIP_FOLDER)]
    raise ValueError(
        f"Load CLIP Guide: clip_name {clip_name!r} is not one of the offered options. Allowed: 'demo', "
        f"'local:<folder>' for an open_clip folder (with open_clip_config.json) in models/{ca.CLIP_FOLDER} "
        f"(found: {_few(folders)}; searched: {ca.searched_folders(ca.CLIP_FOLDER)}), or an open_clip model name "
        f"({_few(open_clip.list_models())}). Paths outside models/{ca.CLIP_FOLDER} are refused.")


def resolve_clip_pretrained(pretrained: str) -> str:
    """'none', the full path of a weights file in models/clip_guide, an open_clip tag, or a URL the server's owner
    allowed (``$VQGAN_CLIP_ALLOWED_URLS``); anything else is refused (ValueError listing what is allowed, the same
    message whether or not such a file exists)."""
    from ..vqgan_core import ALLOWED_URLS_ENV, allowed_url_prefixes, url_allowed

    if pretrained == "none":
        return pretrained
    tags = _open_clip_tags()
    if pretrained in tags and pretrained not in ca.list_models(ca.CLIP_FOLDER):
        return pretrained
    path = ca.find_model_file(ca.CLIP_FOLDER, pretrained)
    if path is not None:
        return path
    if isinstance(pretrained, str) and pretrained.startswith(("http://", "https://")) and url_allowed(pretrained):
        return pretrained
    log.warning("Load CLIP Guide refused pretrained %r", pretrained)
    urls = ("a URL under one of the prefixes the server's owner listed in " + ALLOWED_URLS_ENV if allowed_url_prefixes()
            else f"no URL (the server's owner can allow URL prefixes in {ALLOWED_URLS_ENV})")
    raise ValueError(
        f"Load CLIP Guide: pretrained {pretrained!r} is not one of the offered options. Allowed: 'none', a weights "
        f"file in models/{ca.CLIP_FOLDER} (found: {_few(ca.list_models(ca.CLIP_FOLDER))}; searched: {ca.searched_folders(ca.CLIP_FOLDER)}), "
        f"an open_clip pretrained tag ({_few(sorted(tags, key=lambda t: (t != 'openai', t)))}), or {urls}. Paths outside models/{ca.CLIP_FOLDER} are refused.")


def check_clip_pair(clip_name: str, pretrained: str) -> None:
    """Refuse an open_clip tag that open_clip does not publish for this model (RN50 + webli would only fail
    when the run starts): a ValueError about the ``pretrained`` widget naming the model's tags. Files, URLs,
    'none', 'demo' and local folders are not pairs to check."""
    import open_clip

    if clip_name == ca.DEMO_NAME or clip_name.startswith("local:") or pretrained == "none":
        return
    if pretrained not in _open_clip_tags() or pretrained in ca.list_models(ca.CLIP_FOLDER):
        return
    tags = open_clip.list_pretrained_tags_by_model(clip_name)
    if pretrained in tags:
        return
    log.warning("Load CLIP Guide refused pretrained %r for %r", pretrained, clip_name)
    valid = (f"open_clip publishes {clip_name} with: {', '.join(tags)}" if tags
             else f"open_clip publishes no weights for {clip_name}")
    raise ValueError(
        f"Load CLIP Guide: pretrained {pretrained!r} does not exist for clip_name {clip_name!r}; {valid}. Choose "
        f"{'one of those, ' if tags else ''}'none' (random weights) or a weights file for {clip_name} in "
        f"ComfyUI/models/{ca.CLIP_FOLDER}.")


class LoadCLIPGuide(io.ComfyNode):
    """Load one CLIP model (open_clip) as a guide."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: model name + pretrained weights."""
        return io.Schema(
            node_id="VQClip_LoadGuide",
            display_name="Load CLIP Guide",
            category=CATEGORY,
            description="Loads an open_clip model. 'pretrained' is a weights file from models/clip_guide or an "
            "open_clip tag published for that model (e.g. ViT-B-32 + openai or laion2b_s34b_b79k; another pair is "
            "refused when queued, naming the model's tags), downloaded by open_clip when online; over the API "
            "also a URL under a prefix the "
            "server's owner listed in VQGAN_CLIP_ALLOWED_URLS. 'none' gives random weights (the same in every "
            "run). 'demo' is the shipped 64x64 shapes-world guide (a pair: a colour CLIP and an adversarially "
            "trained shape CLIP) and 'local:<folder>' an open_clip folder in models/clip_guide; both ignore "
            "'pretrained'.",
            inputs=[
                io.Combo.Input("clip_name", options=clip_model_choices(), default=ca.DEMO_NAME,
                               tooltip="open_clip model (only those with published weights are listed), 'demo', "
                               "or 'local:<folder>' for an open_clip folder in models/clip_guide."),
                io.Combo.Input("pretrained", options=clip_pretrained_choices(), default="none",
                               tooltip="Weights file in models/clip_guide, or an open_clip tag published for "
                               "clip_name, such as 'openai'."),
            ],
            outputs=[ClipGuide.Output(display_name="clip_guide")],
        )

    @classmethod
    def validate_inputs(cls, clip_name: str, pretrained: str) -> bool | str:
        """Refuse, before the run, names that are neither offered options nor files in models/clip_guide, and a
        tag open_clip does not publish for the chosen model (a linked input arrives as None here and is checked
        when the node runs)."""
        try:
            if clip_name is not None:
                resolve_clip_name(clip_name)
            if pretrained is not None:
                resolve_clip_pretrained(pretrained)
            if clip_name is not None and pretrained is not None:
                check_clip_pair(clip_name, pretrained)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, clip_name: str, pretrained: str) -> io.NodeOutput:
        """Resolve names to paths and load (cached) where ComfyUI keeps idle models; Cancel stops a URL download."""
        from ..vqgan_core import load_clip

        name = resolve_clip_name(clip_name)
        weights = resolve_clip_pretrained(pretrained)
        check_clip_pair(clip_name, pretrained)
        if pretrained == "none" and clip_name != ca.DEMO_NAME and not clip_name.startswith("local:"):
            log.warning("CLIP %s with pretrained 'none' has random weights: it will not guide anything useful",
                        clip_name)
        device = memory.offload_device()

        def one(name: str, weights: str):  # noqa: ANN202
            def build():  # noqa: ANN202
                with ca.outside_inference_mode():
                    guide = load_clip(name, weights, device=device, check_interrupt=ca.check_interrupt,
                                      offline_hint=md.clip_offline_hint)
                memory.manage(guide.model)
                return guide

            return cached_model(("clip", name, weights, str(device)), build)

        if clip_name == ca.DEMO_NAME:  # the demo guide is a pair (colours, shapes)
            from ..vqgan_core import DEMO_GUIDE, ClipEnsemble

            return io.NodeOutput(ClipEnsemble([(one(n, "none"), w) for n, w in DEMO_GUIDE]))
        return io.NodeOutput(one(name, weights))


class CombineCLIPGuides(io.ComfyNode):
    """Several CLIP models as one weighted guide (each sees its own cutouts at its own size)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: two guides (a third optional) with weights."""
        w = {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.05, "round": 0.001}
        return io.Schema(
            node_id="VQClip_CombineGuides",
            display_name="Combine CLIP Guides",
            category=CATEGORY,
            description="Makes an ensemble: the loss is the weighted sum over the CLIP models. Ensembles can be "
            "combined again (weights multiply).",
            inputs=[
                ClipGuide.Input("guide_1", tooltip="A CLIP guide (or an ensemble)."),
                io.Float.Input("weight_1", **w, tooltip="Share of guide_1 in the loss (0 leaves it out)."),
                ClipGuide.Input("guide_2", tooltip="Another CLIP guide (or an ensemble)."),
                io.Float.Input("weight_2", **w, tooltip="Share of guide_2 in the loss (0 leaves it out)."),
                ClipGuide.Input("guide_3", optional=True, tooltip="Optional third CLIP guide."),
                io.Float.Input("weight_3", **w, tooltip="Share of guide_3 in the loss (used only when connected)."),
            ],
            outputs=[ClipGuide.Output(display_name="clip_guide")],
        )

    @classmethod
    def execute(cls, guide_1, weight_1: float, guide_2, weight_2: float,  # noqa: ANN001
                weight_3: float = 1.0, guide_3=None) -> io.NodeOutput:  # noqa: ANN001
        """Flatten the inputs into one ClipEnsemble."""
        from ..vqgan_core import ClipEnsemble

        members = []
        for guide, weight in ((guide_1, weight_1), (guide_2, weight_2), (guide_3, weight_3)):
            if guide is None:
                continue
            members += [(g, w * weight) for g, w in ClipEnsemble.of(guide).guides]
        if sum(w for _, w in members) <= 0:
            raise ValueError("All CLIP guide weights are 0: give at least one guide a weight above 0.")
        return io.NodeOutput(ClipEnsemble(members))
