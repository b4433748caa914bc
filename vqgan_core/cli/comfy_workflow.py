"""ComfyUI workflows for command-line runs, and command-line settings from ComfyUI images (pure Python).

Why: ComfyUI reads two PNG text chunks: ``workflow`` (the editor's graph, loaded when a PNG is dropped onto the
editor) and ``prompt`` (the API-format prompt the server ran). A CLI image carries both, built here, when its run
maps exactly onto this pack's nodes (Load VQGAN [+ VQGAN Seamless] + Load CLIP Guide + VQGAN+CLIP Generate + Save
Image): the dropped PNG then opens a graph that makes the same image. A run using a setting the Generate node has
no widget for gets neither chunk (a graph making another image would be worse than none).

The other way round, :func:`settings_from_comfy_prompt` turns the ``prompt`` chunk of an image saved by ComfyUI
into generation settings for ``generate --from-png``: a VQGAN+CLIP Generate node, or a VQGAN+CLIP Optimize fed
by Random VQ Latent and CLIP Text Prompt. What cannot be mapped is an error naming the node and its input.

The editor stores widget values by position, so the widget order below must follow the nodes' schemas
(tests/e2e/test_cli_png_interop.py rebuilds it from the node definitions, so any drift fails there).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ..engine.config import SEED_MAX  # the nodes' seed widgets
from ..media.image_io import METADATA_KEY, png_chunks, read_png_metadata
from .png_trust import names_file_or_url  # one definition of "names a file or URL"

__all__ = ["GENERATE", "NODE_WIDGETS", "ComfyWorkflow", "api_from_chunk", "comfy_workflow", "settings_from_png",
           "settings_from_comfy_prompt"]

log = logging.getLogger(__name__)

GENERATE = "VQGAN_CLIPGenerate"
OPTIMIZE = "VQGAN_CLIPOptimize"
DEMO = "demo"

SAVE_PREFIX = "vqgan_clip/from_cli"

# (widget name, values it takes in widgets_values: a seed with control_after_generate keeps one more, "fixed")
NODE_WIDGETS: dict[str, tuple[tuple[str, int], ...]] = {
    "VQGAN_Load": (("vqgan_name", 1),),
    "VQGAN_Seamless": (),
    "VQClip_LoadGuide": (("clip_name", 1), ("pretrained", 1)),
    GENERATE: (("prompt", 1), ("width", 1), ("height", 1), ("steps", 1), ("optimizer", 1), ("lr", 1), ("cutouts", 1),
               ("cutout_method", 1), ("augmentations", 1), ("seed", 2), ("preview_every", 1), ("low_memory", 1),
               ("lr_schedule", 1), ("change_prompts_every", 1), ("story_fade", 1), ("method", 1),
               ("snapshot_every", 1)),
    "SaveImage": (("filename_prefix", 1),),
}
# socket inputs (name, type) in the node's input order, outputs (name, type), and the editor's titles
NODE_SOCKETS: dict[str, tuple[tuple[str, str], ...]] = {
    "VQGAN_Load": (), "VQClip_LoadGuide": (), "VQGAN_Seamless": (("vqgan", "VQGAN_MODEL"),),
    GENERATE: (("vqgan", "VQGAN_MODEL"), ("clip_guide", "VQCLIP_GUIDE")), "SaveImage": (("images", "IMAGE"),),
}
NODE_OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "VQGAN_Load": (("vqgan", "VQGAN_MODEL"),), "VQGAN_Seamless": (("vqgan", "VQGAN_MODEL"),),
    "VQClip_LoadGuide": (("clip_guide", "VQCLIP_GUIDE"),), GENERATE: (("image", "IMAGE"), ("latent", "VQ_LATENT"), ("snapshots", "IMAGE")),
    "SaveImage": (),
}
NODE_TITLES = {"VQGAN_Load": "Load VQGAN", "VQGAN_Seamless": "VQGAN Seamless (Tileable)",
               "VQClip_LoadGuide": "Load CLIP Guide", GENERATE: "VQGAN+CLIP Generate", "SaveImage": "Save Image"}
# GenerationConfig fields that never change the image (speed, logging, memory) or are mapped separately
_IMAGE_NEUTRAL = {"log_every", "save_every", "preview_every", "checkpoint_decoder", "compile", "cuda_graph",
                  "channels_last", "cudnn_benchmark", "deterministic", "vqgan", "clip", "clip_weights", "optimizer",
                  "seamless", "steps"}


@dataclass
class ComfyWorkflow:
    """A CLI run as ComfyUI graphs: ``ui`` (the ``workflow`` chunk) and ``api`` (the ``prompt`` chunk), or
    ``reason`` why the run has none. ``notes``: model files ComfyUI must be given (also in a Note node)."""

    ui: dict[str, Any] | None = None
    api: dict[str, Any] | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def chunks(self) -> dict[str, str]:
        """The PNG text chunks ComfyUI reads (empty when the run does not map)."""
        if self.ui is None or self.api is None:
            return {}
        return {"prompt": json.dumps(self.api), "workflow": json.dumps(self.ui)}


# -- CLI run -> ComfyUI graphs ---------------------------------------------------------------------------------

def _file_name(spec: str) -> str:
    """The file name of a path or URL (what ComfyUI's model menus list)."""
    if spec.startswith(("http://", "https://")):
        return os.path.basename(urlparse(spec).path) or "model.ckpt"
    return os.path.basename(os.path.normpath(os.path.expanduser(spec)))


def vqgan_widget(spec: str) -> tuple[str, str | None]:
    """``(vqgan_name, note)``: 'demo' stays 'demo'; a released model, file or URL becomes its file name, with a
    note saying where ComfyUI expects it (models/vqgan)."""
    from ..hub.known_models import KNOWN_VQGANS

    if spec == DEMO:
        return DEMO, None
    if spec in KNOWN_VQGANS:
        return f"{spec}.ckpt", (f"Load VQGAN: put the released model {spec} ({spec}.ckpt and its .yaml, which "
                                "vqgan_core downloads into its cache) into ComfyUI/models/vqgan")
    name = _file_name(spec)
    return name, f"Load VQGAN: copy {spec} (with its .yaml for a taming .ckpt) into ComfyUI/models/vqgan as {name}"


def clip_widgets(specs: list[str]) -> tuple[tuple[str, str] | None, str | None, str]:
    """``((clip_name, pretrained), note, reason)`` for the CLI's ``--clip`` specs; ``reason`` when there is no
    Load CLIP Guide equivalent (an ensemble)."""
    from ..clip.guide import ClipLoadError, parse_clip_spec

    if len(specs) != 1:
        return None, None, (f"an ensemble of {len(specs)} CLIP models (Load CLIP Guide loads one; build the "
                            "ensemble with Combine CLIP Guides by hand)")
    try:
        name, pretrained = parse_clip_spec(specs[0])
    except ClipLoadError as e:
        return None, None, str(e)
    if name == DEMO:
        return (DEMO, "none"), None, ""
    if pretrained is None and (names_file_or_url(name) or os.path.isdir(os.path.expanduser(name))):
        folder = _file_name(name)
        return (f"local:{folder}", "none"), (f"Load CLIP Guide: copy the open_clip folder {name} into "
                                             f"ComfyUI/models/clip_guide as {folder}"), ""
    if pretrained is None:
        try:
            from ..clip.guide import _default_tag  # the tag the CLI loads for a bare name

            pretrained = _default_tag(name)
        except Exception as e:  # noqa: BLE001 - open_clip missing or the name unknown: say so, keep a guess
            log.debug("no default tag for %s: %s", name, e)
            return (name, "openai"), f"Load CLIP Guide: check that pretrained 'openai' is what {name} loaded", ""
    if names_file_or_url(pretrained):
        weights = _file_name(pretrained)
        return (name, weights), (f"Load CLIP Guide: copy {pretrained} into ComfyUI/models/clip_guide as "
                                 f"{weights}"), ""
    return (name, pretrained), None, ""


def _canonical(value: str, names: list[str]) -> str | None:
    """``value`` as spelled in ``names`` (the engine's registries ignore case), else None."""
    return next((n for n in names if n.lower() == str(value).lower()), None)


def generate_widgets(cfg: dict[str, Any], steps: int) -> tuple[dict[str, Any] | None, list[str]]:
    """The VQGAN+CLIP Generate widget values for a run (``cfg``: ``GenerationConfig.to_dict()``) that made its
    image after ``steps`` steps, or None and the reasons the node cannot make that image."""
    from ..engine.config import GenerationConfig
    from ..engine.optim_spec import SCHEDULERS
    from ..engine.optimizers import optimizer_names
    from ..latents.code_sampling import METHODS
    from ..objective.prompts import PromptSyntaxError, parse_prompt_set
    from ..util.settings import settings_of
    from ..views.cutouts import cutout_names

    why: list[str] = []
    prompt = cfg.get("prompts") or ""
    if not prompt.strip():
        why.append("no text prompt (the node needs one)")
    elif "^" in prompt and not cfg.get("change_prompts_every"):
        why.append("'^' story phrase sets without change_prompts_every (this run keeps the first set, as the "
                   "classic script; the node would share its steps among the sets)")
    else:
        try:
            for part in prompt.split("^"):
                if not part.strip():
                    raise PromptSyntaxError("an empty story phrase set")
                parse_prompt_set(texts=part)
        except PromptSyntaxError as e:
            why.append(f"a prompt the node does not parse ({e})")
    names = {"optimizer": optimizer_names(), "cutout_method": cutout_names(), "lr_schedule": SCHEDULERS.names(),
             "method": list(METHODS)}
    choice = {k: _canonical(cfg.get(k, ""), v) for k, v in names.items()}
    why += [f"{k} {cfg.get(k)!r} is not on the node's menu" for k, v in choice.items() if v is None]
    fields = settings_of(GenerationConfig)  # the widgets are made from these (nodes/settings.py)
    for k in ("width", "height", "cutn", "change_prompts_every", "story_fade", "seed"):
        lo, hi = fields[k].min, fields[k].max
        if not (isinstance(cfg.get(k), int) and lo <= cfg[k] <= hi):
            why.append(f"{k}={cfg.get(k)!r} is outside the widget's {lo:g}..{hi:g}")
    if not 1 <= steps <= fields["steps"].max:  # a graph's steps widget starts at 1
        why.append(f"an image after {steps} steps (the steps widget takes 1..{fields['steps'].max:g})")
    for k in ("width", "height"):
        if isinstance(cfg.get(k), int) and cfg[k] % fields[k].step:
            why.append(f"{k}={cfg[k]} is not a multiple of {fields[k].step:g} (the widget's step)")
    lr, lr_field = cfg.get("lr"), fields["lr"]
    digits = round(-math.log10(lr_field.step / 10))  # the widget rounds to a tenth of its step
    if not (isinstance(lr, (int, float)) and lr_field.min <= lr <= lr_field.max and round(lr, digits) == lr):
        why.append(f"lr={lr!r} does not fit the widget ({lr_field.min:g}..{lr_field.max:g}, {digits} decimals)")
    augments = list(cfg.get("augments") or [])
    if why:
        return None, why
    widgets = {"prompt": prompt, "width": cfg["width"], "height": cfg["height"], "steps": steps,
               "optimizer": choice["optimizer"], "lr": lr, "cutouts": cfg["cutn"],
               "cutout_method": choice["cutout_method"], "augmentations": ",".join(augments) or "none",
               "seed": cfg["seed"], "preview_every": min(int(cfg.get("preview_every") or 0), 10000) or 10,
               "low_memory": cfg.get("checkpoint_decoder") is True, "lr_schedule": choice["lr_schedule"],
               "change_prompts_every": cfg["change_prompts_every"], "story_fade": cfg["story_fade"],
               "method": choice["method"], "snapshot_every": 0}
    # what the node runs: its widgets over GenerationConfig's defaults (nodes/optimize.py engine_settings)
    node = GenerationConfig.from_dict({
        "prompts": prompt, "width": widgets["width"], "height": widgets["height"], "steps": steps,
        "optimizer": widgets["optimizer"], "lr": lr, "cutn": widgets["cutouts"],
        "cutout_method": widgets["cutout_method"], "augments": widgets["augmentations"], "seed": widgets["seed"],
        "init": "random", "lr_schedule": widgets["lr_schedule"], "change_prompts_every": widgets["change_prompts_every"],
        "story_fade": widgets["story_fade"], "method": widgets["method"]}).to_dict()
    mine = GenerationConfig.from_dict({k: v for k, v in cfg.items() if k in node}).to_dict()
    if not mine.get("init_weight"):
        node["init_weight_decay"] = mine["init_weight_decay"]  # no pull-back: its decay does nothing
    if not mine.get("image_losses"):
        node["image_losses_from"] = mine["image_losses_from"]  # no image losses: when they start does nothing
    for k in sorted(set(node) - _IMAGE_NEUTRAL):
        if k in ("lr_schedule", "cutout_method", "method"):
            same = str(mine[k]).lower() == str(node[k]).lower()
        else:
            same = mine[k] == node[k]
        if not same:
            why.append(f"{k}={mine[k]!r} (the node has no widget for it; it runs {node[k]!r})")
    weights = cfg.get("clip_weights")
    if weights is not None and any(w != 1.0 for w in weights):
        why.append(f"clip_weights={weights!r}")
    return (None, why) if why else (widgets, [])


def comfy_workflow(cfg: dict[str, Any], step: int | None = None, resumed: bool = False,
                   filename_prefix: str = SAVE_PREFIX) -> ComfyWorkflow:
    """The ComfyUI graphs that make the image of a CLI run after ``step`` steps (default: all of ``cfg``'s), or
    the reason there are none.

    An image taken before the end (``--save-every``, ``--stop-at``, an interrupted run) maps onto a Generate
    node running ``step`` steps only when the learning rate does not depend on the run's length (constant).
    """
    total = int(cfg.get("steps") or 0)
    step = total if step is None else int(step)
    why: list[str] = []
    if resumed:
        why.append("it continues a --resume latent file (Generate starts from random codes)")
    if int(cfg.get("batch_size") or 1) != 1 or cfg.get("batch_prompts"):
        why.append(f"a batch of {cfg.get('batch_size')} images (Generate makes one)")
    if step != total and str(cfg.get("lr_schedule", "constant")).lower() != "constant":
        why.append(f"an image from before the end of a run with the {cfg.get('lr_schedule')} learning-rate schedule "
                   "(which depends on the run's length)")
    widgets, more = generate_widgets(cfg, step)
    why += more
    clip, clip_note, clip_why = clip_widgets(list(cfg.get("clip") or []))
    if clip_why:
        why.append(clip_why)
    if why or widgets is None or clip is None:
        return ComfyWorkflow(reason="; ".join(why))
    vqgan_name, vqgan_note = vqgan_widget(str(cfg.get("vqgan") or DEMO))
    notes = [n for n in (vqgan_note, clip_note) if n]
    nodes = _nodes(vqgan_name, clip, widgets, bool(cfg.get("seamless")), filename_prefix)
    return ComfyWorkflow(ui=_ui(nodes, notes), api=_api(nodes), notes=notes)


@dataclass
class _Node:
    id: int
    type: str
    widgets: dict[str, Any]
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # socket name -> (source node, output slot)
    pos: tuple[int, int] = (40, 40)
    size: tuple[int, int] = (300, 60)


def _nodes(vqgan_name: str, clip: tuple[str, str], widgets: dict[str, Any], seamless: bool,
           prefix: str) -> list[_Node]:
    model = 2 if seamless else 1
    nodes = [_Node(1, "VQGAN_Load", {"vqgan_name": vqgan_name}, pos=(40, 40), size=(300, 58))]
    if seamless:
        nodes.append(_Node(2, "VQGAN_Seamless", {}, {"vqgan": (1, 0)}, pos=(40, 170), size=(300, 46)))
    guide = len(nodes) + 1
    nodes += [
        _Node(guide, "VQClip_LoadGuide", {"clip_name": clip[0], "pretrained": clip[1]}, pos=(40, 170 + 120 * seamless),
              size=(300, 82)),
        _Node(guide + 1, GENERATE, widgets, {"vqgan": (model, 0), "clip_guide": (guide, 0)}, pos=(380, 40),
              size=(300, 492)),
        _Node(guide + 2, "SaveImage", {"filename_prefix": prefix}, {"images": (guide + 1, 0)}, pos=(720, 40),
              size=(320, 360)),
    ]
    return nodes


def _api(nodes: list[_Node]) -> dict[str, Any]:
    """The API-format prompt (what the editor's Queue sends and ComfyUI's Save Image stores as ``prompt``)."""
    out = {}
    for n in nodes:
        inputs: dict[str, Any] = {name: n.widgets[name] for name, _ in NODE_WIDGETS[n.type]}
        inputs.update({name: [str(src), slot] for name, (src, slot) in n.links.items()})
        out[str(n.id)] = {"inputs": inputs, "class_type": n.type, "_meta": {"title": NODE_TITLES[n.type]}}
    return out


def _ui(nodes: list[_Node], notes: list[str]) -> dict[str, Any]:
    """The editor's graph (the format of the shipped workflows/*.json), widget values in schema order."""
    links: list[list[Any]] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    ui_nodes = []
    for order, n in enumerate(nodes):
        inputs = []
        for slot, (name, kind) in enumerate(NODE_SOCKETS[n.type]):
            src, src_slot = n.links[name]
            links.append([len(links) + 1, src, src_slot, n.id, slot, kind])
            out_links.setdefault((src, src_slot), []).append(len(links))
            inputs.append({"name": name, "type": kind, "link": len(links)})
        values: list[Any] = []
        for name, width in NODE_WIDGETS[n.type]:
            values.append(n.widgets[name])
            values += ["fixed"] * (width - 1)  # control_after_generate: keep the seed when queued
        ui_nodes.append({"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {},
                         "order": order, "mode": 0, "inputs": inputs, "outputs": [],
                         "properties": {"Node name for S&R": n.type}, "widgets_values": values})
    for ui_node in ui_nodes:
        ui_node["outputs"] = [{"name": name, "type": kind, "links": out_links.get((ui_node["id"], i), []),
                               "slot_index": i} for i, (name, kind) in enumerate(NODE_OUTPUTS[ui_node["type"]])]
    if notes:
        nid = max(n.id for n in nodes) + 1
        text = ("Made from a vqgan_core command-line run. Before queueing:\n- " + "\n- ".join(notes))
        ui_nodes.append({"id": nid, "type": "Note", "pos": [720, 470], "size": [420, 180], "flags": {},
                         "order": len(ui_nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                         "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}


# -- ComfyUI prompt -> CLI settings ----------------------------------------------------------------------------
_MISSING = object()


class _Reader:
    """Reads node inputs of an API prompt with errors that name the node and the input."""

    def __init__(self, api: dict[str, Any], source: str) -> None:
        self.api, self.source = api, source

    def where(self, nid: str, name: str | None = None) -> str:
        what = f"node {nid} ({self.api[nid].get('class_type')})"
        return f"{self.source}: {what}" + (f" input '{name}'" if name else "")

    def value(self, nid: str, name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        inputs = self.api[nid]["inputs"]
        if name not in inputs:
            if default is _MISSING:
                raise ValueError(f"{self.where(nid, name)} is missing")
            return default
        v = inputs[name]
        if isinstance(v, list):
            src = str(v[0]) if v else "?"
            raise ValueError(f"{self.where(nid, name)} comes from node {src} "
                             f"({self.api.get(src, {}).get('class_type', 'unknown')}); --from-png needs a value "
                             "typed into the node")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(v, kinds) and (bool in kinds or not isinstance(v, bool))
        if not ok or (isinstance(v, float) and not math.isfinite(v)):
            raise ValueError(f"{self.where(nid, name)} is {v!r}, not a {getattr(kind, '__name__', 'number')}")
        return v

    def source_of(self, nid: str, name: str, allowed: tuple[str, ...]) -> str:
        """The node id a linked input comes from (one of ``allowed`` classes)."""
        v = self.api[nid]["inputs"].get(name)
        if not (isinstance(v, list) and len(v) == 2 and str(v[0]) in self.api):
            raise ValueError(f"{self.where(nid, name)} is not connected to a node of this prompt")
        src = str(v[0])
        if self.api[src].get("class_type") not in allowed:
            raise ValueError(f"{self.where(nid, name)} comes from node {src} ({self.api[src].get('class_type')}); "
                             f"--from-png can reproduce it only from {' or '.join(allowed)}")
        return src

    def only(self, nid: str, known: set[str]) -> None:
        """No input outside ``known`` (a setting the CLI would silently drop)."""
        extra = sorted(set(self.api[nid]["inputs"]) - known)
        if extra:
            raise ValueError(f"{self.where(nid, extra[0])} has no command-line equivalent")


def api_from_chunk(text: str, source: str) -> dict[str, Any] | None:
    """The API-format prompt in a ``prompt`` text chunk, or None when the chunk is no such JSON (an older CLI
    PNG kept its prompt text there)."""
    try:
        api = json.loads(text)
    except ValueError:
        return None
    if not (isinstance(api, dict) and api and all(isinstance(k, str) and isinstance(v, dict)
                                                  and isinstance(v.get("class_type"), str)
                                                  and isinstance(v.get("inputs"), dict) for k, v in api.items())):
        return None
    return api


def settings_from_png(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a PNG: the ``vqgan_clip`` chunk the CLI writes, or, for an image ComfyUI saved from this
    pack's nodes, the settings its API prompt describes. A ValueError when it has neither."""
    text = png_chunks(path)
    if METADATA_KEY in text:
        return read_png_metadata(path, text)
    api = api_from_chunk(text["prompt"], str(path)) if "prompt" in text else None
    if api is not None:
        return settings_from_comfy_prompt(api, str(path))
    raise ValueError(f"{path} has no '{METADATA_KEY}' settings chunk nor a ComfyUI 'prompt' chunk (not written "
                     "by vqgan_core generate or by ComfyUI's Save Image?)")


def settings_from_comfy_prompt(api: dict[str, Any], source: str) -> dict[str, Any]:
    """``--from-png`` metadata for an image ComfyUI saved: ``{"config": settings, "comfy_node": id,
    "needs_flag": {"vqgan"|"clip": message}}``. ``needs_flag`` lists models that are files in ComfyUI's folders:
    the command line must name them itself (their paths are not in the image)."""
    r = _Reader(api, source)
    found = sorted((nid for nid, n in api.items() if n["class_type"] in (GENERATE, OPTIMIZE)), key=_num)
    if not found:
        raise ValueError(f"{source} was saved by ComfyUI, but its workflow has no VQGAN+CLIP Generate or Optimize "
                         "node: nothing for --from-png to reproduce")
    if len(found) > 1:
        raise ValueError(f"{source}: its ComfyUI workflow has {len(found)} VQGAN+CLIP Generate/Optimize nodes "
                         f"({', '.join(found)}); --from-png reproduces a workflow with one")
    nid = found[0]
    settings = _generate_settings(r, nid) if api[nid]["class_type"] == GENERATE else _optimize_settings(r, nid)
    needs: dict[str, str] = {}
    model = r.source_of(nid, "vqgan", ("VQGAN_Load", "VQGAN_Seamless"))
    if api[model]["class_type"] == "VQGAN_Seamless":
        settings["seamless"] = True
        model = r.source_of(model, "vqgan", ("VQGAN_Load",))
    r.only(model, {"vqgan_name"})
    settings["vqgan"], msg = _cli_vqgan(r.value(model, "vqgan_name", str), r.where(model, "vqgan_name"))
    if msg:
        needs["vqgan"] = msg
    guide = r.source_of(nid, "clip_guide", ("VQClip_LoadGuide",))
    r.only(guide, {"clip_name", "pretrained"})
    clip, msg = _cli_clip(r.value(guide, "clip_name", str), r.value(guide, "pretrained", str, "none"),
                          r.where(guide))
    settings["clip"] = [clip] if clip else []
    if msg:
        needs["clip"] = msg
    _check(r, nid, settings)
    log.info("%s: reproducing ComfyUI node %s (%s)", source, nid, api[nid]["class_type"])
    return {"config": settings, "comfy_node": nid, "needs_flag": needs}


_NODE_INPUT = {"optimizer": "optimizer", "cutout_method": "cutout_method", "augments": "augmentations",
               "lr_schedule": "lr_schedule", "method": "method", "image_losses": "image_losses"}


def _check(r: _Reader, nid: str, settings: dict[str, Any]) -> None:
    """The settings as GenerationConfig checks them, its message naming the node (and input where known)."""
    from ..engine.config import GenerationConfig
    from ..engine.optim_spec import SCHEDULERS
    from ..engine.optimizers import optimizer_names
    from ..latents.code_sampling import METHODS
    from ..views.cutouts import cutout_names

    menus = {"optimizer": optimizer_names(), "cutout_method": cutout_names(), "lr_schedule": SCHEDULERS.names(),
             "method": list(METHODS)}
    for key, names in menus.items():
        if _canonical(settings[key], names) is None:
            raise ValueError(f"{r.where(nid, _NODE_INPUT[key])} is {settings[key]!r}; valid: {', '.join(names)}")
    try:
        GenerationConfig.from_dict(settings)
    except (ValueError, TypeError, KeyError) as e:
        bad = next((k for k in _NODE_INPUT if k in str(e)), None)
        raise ValueError(f"{r.where(nid, _NODE_INPUT.get(bad) if bad else None)}: {e}") from None


def _num(nid: str) -> tuple[int, str]:
    return (int(nid), nid) if nid.isdigit() else (1 << 62, nid)


def _common(r: _Reader, nid: str) -> dict[str, Any]:
    """The optimiser widgets Generate and Optimize share, as GenerationConfig settings."""
    seed = r.value(nid, "seed", int)
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{r.where(nid, 'seed')} is {seed}, outside 0..{SEED_MAX}")
    out = {"steps": r.value(nid, "steps", int), "optimizer": r.value(nid, "optimizer", str),
           "lr": float(r.value(nid, "lr", (int, float))), "cutn": r.value(nid, "cutouts", int),
           "cutout_method": r.value(nid, "cutout_method", str), "augments": r.value(nid, "augmentations", str),
           "seed": seed, "lr_schedule": r.value(nid, "lr_schedule", str, "constant"),
           "change_prompts_every": r.value(nid, "change_prompts_every", int, 0),
           "story_fade": r.value(nid, "story_fade", int, 0), "method": r.value(nid, "method", str, "z_quantize")}
    if r.value(nid, "low_memory", bool, False):
        out["checkpoint_decoder"] = True
    for name in ("preview_every", "snapshot_every"):  # previews and extra frames only: checked, not used
        r.value(nid, name, int, 0)
    return out


def _generate_settings(r: _Reader, nid: str) -> dict[str, Any]:
    r.only(nid, {name for name, _ in NODE_WIDGETS[GENERATE]} | {"vqgan", "clip_guide"})
    prompt = r.value(nid, "prompt", str)
    if not prompt.strip():
        raise ValueError(f"{r.where(nid, 'prompt')} is empty")
    return {"prompts": prompt, "width": r.value(nid, "width", int), "height": r.value(nid, "height", int),
            "init": "random", **_common(r, nid)}


def _optimize_settings(r: _Reader, nid: str) -> dict[str, Any]:
    """Random VQ Latent -> Optimize <- CLIP Text Prompt: the same run as the CLI's (z_quantize, equal seeds)."""
    r.only(nid, {"latent", "vqgan", "clip_guide", "targets", "steps", "optimizer", "lr", "cutouts", "cutout_method",
                 "augmentations", "seed", "init_weight", "tv_weight", "continue_run", "preview_every",
                 "image_losses", "low_memory", "lr_schedule", "change_prompts_every", "story_fade", "method",
                 "snapshot_every"})
    out = _common(r, nid)
    if out["method"] != "z_quantize":
        raise ValueError(f"{r.where(nid, 'method')} is {out['method']!r}: from a Random VQ Latent that starts "
                         "otherwise than the command line's codebook sampling (use VQGAN+CLIP Generate)")
    latent = r.source_of(nid, "latent", ("VQGAN_RandomLatent",))
    r.only(latent, {"vqgan", "width", "height", "seed", "init", "batch_size"})
    if r.value(latent, "seed", int) != out["seed"]:
        raise ValueError(f"{r.where(latent, 'seed')} is {r.value(latent, 'seed', int)} but the Optimize node's "
                         f"seed is {out['seed']}: the command line uses one seed for both")
    init = r.value(latent, "init", str, "random")
    if init == "image":
        raise ValueError(f"{r.where(latent, 'init')} is 'image' (an image from ComfyUI's graph, not a file)")
    if r.api[latent]["inputs"].get("vqgan") != r.api[nid]["inputs"].get("vqgan"):
        raise ValueError(f"{r.where(latent, 'vqgan')} is not the VQGAN the Optimize node uses")
    log.info("%s: node %s's image comes from a VQGAN Decode node, which decodes in fp32; the command line decodes "
             "its result at the run's precision (bf16 on most GPUs and recent CPUs), so the last decode may differ "
             "by a level or two per pixel (the optimised latent is the same)", r.source, nid)
    targets = r.source_of(nid, "targets", ("VQClip_TextPrompt",))
    r.only(targets, {"text", "weight"})
    text, weight = r.value(targets, "text", str), float(r.value(targets, "weight", (int, float), 1.0))
    return {**out, "prompts": _weighted(text, weight, r.where(targets, "text")),
            "width": r.value(latent, "width", int), "height": r.value(latent, "height", int), "init": init,
            "batch_size": r.value(latent, "batch_size", int, 1),
            "init_weight": float(r.value(nid, "init_weight", (int, float), 0.0)),
            "tv_weight": float(r.value(nid, "tv_weight", (int, float), 0.0)),
            "image_losses": r.value(nid, "image_losses", str, "") or None}


def _weighted(text: str, weight: float, where: str) -> str:
    """CLIP Text Prompt's text with its weight applied to every prompt (as the node does)."""
    from ..objective.prompts import PromptSyntaxError, parse_prompt_set

    if weight == 1.0:
        return text
    try:
        sets = [parse_prompt_set(texts=part).texts for part in text.split("^")]
    except PromptSyntaxError as e:
        raise ValueError(f"{where}: {e}") from None
    return "^".join("|".join(f"{p.text}:{p.weight * weight!r}:{p.stop!r}" for p in s) for s in sets)


def _cli_vqgan(name: str, where: str) -> tuple[str | None, str]:
    """The CLI's ``--vqgan`` for a Load VQGAN choice, or a message asking for the flag."""
    from ..hub.known_models import KNOWN_VQGANS

    if name == DEMO:
        return DEMO, ""
    stem = name.rsplit(".", 1)[0] if name.endswith((".ckpt", ".safetensors")) else name
    if stem in KNOWN_VQGANS and not names_file_or_url(stem):
        return stem, ""
    return None, (f"{where} is {name!r}, a file in ComfyUI's models/vqgan folder: give --vqgan with its path")


def _cli_clip(name: str, pretrained: str, where: str) -> tuple[str | None, str]:
    """The CLI's ``--clip`` for a Load CLIP Guide choice, or a message asking for the flag."""
    if name == DEMO:
        return DEMO, ""
    if name.startswith("local:") or names_file_or_url(name):
        return None, f"{where} uses clip_name {name!r}, a folder in ComfyUI's models: give --clip with its path"
    if names_file_or_url(pretrained) or pretrained.startswith(("http://", "https://")):
        return None, (f"{where} uses pretrained {pretrained!r}, a weights file in ComfyUI's models: give --clip "
                      f"{name}:PATH")
    return f"{name}:{pretrained}", ""
