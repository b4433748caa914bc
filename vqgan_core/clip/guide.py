"""CLIP guides via open_clip: one model (own input size and normalisation) or a weighted ensemble.

``load_clip(name, pretrained)`` accepts, for ``pretrained``:

* an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``...): downloaded by open_clip into its standard
  cache when online; offline, a :class:`ClipLoadError` says which file to fetch and where to put it;
* a local weights file (``.pt``/``.pth``/``.bin``/``.safetensors``, loaded with ``weights_only``);
* an ``http(s)`` URL: downloaded atomically into ``<vqgan_core cache>/clip`` once, then loaded;
* ``"none"``: random initialisation (tests, benchmarks), from a seed derived from the model name so the same
  command gives the same image in every process; the caller's RNG state is left untouched.

``name`` may also be ``"demo"`` / ``"demo-robust"`` (the shipped tiny CLIPs: colours / shapes; ``demo`` in
:func:`load_clip_ensemble` is the pair) or a folder holding ``open_clip_config.json`` +
``open_clip_model.safetensors`` (+ ``bpe_vocab.txt.gz`` for a custom vocabulary: open_clip's
``get_tokenizer("local-dir:...")`` would silently return the 49k-token default, so it is built here).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .speed import apply_speed_patches

__all__ = ["ClipEnsemble", "ClipGuide", "ClipLoadError", "load_clip", "load_clip_ensemble", "parse_clip_spec"]

log = logging.getLogger(__name__)

_WEIGHT_EXT = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_NONE = ("", "none", "random")


class ClipLoadError(ValueError):
    """A CLIP model or its weights could not be found or loaded; the message says how to fix it."""


def looks_like_path(s: str) -> bool:
    """Whether ``s`` names a file or folder (a path or a weights file name) rather than a model name or tag."""
    return bool(re.match(r"^[A-Za-z]:[\\/]", s)) or s.startswith(("/", "./", "../", "~", "\\\\")) or (
        s.lower().endswith(_WEIGHT_EXT)
    ) or "/" in s or "\\" in s


def parse_clip_spec(spec: str) -> tuple[str, str | None]:
    """Split the CLI form ``NAME[:TAG|:PATH|:URL]`` into ``(name, pretrained)``.

    Only the first colon separates; Windows paths (``ViT-B-32:C:\\w\\clip.pt``) and URLs keep theirs.
    A bare folder path or ``demo`` is returned as the name with ``pretrained=None``. A bare model name
    also gives ``None``, meaning "the default tag" in :func:`load_clip_ensemble`.
    """
    spec = spec.strip()
    if not spec:
        raise ClipLoadError("empty CLIP spec; expected NAME[:TAG|:PATH], e.g. ViT-B-32:openai")
    if re.match(r"^[A-Za-z]:[\\/]", spec) or spec.startswith(("/", "./", "../", "~", "\\\\")) or os.path.isdir(spec):
        return spec, None
    name, sep, rest = spec.partition(":")
    if not sep:
        return name, None
    if not name or not rest:
        raise ClipLoadError(f"malformed CLIP spec {spec!r}; expected NAME[:TAG|:PATH], e.g. ViT-B-32:openai")
    return name, rest


@dataclass
class ClipGuide:
    """A frozen CLIP model with its tokenizer, input size and normalisation.

    ``encode_image`` takes images in [0, 1] and resizes/normalises them itself, so callers never need
    to know which CLIP they talk to (ensembles mix sizes and normalisations).
    """

    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: torch.Tensor  # [1,3,1,1]
    std: torch.Tensor
    name: str = ""
    pretrained: str = ""

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights (fp16 in the classic CUDA mode)."""
        return next(self.model.parameters()).dtype

    @property
    def spec(self) -> str:
        """``name:pretrained`` as it would be given on the command line."""
        return f"{self.name}:{self.pretrained}" if self.pretrained else self.name

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ClipGuide:
        """Move weights (and normalisation constants) in place; returns self."""
        self.model.to(device=device, dtype=dtype)
        self.__dict__.pop("_lowp", None)  # low-precision copies follow the weights
        self.__dict__.pop("_norm", None)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> ``[N, D]`` float32 embeddings (not normalised)."""
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens).float()

    def lowp_model(self, dtype: torch.dtype) -> torch.nn.Module:
        """A cached copy of the weights in ``dtype`` (bf16/fp16 runs skip per-step weight casts).

        Keyed by the weights' device too: after the host moved the model (ComfyUI offloads it), the next
        run copies again instead of using a copy on the old device.
        """
        cache = self.__dict__.setdefault("_lowp", {})
        key = (dtype, self.device)
        if key not in cache:
            cache.clear()
            cache[key] = copy.deepcopy(self.model).to(dtype=dtype).eval().requires_grad_(False)
        return cache[key]

    def drop_copies(self) -> None:
        """Free the cached low-precision copies (a host calls this when a run ends or it moves the weights)."""
        self.__dict__.pop("_lowp", None)

    def _normalisation(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` on ``device`` in ``dtype``, cached: a host that moves only the weights (ComfyUI)
        leaves the constants where they were, and a copy per step would synchronise (no CUDA graph)."""
        cache = self.__dict__.setdefault("_norm", {})
        key = (device, dtype)
        if key not in cache:
            cache[key] = (self.mean.to(device, dtype), self.std.to(device, dtype))
        return cache[key]

    def encode_image(self, x01: torch.Tensor, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Images in [0,1] -> ``[N, D]`` float32 embeddings; differentiable w.r.t. the input.

        ``model`` overrides the weights used (e.g. :meth:`lowp_model`).

        Shape:
            x01: [N, 3, H, W] (resized to ``image_size`` if needed) -> [N, D]
        """
        model = self.model if model is None else model
        if x01.shape[-2:] != (self.image_size, self.image_size):
            x01 = F.interpolate(x01, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        mean, std = self._normalisation(x01.device, x01.dtype)
        x = (x01 - mean) / std
        if x.device.type == "meta" or not torch.is_autocast_enabled(x.device.type):  # meta: memory estimates
            x = x.to(next(model.parameters()).dtype)
        return model.encode_image(x).float()

    @torch.no_grad()
    def embed_dim(self) -> int:
        """Embedding width (from a one-token text encode; cheap and model-agnostic)."""
        return int(self.encode_text(["a"]).shape[-1])


@dataclass
class ClipEnsemble:
    """Several guides with loss weights; each sees its own cutouts at its own size."""

    guides: list[tuple[ClipGuide, float]]

    def __post_init__(self) -> None:
        if not self.guides:
            raise ClipLoadError("a CLIP ensemble needs at least one model")

    @classmethod
    def of(cls, clip: ClipGuide | ClipEnsemble | list) -> ClipEnsemble:
        """Normalise a guide, a list of guides / (guide, weight) pairs, or an ensemble to an ensemble."""
        if isinstance(clip, ClipEnsemble):
            return clip
        if isinstance(clip, ClipGuide):
            return cls([(clip, 1.0)])
        return cls([c if isinstance(c, tuple) else (c, 1.0) for c in clip])

    @property
    def specs(self) -> list[str]:
        """Specs of the members (for metadata)."""
        return [g.spec for g, _ in self.guides]


def _preprocess(model: torch.nn.Module) -> tuple[int, torch.Tensor, torch.Tensor]:
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = open_clip.get_model_preprocess_cfg(model) if hasattr(open_clip, "get_model_preprocess_cfg") else {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    if isinstance(size, (tuple, list)):
        if size[0] != size[-1]:
            raise ClipLoadError(f"non-square CLIP input size {size} is not supported")
        size = size[0]
    mean = torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_DATASET_STD), dtype=torch.float32).view(1, 3, 1, 1)
    return int(size), mean, std


def _load_folder(folder: Path, label: str) -> tuple[torch.nn.Module, object]:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    cfg_path = folder / "open_clip_config.json"
    if not cfg_path.is_file():
        raise ClipLoadError(f"CLIP folder {folder} has no open_clip_config.json (expected open_clip's HF layout: "
                            "open_clip_config.json + open_clip_model.safetensors [+ bpe_vocab.txt.gz])")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    model = open_clip.create_model("local-dir:" + str(folder))
    tok_cfg = cfg.get("tokenizer_cfg", {})
    ctx = int(tok_cfg.get("context_length", cfg["model_cfg"].get("text_cfg", {}).get("context_length", 77)))
    bpe = folder / tok_cfg.get("bpe", "bpe_vocab.txt.gz")
    if bpe.is_file():
        tokenizer = SimpleTokenizer(bpe_path=str(bpe), context_length=ctx)
    else:
        tokenizer = open_clip.get_tokenizer("local-dir:" + str(folder))
    log.info("loaded CLIP %s from folder %s", label, folder)
    return model, tokenizer


def random_init_seed(name: str) -> int:
    """The fixed seed of ``name``'s random weights (stable across processes, unlike ``hash()``).

    The salt is the module's path before the core had subpackages, frozen: the same name keeps the same weights.
    """
    return int.from_bytes(hashlib.sha256(f"vqgan_core.clip_guide:{name}".encode()).digest()[:8], "little") >> 1


def _random_model(name: str) -> torch.nn.Module:
    """open_clip model ``name`` with random weights drawn from :func:`random_init_seed`.

    Built on the CPU inside ``fork_rng`` with only the CPU generator reseeded, so the global RNG states (CPU and
    CUDA) are the same afterwards: loading a guide never changes what a seeded run draws next.
    """
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(random_init_seed(name))
        return open_clip.create_model(name, pretrained=None, device="cpu")


def _with_weights(name: str, path: str, downloaded_from: str | None = None) -> torch.nn.Module:
    """open_clip model ``name`` with weights from ``path`` (weights_only), or an error naming both (and, for a
    cached download, how to get it again)."""
    import open_clip

    model = open_clip.create_model(name, pretrained=None)
    try:
        open_clip.load_checkpoint(model, path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - wrong architecture (RuntimeError), corrupt file (UnpicklingError)...
        msg = str(e).splitlines()[0].split(". ")[0][:300]
        hint = (f" It is the cached download of {downloaded_from}: delete {path} (and {path}.sha256) to download it "
                "again." if downloaded_from else "")
        raise ClipLoadError(f"could not load CLIP weights {path} into open_clip model {name!r}: {type(e).__name__}: "
                            f"{msg}. Is the file for this model name, complete, and a PyTorch/safetensors file?"
                            f"{hint}") from None
    return model


OfflineHint = Callable[[str, str, str], str]
"""``hint(name, tag, source)`` -> what to do when open_clip cannot fetch ``name:tag`` (``source``: its download page)."""


def cli_offline_hint(name: str, tag: str, source: str) -> str:
    """The command line's advice for weights open_clip could not fetch (hosts phrase their own: ``offline_hint``)."""
    return (f"Offline? Download {source} on a connected machine and either pass the file "
            f"(--clip {name}:/path/to/file.safetensors) or copy the Hugging Face cache (HF_HUB_CACHE, default "
            "~/.cache/huggingface/hub) to this machine.")


def pretrained_source(name: str, tag: str) -> str:
    """Where open_clip gets ``name:tag`` from (a Hugging Face page or a URL), for messages."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    return f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')}" if cfg.get("hf_hub") else cfg.get("url") or "?"


def _load_builtin(name: str, pretrained: str | None, check_interrupt: Callable[[], object] | None = None,
                  offline_hint: OfflineHint | None = None) -> tuple[torch.nn.Module, object, str]:
    import open_clip

    if looks_like_path(name) and name.replace("/", "-") not in open_clip.list_models():  # not OpenAI's ViT-B/32
        raise ClipLoadError(f"CLIP folder not found: {name} (expected an open_clip folder with open_clip_config.json, "
                            "a model name such as ViT-B-32, or 'demo')")
    name = name.replace("/", "-")  # OpenAI spelling ViT-B/32 -> open_clip's ViT-B-32
    if name not in open_clip.list_models():
        raise ClipLoadError(f"unknown open_clip model {name!r}; valid names: {', '.join(open_clip.list_models())}")
    tokenizer = open_clip.get_tokenizer(name)
    p = (pretrained or "none").strip()
    if p.lower() in _NONE:
        return _random_model(name), tokenizer, "none"
    if p.startswith(("http://", "https://")):
        from ..hub.download import cache_dir, download

        local = download(p, dest_dir=cache_dir() / "clip", check_interrupt=check_interrupt)
        return _with_weights(name, str(local), downloaded_from=p), tokenizer, p
    if os.path.isfile(os.path.expanduser(p)):
        return _with_weights(name, os.path.expanduser(p)), tokenizer, p
    if looks_like_path(p):
        raise ClipLoadError(f"CLIP weights file not found: {p}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if p not in tags:
        raise ClipLoadError(f"unknown pretrained tag {p!r} for {name}; valid tags: {', '.join(tags) or '(none)'}; "
                            "or give a local weights file, a URL, or 'none'")
    try:
        model = open_clip.create_model(name, pretrained=p)
    except Exception as e:  # open_clip raises RuntimeError / FileNotFoundError / hub errors when offline
        hint = (offline_hint or cli_offline_hint)(name, p, pretrained_source(name, p))
        raise ClipLoadError(f"could not obtain CLIP weights {name}:{p} ({type(e).__name__}: {e}). {hint}") from None
    return model, tokenizer, p


def load_clip(
    name: str,
    pretrained: str | None = "none",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    check_interrupt: Callable[[], object] | None = None,
    offline_hint: OfflineHint | None = None,
) -> ClipGuide:
    """Load a frozen CLIP guide (eval mode, ``requires_grad=False``).

    Args:
        name: open_clip model name (``ViT-B-32``), ``demo``, or a folder in open_clip's HF layout.
        pretrained: tag, weights file, URL or ``none`` (see module doc); ignored for folders.
        device: where to put the weights.
        dtype: weight dtype (float32; float16 reproduces the classic CUDA numerics).
        check_interrupt: called between the chunks of a URL download; what it raises stops the download
            (ComfyUI passes its Cancel check). open_clip's own tag downloads are not covered.
        offline_hint: ``hint(name, tag, source)`` -> the advice given when open_clip cannot fetch a tag's weights
            (default :func:`cli_offline_hint`, in command-line terms; ComfyUI names its models folder instead).
    """
    from ..hub import demo

    if demo.is_demo_clip(name):
        folder, label = demo.clip_folder(name), name
    elif os.path.isdir(os.path.expanduser(name)):
        folder, label = Path(os.path.expanduser(name)), name
    else:
        folder = None
    if folder is not None:
        model, tokenizer = _load_folder(folder, label)
        used = ""
    else:
        model, tokenizer, used = _load_builtin(name, pretrained, check_interrupt, offline_hint)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    apply_speed_patches(model)
    size, mean, std = _preprocess(model)
    return ClipGuide(model, tokenizer, size, mean.to(device), std.to(device), name=name, pretrained=used)


def _default_tag(name: str) -> str:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tags:
        return "none"
    return "openai" if "openai" in tags else tags[0]


def load_clip_ensemble(
    specs: list[str], weights: list[float] | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ClipEnsemble:
    """Load ``NAME[:TAG|:PATH]`` specs (bare names use ``openai`` or the first known tag) as an ensemble.

    ``demo`` stands for the demo's guide pair (``vqgan_core.DEMO_GUIDE``: the colour CLIP ``demo`` and the shape
    CLIP ``demo-robust``), its weight multiplying the pair's own.
    """
    if weights is not None and len(weights) != len(specs):
        raise ClipLoadError(f"{len(specs)} CLIP models but {len(weights)} weights")
    from ..hub import demo

    guides = []
    for k, spec in enumerate(specs):
        name, pre = parse_clip_spec(spec)
        w = 1.0 if weights is None else float(weights[k])
        if name == demo.NAME:  # the demo guide is a pair: colours and shapes
            guides += [(load_clip(n, device=device, dtype=dtype), w * dw) for n, dw in demo.DEMO_GUIDE]
            continue
        if pre is None and not demo.is_demo_clip(name) and not os.path.isdir(os.path.expanduser(name)):
            pre = _default_tag(name)
            log.info("CLIP %s: no weights given, using pretrained tag %r", name, pre)
        guides.append((load_clip(name, pre, device=device, dtype=dtype), w))
    return ClipEnsemble(guides)
