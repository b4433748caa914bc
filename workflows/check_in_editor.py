"""Load every shipped workflow into the real ComfyUI graph editor (headless Chromium) and check it.

For each workflow: ``app.loadGraphData``; no missing-node dialog and every node type registered in
the editor; ``app.graphToPrompt()`` (the editor's own UI->API conversion) equals
``nodes.workflow_api.ui_to_api``; no two node boxes (title bar included) overlap once the editor has
sized the nodes; a screenshot goes to ``docs/images/workflow_<name>.png``.
Needs ``playwright`` (Python) and a system Chromium (``/usr/bin/chromium``); never downloads a browser.

    python workflows/check_in_editor.py --server http://127.0.0.1:8188
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nodes.workflow_api import ui_to_api  # noqa: E402

log = logging.getLogger("check_in_editor")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


FIT_VIEW = """() => {
  const c = window.app.canvas, nodes = window.app.graph._nodes;
  let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
  for (const n of nodes) {
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  const W = c.canvas.clientWidth - 120, H = c.canvas.clientHeight - 140;
  const s = Math.min(W / (x1 - x0), H / (y1 - y0), 1.0);
  c.ds.scale = s; c.ds.offset = [-x0 + 70 / s, -y0 + 60 / s];
  c.setDirty(true, true);
}"""


NODE_BOXES = """() => window.app.graph._nodes.map(n => ({id: n.id, type: n.type,
  box: [n.pos[0], n.pos[1] - window.LiteGraph.NODE_TITLE_HEIGHT, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]}))"""


def _overlaps(nodes: list[dict]) -> list[str]:
    """Every pair of node boxes ([x0, y0, x1, y1], title bar included) that intersect."""
    found = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a["box"], b["box"]
            if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
                found.append(f"#{a['id']} {a['type']} {[round(v) for v in a['box']]} overlaps "
                             f"#{b['id']} {b['type']} {[round(v) for v in b['box']]}")
    return found


def _prepare_editor(page) -> None:  # noqa: ANN001
    """Best effort: no minimap, and full-detail drawing even when zoomed out (for readable screenshots)."""
    page.evaluate("""async () => { const s = window.app.extensionManager.setting;
      for (const [k, v] of [['Comfy.Minimap.Visible', false], ['LiteGraph.Canvas.MinFontSizeForLOD', 1]]) {
        try { await s.set(k, v); } catch (e) {} } }""")


def _normalise(prompt: dict) -> dict:
    """Drop titles; compare only class types and inputs."""
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def check(server: str, out_dir: Path, chromium: str, names: list[str] | None) -> list[str]:
    """Return a list of problems (empty = all good)."""
    from playwright.sync_api import sync_playwright

    with urllib.request.urlopen(server + "/object_info", timeout=60) as r:  # noqa: S310 - loopback
        object_info = json.loads(r.read())
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 950})
        page.goto(server, wait_until="networkidle")
        page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=60000)
        page.wait_for_timeout(1500)
        page.keyboard.press("Escape")
        _prepare_editor(page)
        for path in sorted(HERE.glob("*.json")):
            if names and path.stem not in names:
                continue
            wf = json.loads(path.read_text())
            page.evaluate("async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name); }",
                          [wf, path.stem])
            page.wait_for_timeout(800)
            missing_types = page.evaluate(
                "(types) => types.filter(t => !(t in window.LiteGraph.registered_node_types))",
                sorted({n["type"] for n in wf["nodes"]}))
            dialog = page.locator("text=/missing/i")
            visible = [dialog.nth(i).inner_text() for i in range(dialog.count()) if dialog.nth(i).is_visible()]
            if missing_types or visible:
                problems.append(f"{path.stem}: missing node types {missing_types}, dialog {visible}")
                page.keyboard.press("Escape")
            editor_prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
            ours = ui_to_api(wf, object_info)
            if _normalise(editor_prompt) != _normalise(ours):
                problems.append(f"{path.stem}: graphToPrompt differs from ui_to_api:\n"
                                f"editor {json.dumps(_normalise(editor_prompt), sort_keys=True)}\n"
                                f"ours   {json.dumps(_normalise(ours), sort_keys=True)}")
            problems += [f"{path.stem}: node {o}" for o in _overlaps(page.evaluate(NODE_BOXES))]
            page.evaluate(FIT_VIEW)
            page.wait_for_timeout(400)
            shot = out_dir / f"workflow_{path.stem}.png"
            page.screenshot(path=str(shot))
            log.info("%s: %d nodes, screenshot %s (%d KB)", path.stem, len(wf["nodes"]), shot.name,
                     shot.stat().st_size // 1024)
        problems += _check_small_values(page, object_info)
        browser.close()
    return problems


SMALL_VALUES = {"lr": 0.0005, "init_weight": 0.125, "tv_weight": 0.0012}


def _check_small_values(page, object_info: dict) -> list[str]:  # noqa: ANN001
    """Small FLOAT widget values (learning rates) must survive the editor's rounding."""
    wf = json.loads((HERE / "text_to_image.json").read_text())
    node = next(n for n in wf["nodes"] if n["type"] == "VQGAN_CLIPOptimize")
    from nodes.workflow_api import widget_names

    pos = 0
    for name, width in widget_names(object_info[node["type"]]):
        if name in SMALL_VALUES:
            node["widgets_values"][pos] = SMALL_VALUES[name]
        pos += width
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", wf)
    page.wait_for_timeout(500)
    editor = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    got = {k: editor[str(node["id"])]["inputs"][k] for k in SMALL_VALUES}
    log.info("small widget values after loading into the editor: %s", got)
    return [] if got == SMALL_VALUES else [f"editor rounded small values: sent {SMALL_VALUES}, got {got}"]


def main(argv: list[str] | None = None) -> int:
    """Check all workflows; exit 1 on any problem."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--out", default=str(HERE.parent / "docs" / "images"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("names", nargs="*", help="workflow names (default: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    problems = check(args.server.rstrip("/"), Path(args.out), args.chromium, args.names)
    for p in problems:
        log.error(p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
