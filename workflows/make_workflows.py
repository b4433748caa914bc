"""Build the shipped UI-format workflows from compact specs and a server's /object_info.

Why generated: the editor's format stores widget values as a positional list whose order (and the
extra ``control_after_generate`` / upload values) comes from the node definitions. Reading them from
a running ComfyUI keeps the files exactly as the editor would save them.

    python workflows/make_workflows.py --server http://127.0.0.1:8188      # or --object-info info.json
    python workflows/make_workflows.py --server http://127.0.0.1:8188 --only feed_forward_demo   # one file

Every workflow uses the shipped ``demo`` models at 64x64 with few steps, so it runs on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nodes.workflow_api import extra_widget_values, input_specs, is_widget  # noqa: E402

log = logging.getLogger("make_workflows")

Node = dict[str, Any]  # {"id", "type", "widgets": {name: value}, "links": {input: (src_id, slot)}, "title"?}

TRIANGLE = "vqclip_yellow_triangle.png"
CIRCLE = "vqclip_white_circle.png"
MOVING = "vqclip_moving_circle.png"  # 8-frame APNG: Load Image gives a batch of frames
FAST = {"cutouts": 16, "lr": 0.1, "preview_every": 10}


def _models() -> list[Node]:
    return [
        {"id": 1, "type": "VQGAN_Load", "widgets": {"vqgan_name": "demo"}},
        {"id": 2, "type": "VQClip_LoadGuide", "widgets": {"clip_name": "demo", "pretrained": "none"}},
    ]


def _opt(nid: int, latent: tuple[int, int], targets: tuple[int, int], steps: int, seed: int = 0, **w: Any) -> Node:
    return {"id": nid, "type": "VQGAN_CLIPOptimize",
            "widgets": {"steps": steps, "seed": seed, **FAST, **w},
            "links": {"latent": latent, "vqgan": (1, 0), "clip_guide": (2, 0), "targets": targets}}


def _text(nid: int, text: str, weight: float = 1.0) -> Node:
    return {"id": nid, "type": "VQClip_TextPrompt", "widgets": {"text": text, "weight": weight}}


def _random(nid: int, seed: int = 0, size: int = 64, batch: int = 1, **w: Any) -> Node:
    return {"id": nid, "type": "VQGAN_RandomLatent", "links": {"vqgan": (1, 0)},
            "widgets": {"width": size, "height": size, "seed": seed, "init": "random", "batch_size": batch, **w}}


def _decode(nid: int, latent: tuple[int, int]) -> Node:
    return {"id": nid, "type": "VQGAN_Decode", "links": {"latent": latent}}


def _save(nid: int, images: tuple[int, int], prefix: str) -> Node:
    return {"id": nid, "type": "SaveImage", "links": {"images": images}, "widgets": {"filename_prefix": prefix}}


def _save_webp(nid: int, images: tuple[int, int], prefix: str) -> Node:
    return {"id": nid, "type": "SaveAnimatedWEBP", "links": {"images": images},
            "widgets": {"filename_prefix": prefix, "fps": 8.0, "lossless": True, "quality": 80, "method": "default"}}


def _load_image(nid: int, name: str) -> Node:
    return {"id": nid, "type": "LoadImage", "widgets": {"image": name}}


def _clip_loss(nid: int, guide: tuple[int, int], targets: tuple[int, int], **w: Any) -> Node:
    return {"id": nid, "type": "VQClip_Loss", "links": {"clip_guide": guide, "targets": targets},
            "widgets": {"cutouts": 16, **w}}


def _steps(nid: int, latent: tuple[int, int], loss: tuple[int, int], opt: tuple[int, int], steps: int,
           seed: int = 0) -> Node:
    return {"id": nid, "type": "VQGAN_CLIPOptimizeSteps", "widgets": {"steps": steps, "seed": seed, "preview_every": 10},
            "links": {"vqgan": (1, 0), "latent": latent, "loss": loss, "optimizer": opt}}


def _optimizer(nid: int, **w: Any) -> Node:
    return {"id": nid, "type": "VQGAN_Optimizer", "widgets": {"optimizer": "adam", "lr": 0.1, **w}}


WORKFLOWS: dict[str, list[Node]] = {
    "text_to_image": [
        *_models(), _text(3, "a red circle on a blue background"), _random(4, seed=1),
        _opt(5, (4, 0), (3, 0), steps=60, seed=1), _decode(6, (5, 0)), _save(7, (6, 0), "vqclip/text_to_image"),
    ],
    "beginner_generate": [
        *_models(),
        {"id": 3, "type": "VQGAN_CLIPGenerate", "links": {"vqgan": (1, 0), "clip_guide": (2, 0)},
         "widgets": {"prompt": "a yellow triangle on a green background", "width": 64, "height": 64, "steps": 60,
                     "seed": 2, "cutouts": 16, "lr": 0.1, "preview_every": 10}},
        _save(4, (3, 0), "vqclip/generate"),
    ],
    "codebook_sampling": [
        *_models(),
        {"id": 3, "type": "VQGAN_CLIPGenerate", "links": {"vqgan": (1, 0), "clip_guide": (2, 0)},
         "widgets": {"prompt": "a yellow triangle on a green background", "width": 64, "height": 64, "steps": 60,
                     "seed": 2, "cutouts": 16, "optimizer": "adamw", "lr": 0.3, "preview_every": 10,
                     "method": "codebook_sampling"}},
        _save(4, (3, 0), "vqclip/codebook_sampling"),
    ],
    "seamless_texture": [
        *_models(), {"id": 3, "type": "VQGAN_Seamless", "links": {"vqgan": (1, 0)}},
        {"id": 4, "type": "VQGAN_CLIPGenerate", "links": {"vqgan": (3, 0), "clip_guide": (2, 0)},
         "widgets": {"prompt": "a yellow circle on a purple background", "width": 64, "height": 64, "steps": 60,
                     "seed": 4, "cutouts": 16, "lr": 0.1, "preview_every": 10}},
        _save(5, (4, 0), "vqclip/seamless"),
    ],
    "image_prompt_and_text": [
        *_models(), _load_image(3, CIRCLE),
        {"id": 4, "type": "VQClip_ImagePrompt", "links": {"image": (3, 0)}, "widgets": {"weight": 1.0, "stop": -1.0}},
        _text(5, "a white circle on a orange background"),
        {"id": 6, "type": "VQClip_CombineTargets", "links": {"targets_1": (4, 0), "targets_2": (5, 0)}},
        _random(7, seed=3), _opt(8, (7, 0), (6, 0), steps=60, seed=3), _decode(9, (8, 0)),
        _save(10, (9, 0), "vqclip/image_prompt"),
    ],
    "init_image_variation": [
        *_models(), _load_image(3, TRIANGLE),
        {"id": 4, "type": "VQGAN_Encode", "links": {"vqgan": (1, 0), "image": (3, 0)}},
        _text(5, "a yellow circle on a purple background"),
        _opt(6, (4, 0), (5, 0), steps=40, seed=4, init_weight=0.5), _decode(7, (6, 0)),
        _save(8, (7, 0), "vqclip/variation"),
    ],
    "story": [
        *_models(), _random(3, seed=5),
        _text(4, "a red square on a white background"), _opt(5, (3, 0), (4, 0), steps=40, seed=5),
        _decode(6, (5, 0)), _save(7, (6, 0), "vqclip/story_1"),
        _text(8, "a red circle on a white background"), _opt(9, (5, 0), (8, 0), steps=30, seed=5),
        _decode(10, (9, 0)), _save(11, (10, 0), "vqclip/story_2"),
        _text(12, "a red circle on a blue background"), _opt(13, (9, 0), (12, 0), steps=30, seed=5),
        _decode(14, (13, 0)), _save(15, (14, 0), "vqclip/story_3"),
    ],
    "coarse_to_fine": [
        *_models(), _text(3, "a cyan triangle on a purple background"), _random(4, seed=6, size=32),
        _opt(5, (4, 0), (3, 0), steps=40, seed=6),
        {"id": 6, "type": "VQGAN_ResizeLatent", "links": {"latent": (5, 0)}, "widgets": {"scale": 2.0, "mode": "nearest"}},
        _opt(7, (6, 0), (3, 0), steps=30, seed=6), _decode(8, (7, 0)), _save(9, (8, 0), "vqclip/coarse_to_fine"),
    ],
    "codebook_edit": [
        {"id": 1, "type": "VQGAN_Load", "widgets": {"vqgan_name": "demo"}},
        _load_image(2, TRIANGLE),
        {"id": 3, "type": "VQGAN_Encode", "links": {"vqgan": (1, 0), "image": (2, 0)}},
        {"id": 4, "type": "VQGAN_CodebookLookup", "links": {"latent": (3, 0)}},
        {"id": 5, "type": "PreviewImage", "links": {"images": (4, 1)}},
        {"id": 6, "type": "VQGAN_CodebookEdit", "links": {"latent": (3, 0)},
         "widgets": {"codes": "7, 8", "pattern": "tile", "x": 0, "y": 0, "width": 32, "height": 64, "seed": 0}},
        _decode(7, (6, 0)), _save(8, (7, 0), "vqclip/codebook_edit"),
        {"id": 9, "type": "VQGAN_CodesToLatent", "links": {"codes": (4, 0)}},
        _decode(10, (9, 0)), _save(11, (10, 0), "vqclip/codebook_roundtrip"),
    ],
    "zoom_animation": [
        *_models(), _text(3, "a red circle on a blue background"), _random(4, seed=8),
        _opt(5, (4, 0), (3, 0), steps=60, seed=8),
        {"id": 6, "type": "VQGAN_CLIPZoomAnimation",
         "links": {"latent": (5, 0), "vqgan": (1, 0), "clip_guide": (2, 0), "targets": (3, 0)},
         "widgets": {"frames": 12, "zoom": 1.05, "rotate": 3.0, "steps_per_frame": 5, "seed": 8, **FAST}},
        _save_webp(7, (6, 0), "vqclip/zoom"),
    ],
    "morph": [
        *_models(), _text(3, "a red circle on a blue background"), _text(4, "a yellow square on a green background"),
        _random(5, seed=5), _opt(6, (5, 0), (3, 0), steps=60, seed=5),
        _random(7, seed=5), _opt(8, (7, 0), (4, 0), steps=60, seed=5),
        {"id": 9, "type": "VQGAN_InterpolateLatents", "links": {"latent_a": (6, 0), "latent_b": (8, 0)},
         "widgets": {"frames": 12, "mode": "slerp"}},
        _decode(10, (9, 0)),
        _save_webp(11, (10, 0), "vqclip/morph"),
    ],
    "restyle_video": [
        *_models(), _load_image(3, MOVING), _text(4, "a yellow circle on a purple background"),
        {"id": 5, "type": "VQGAN_CLIPRestyleFrames",
         "links": {"frames": (3, 0), "vqgan": (1, 0), "clip_guide": (2, 0), "targets": (4, 0)},
         "widgets": {"first_steps": 40, "steps_per_frame": 10, "blend": 0.3, "seed": 1, "init_weight": 0.0, **FAST}},
        _save_webp(6, (5, 0), "vqclip/restyle"),
    ],
    "regional_prompts": [
        *_models(), _text(3, "a yellow circle on a green background"),
        {"id": 4, "type": "SolidMask", "widgets": {"value": 0.0, "width": 64, "height": 64}},
        {"id": 5, "type": "SolidMask", "widgets": {"value": 1.0, "width": 32, "height": 64}},
        {"id": 6, "type": "MaskComposite", "links": {"destination": (4, 0), "source": (5, 0)},
         "widgets": {"x": 0, "y": 0, "operation": "add"}},
        _text(7, "a purple circle on a purple background"),
        {"id": 8, "type": "VQClip_RegionTargets", "links": {"targets": (7, 0), "mask": (6, 0)}},
        {"id": 9, "type": "VQClip_CombineTargets", "links": {"targets_1": (3, 0), "targets_2": (8, 0)}},
        _random(10, seed=1), _opt(11, (10, 0), (9, 0), steps=80, seed=1), _decode(12, (11, 0)),
        _save(13, (12, 0), "vqclip/regional"),
    ],
    "inpaint": [
        *_models(), _load_image(3, TRIANGLE),
        {"id": 4, "type": "VQGAN_Encode", "links": {"vqgan": (1, 0), "image": (3, 0)}},
        {"id": 5, "type": "SolidMask", "widgets": {"value": 0.0, "width": 64, "height": 64}},
        {"id": 6, "type": "SolidMask", "widgets": {"value": 1.0, "width": 32, "height": 64}},
        {"id": 7, "type": "MaskComposite", "links": {"destination": (5, 0), "source": (6, 0)},
         "widgets": {"x": 32, "y": 0, "operation": "add"}},
        _text(8, "a white circle on a red background"),
        {**_opt(9, (4, 0), (8, 0), steps=60, seed=1), "links": {"latent": (4, 0), "vqgan": (1, 0), "clip_guide": (2, 0),
                                                               "targets": (8, 0), "mask": (7, 0)}},
        _decode(10, (9, 0)), _save(11, (10, 0), "vqclip/inpaint"),
    ],
    "blocks_two_guides": [  # composable blocks: each guide its own prompt, TV + an image loss, 3 chained steps
        *_models(), {"id": 3, "type": "VQClip_LoadGuide", "widgets": {"clip_name": "demo", "pretrained": "none"}},
        _text(4, "a red circle"), _text(5, "a blue background"),
        _clip_loss(6, (2, 0), (4, 0)), _clip_loss(7, (3, 0), (5, 0), cutouts=8, cut_pow=1.5),
        {"id": 8, "type": "VQGAN_TVLoss", "widgets": {"weight": 0.1}},
        {"id": 9, "type": "VQGAN_ImageLoss", "widgets": {"name": "saturation", "weight": 0.2}},
        {"id": 10, "type": "VQGAN_CombineLosses",
         "links": {"loss_1": (6, 0), "loss_2": (7, 0), "loss_3": (8, 0), "loss_4": (9, 0)}},
        _optimizer(11), _random(12, seed=1),
        _steps(13, (12, 0), (10, 0), (11, 0), 20, seed=1), _steps(14, (13, 0), (10, 0), (11, 0), 20, seed=1),
        _steps(15, (14, 0), (10, 0), (11, 0), 20, seed=1),
        _decode(16, (15, 0)), _save(17, (16, 0), "vqclip/blocks_two_guides"),
        {"id": 18, "type": "PreviewImage", "links": {"images": (15, 1)}},
    ],
    "blocks_story": [  # story mode from blocks: the pace on the targets, chained steps counting on
        *_models(),
        _text(3, "a red square on a white background^a red circle on a white background^"
                 "a red circle on a blue background"),
        {"id": 4, "type": "VQClip_StoryPace", "links": {"targets": (3, 0)},
         "widgets": {"change_prompts_every": 30, "story_fade": 10}},
        _clip_loss(5, (2, 0), (4, 0)), {"id": 6, "type": "VQGAN_TVLoss", "widgets": {"weight": 0.05}},
        {"id": 7, "type": "VQGAN_CombineLosses", "links": {"loss_1": (5, 0), "loss_2": (6, 0)}},
        _optimizer(8), _random(9, seed=5),
        _steps(10, (9, 0), (7, 0), (8, 0), 30, seed=5), _steps(11, (10, 0), (7, 0), (8, 0), 30, seed=5),
        _steps(12, (11, 0), (7, 0), (8, 0), 30, seed=5),
        _decode(13, (10, 0)), _save(14, (13, 0), "vqclip/blocks_story_1"),
        _decode(15, (11, 0)), _save(16, (15, 0), "vqclip/blocks_story_2"),
        _decode(17, (12, 0)), _save(18, (17, 0), "vqclip/blocks_story_3"),
        {"id": 19, "type": "PreviewImage", "links": {"images": (12, 1)}},
    ],
    "feed_forward_demo": [  # one pass of the feed-forward model, decoded; the same latent refined by Optimize
        *_models(), {"id": 3, "type": "VQGAN_LoadFeedForward", "widgets": {"feed_forward_name": "demo"}},
        _text(4, "a red circle on a blue background"),
        {"id": 5, "type": "VQGAN_FeedForwardLatent", "widgets": {"text": "", "seed": 1, "batch_size": 1},
         "links": {"vqgan": (1, 0), "clip_guide": (2, 0), "feed_forward": (3, 0), "targets": (4, 0)}},
        _decode(6, (5, 0)), _save(7, (6, 0), "vqclip/feed_forward"),
        _opt(8, (5, 0), (4, 0), steps=20, seed=1), _decode(9, (8, 0)), _save(10, (9, 0), "vqclip/feed_forward_refined"),
    ],
    "seed_batch_ranked": [
        *_models(), _text(3, "a green triangle on a white background"), _random(4, seed=7, batch=4),
        _opt(5, (4, 0), (3, 0), steps=40, seed=7), _decode(6, (5, 0)),
        {"id": 7, "type": "VQClip_Score", "links": {"clip_guide": (2, 0), "targets": (3, 0), "images": (6, 0)}},
        _save(8, (7, 0), "vqclip/ranked"), _save(9, (7, 1), "vqclip/best"),
    ],
}


TITLE, BADGE = 30, 22  # the editor draws a title bar above a node's box, and its pack's label above that
GAP = TITLE + BADGE + 20  # from one node's bottom to the next node's box in a column


def node_height(info: dict[str, Any], widgets: list[Any]) -> int:
    """The height the editor gives a node (its minimum, measured in ComfyUI 0.3.64's editor): 20 px a socket
    row, 24 px a widget (a multiline text box about 54), plus margins."""
    specs = input_specs(info)
    sockets = sum(not is_widget(kind, opts) for _, kind, opts in specs)
    multiline = sum(bool(opts.get("multiline")) for _, kind, opts in specs if is_widget(kind, opts))
    rows = 24 * len(widgets) + 30 * multiline + (8 if widgets else 0)
    return 6 + 20 * max(sockets, len(info["output"])) + rows


def _depths(nodes: list[Node]) -> dict[int, int]:
    depth: dict[int, int] = {}

    def d(nid: int) -> int:
        if nid not in depth:
            node = next(n for n in nodes if n["id"] == nid)
            depth[nid] = 1 + max((d(src) for src, _ in node.get("links", {}).values()), default=-1)
        return depth[nid]

    for n in nodes:
        d(n["id"])
    return depth


def build(nodes: list[Node], object_info: dict[str, Any]) -> dict[str, Any]:
    """One UI-format workflow (what the editor saves) from a node spec list."""
    depth = _depths(nodes)
    order = sorted(nodes, key=lambda n: (depth[n["id"]], n["id"]))
    rows: dict[int, int] = {}
    links: list[list[Any]] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    ui_nodes = []
    for n in nodes:
        for _dst_name, (src, slot) in n.get("links", {}).items():
            out_links.setdefault((src, slot), [])
    link_id = 0
    pending: dict[int, list[dict[str, Any]]] = {}
    for n in nodes:
        info = object_info[n["type"]]
        inputs = []
        widgets: list[Any] = []
        given = dict(n.get("widgets", {}))
        for dst_slot_name, kind, opts in input_specs(info):
            linked = dst_slot_name in n.get("links", {})
            if is_widget(kind, opts):
                value = given.pop(dst_slot_name, opts.get("default"))
                if value is None:
                    value = kind[0] if isinstance(kind, list) else opts.get("options", [None])[0]
                widgets.append(value)
                if opts.get("control_after_generate"):
                    widgets.append("fixed")
                if extra_widget_values(kind, {k: v for k, v in opts.items() if k != "control_after_generate"}):
                    widgets.append("image")
                if not linked:
                    continue
            type_name = "COMBO" if isinstance(kind, list) else kind
            entry: dict[str, Any] = {"name": dst_slot_name, "type": type_name, "link": None}
            if is_widget(kind, opts):
                entry["widget"] = {"name": dst_slot_name}
            if linked:
                link_id += 1
                src, slot = n["links"][dst_slot_name]
                src_type = object_info[next(m["type"] for m in nodes if m["id"] == src)]["output"][slot]
                links.append([link_id, src, slot, n["id"], len(inputs), src_type])
                out_links[(src, slot)].append(link_id)
                entry["link"] = link_id
            inputs.append(entry)
        if given:
            raise ValueError(f"{n['type']}: unknown widgets {sorted(given)}")
        pending[n["id"]] = inputs
        col = depth[n["id"]]
        row = rows.get(col, 0)
        height = node_height(info, widgets) + (260 if n["type"] == "LoadImage" else 0)
        rows[col] = row + height + GAP
        if "at" in n:
            col, row = n["at"]
        ui_nodes.append({
            "id": n["id"], "type": n["type"], "pos": [40 + col * 340, 40 + row], "size": [300, height],
            "flags": {}, "order": order.index(n), "mode": 0, "inputs": inputs, "outputs": [],
            "properties": {"Node name for S&R": n["type"]}, "widgets_values": widgets,
        })
    for ui_node in ui_nodes:
        info = object_info[ui_node["type"]]
        ui_node["outputs"] = [
            {"name": info["output_name"][i], "type": t, "links": out_links.get((ui_node["id"], i), []),
             "slot_index": i}
            for i, t in enumerate(info["output"])
        ]
    return {
        "last_node_id": max(n["id"] for n in nodes), "last_link_id": link_id, "nodes": ui_nodes,
        "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


def load_object_info(server: str | None, path: str | None) -> dict[str, Any]:
    """/object_info from a running server (loopback) or a saved JSON file."""
    if path:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    with urllib.request.urlopen(server.rstrip("/") + "/object_info", timeout=60) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> int:
    """Write every workflow (or those named with ``--only``) to workflows/<name>.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--object-info", default=None, help="saved /object_info JSON instead of a server")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME", choices=sorted(WORKFLOWS),
                    help="write only these workflows (names without .json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    info = load_object_info(args.server, args.object_info)
    for name, nodes in WORKFLOWS.items():
        if args.only and name not in args.only:
            continue
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(build(nodes, info), indent=1) + "\n", encoding="utf-8")
        log.info("wrote %s", path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
