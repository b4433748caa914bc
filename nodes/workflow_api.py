"""Convert editor (UI-format) workflows to API-format prompts, using the server's /object_info.

The editor saves widget values as a flat list (``widgets_values``) in the order of the node's widget
inputs; links are separate. This is what ``app.graphToPrompt()`` does in the browser, re-done in
Python so tests can queue the shipped workflows without a browser. Pure Python, no ComfyUI imports.
"""

from __future__ import annotations

from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
ACTIVE_MODE = 0  # 2 = muted, 4 = bypassed


def input_specs(info: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, type, options) of every required+optional input, in the server's declared order."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {k: list(inputs.get(k, {})) for k in ("required", "optional")}
    specs = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            spec = inputs.get(group, {}).get(name)
            if spec is None:
                continue
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, kind, opts))
    return specs


def is_widget(kind: Any, opts: dict[str, Any]) -> bool:
    """True when an input shows as a widget in the editor (and so owns a widgets_values slot)."""
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def extra_widget_values(kind: Any, opts: dict[str, Any]) -> int:
    """Number of editor-only values saved after a widget (control_after_generate, image upload)."""
    extra = 0
    if opts.get("control_after_generate"):
        extra += 1
    if opts.get("image_upload") or opts.get("video_upload") or opts.get("audio_upload"):
        extra += 1
    return extra


def widget_names(info: dict[str, Any]) -> list[tuple[str, int]]:
    """(name, number of values it takes in widgets_values) for each widget input, in order."""
    return [(name, 1 + extra_widget_values(kind, opts))
            for name, kind, opts in input_specs(info) if is_widget(kind, opts)]


def ui_to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow dict to an API prompt dict.

    Raises:
        ValueError: a node type the server does not know, or widget values that do not match.
    """
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            links[link[0]] = (link[1], link[2])
    prompt: dict[str, Any] = {}
    for node in workflow.get("nodes", []):
        if node.get("mode", ACTIVE_MODE) != ACTIVE_MODE:
            continue
        ntype = node["type"]
        if ntype in ("Note", "MarkdownNote", "Reroute", "PrimitiveNode"):
            continue
        if ntype not in object_info:
            raise ValueError(f"Node {node['id']} has type '{ntype}', which this ComfyUI does not know "
                             "(missing custom node?).")
        info = object_info[ntype]
        api_inputs: dict[str, Any] = {}
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise ValueError(f"Node {node['id']} ({ntype}) stores widgets as a dict; not supported.")
        pos = 0
        optional = info.get("input", {}).get("optional", {})
        for name, width in widget_names(info):
            if pos >= len(values) and name in optional:
                continue  # saved before the widget existed: the editor (and the node) use its default
            if pos >= len(values):
                raise ValueError(f"Node {node['id']} ({ntype}) has {len(values)} widget values; "
                                 f"'{name}' is missing.")
            value = values[pos]
            api_inputs[name] = {"__value__": value} if isinstance(value, list) else value
            pos += width
        for slot in node.get("inputs", []):
            link_id = slot.get("link")
            if link_id is None:
                continue
            origin_id, origin_slot = links[link_id]
            api_inputs[slot["name"]] = [str(origin_id), origin_slot]
        title = node.get("title") or info.get("display_name") or ntype
        prompt[str(node["id"])] = {"class_type": ntype, "inputs": api_inputs, "_meta": {"title": title}}
    return prompt
