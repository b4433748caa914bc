"""The feed-forward demo network against the default optimisation: quality (pixel judge), time, refinement, held-out.

Every mode runs the offline-demo grid of ``bench/demo_quality.py`` (every colour x shape, fixed background
pairing, ``--seeds``) with the demo preset, judged by the same pixel criteria:

* ``optimiser``: the default run (the preset's steps from a random start);
* ``one pass``: ``--feed-forward demo --steps 0`` (the network's image, decoded);
* ``ff + N``: N optimiser steps from the network's latent (``--refine``).

Then the captions the network never trained on (its config's ``holdout`` phrases, e.g. "red square"): the
one-pass grid over every background for those colour/shape pairs against the same-shape pairs it did see,
and the CLIP loss of the one-pass images for seen and held-out captions. Seconds per image are in process
with the models loaded (``--threads``), generation only.

    python bench/bench_feed_forward.py                      # ~15-25 min on 2 cores
    python bench/bench_feed_forward.py --feed-forward runs/ff_demo/feed_forward.safetensors --refine 10 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from demo_quality import CRITERIA, contact_sheet, grid, run_cell, summarise  # noqa: E402

from training.captions import held_out  # noqa: E402
from training.shapes import PALETTE, SHAPES  # noqa: E402


def run_mode(name: str, vq, clip, cells: list, overrides: dict, out: Path, seeds: list[int]) -> dict:  # noqa: ANN001
    folder = out / name.replace(" ", "_").replace("+", "plus")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\n== {name}: {overrides}", flush=True)
    probe = clip.guides[-1][0]  # the model asked for its shape pick
    run_cell(vq, clip, cells[0], overrides, folder, log=False, probe=probe)  # warm-up: first-call costs are not per image
    rows = [run_cell(vq, clip, c, overrides, folder, log=False, probe=probe) for c in cells]
    table = summarise(rows, show=False)
    if {r["fg"] for r in rows} == set(PALETTE) and len(rows) == len(grid(seeds)):
        contact_sheet(rows, folder / "sheet.png", seeds)
    secs = [r["seconds"] for r in rows]
    print(" ".join(f"{c} {table['all'][c]:.0%}" for c in (*CRITERIA, "colour_swap"))
          + f" | {np.mean(secs):.3f} s/image", flush=True)
    return {"table": table, "seconds_mean": float(np.mean(secs)), "rows": rows}


def clip_losses(net, vq, clip, captions: list[str]) -> list[float]:  # noqa: ANN001
    """CLIP spherical distance of each one-pass image (whole image, no augmentation) to its caption."""
    import torch

    from vqgan_core import decode01, feed_forward_latent
    from vqgan_core.objective.losses import spherical_dist

    with torch.no_grad():
        img = decode01(vq, feed_forward_latent(net, vq, clip, captions, seed=0))  # the start is made of codes
        return spherical_dist(clip.encode_image(img), clip.encode_text(captions)).tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feed-forward", default="demo")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--refine", type=int, nargs="*", default=[10, 30, 60], help="refinement step counts to try")
    p.add_argument("--clip", action="append", help="guide(s) of the optimiser and the refinement (default: demo, the "
                   "demo pair; the README's table used the colour CLIP alone: vqgan_core/hub/assets/demo/clip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench_feed_forward")
    p.add_argument("--skip-optimiser", action="store_true", help="reuse nothing; just leave the optimiser out")
    a = p.parse_args(argv)

    import torch

    from vqgan_core import load_feed_forward, load_vqgan
    from vqgan_core.clip.guide import load_clip_ensemble
    from vqgan_core.feedforward.infer import pick_guide
    from vqgan_core.hub import demo

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    vq, clip = load_vqgan("demo"), load_clip_ensemble(a.clip or ["demo"])
    t = time.perf_counter()
    net = load_feed_forward(a.feed_forward, vqgan=vq)
    load_s = time.perf_counter() - t
    phrases = list(net.config.extra.get("holdout", []))
    print(f"feed-forward {a.feed_forward}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters, "
          f"held-out phrases {phrases}, loaded in {load_s:.2f} s", flush=True)

    cells = grid(a.seeds)
    ff = {"feed_forward": a.feed_forward}
    modes: dict[str, dict] = {}
    if not a.skip_optimiser:
        modes["optimiser"] = run_mode("optimiser", vq, clip, cells, {}, out, a.seeds)
    modes["one pass"] = run_mode("one pass", vq, clip, cells, {**ff, "steps": 0}, out, a.seeds)
    for n in a.refine:
        modes[f"ff + {n}"] = run_mode(f"ff + {n}", vq, clip, cells, {**ff, "steps": n}, out, a.seeds)

    # held-out colour/shape pairs: every background, one pass, against the seen pairs of the same shapes
    held_cells = [(fg, shape, bg, s) for s in a.seeds for fg in PALETTE for shape in SHAPES for bg in PALETTE
                  if bg != fg and held_out(f"a {fg} {shape} on a {bg} background", phrases)]
    held = run_mode("one pass, held-out pairs", vq, clip, held_cells, {**ff, "steps": 0}, out, a.seeds) \
        if held_cells else None
    one = modes["one pass"]["rows"]
    seen_rows = [r for r in one if not held_out(f"a {r['fg']} {r['shape']}", phrases)]
    seen = summarise(seen_rows, show=False)["all"] if seen_rows else None
    seen_caps = [f"a {r['fg']} {r['shape']} on a {r['bg']} background" for r in seen_rows]
    held_caps = [f"a {c[0]} {c[1]} on a {c[2]} background" for c in held_cells]
    text_clip = pick_guide(net, [g for g, _ in clip.guides])  # the CLIP whose text embeddings the network reads
    loss_seen = float(np.mean(clip_losses(net, vq, text_clip, seen_caps))) if seen_caps else float("nan")
    loss_held = float(np.mean(clip_losses(net, vq, text_clip, held_caps))) if held_caps else float("nan")

    print(f"\n{'mode':26s}" + "".join(f"{c:>12s}" for c in (*CRITERIA, "colour_swap")) + f"{'s/image':>10s}")
    for name, m in modes.items():
        row = m["table"]["all"]
        print(f"{name:26s}" + "".join(f"{row[c]:12.0%}" for c in (*CRITERIA, "colour_swap"))
              + f"{m['seconds_mean']:10.3f}")
    if seen is not None:
        print(f"{'one pass, seen pairs':26s}" + "".join(f"{seen[c]:12.0%}" for c in CRITERIA))
    if held is not None:
        row = held["table"]["all"]
        print(f"{'one pass, held-out pairs':26s}" + "".join(f"{row[c]:12.0%}" for c in CRITERIA)
              + f"{'':12s}{held['seconds_mean']:10.3f}")
    print(f"CLIP loss of one-pass images (whole image): seen captions {loss_seen:.4f} ({len(seen_caps)}), "
          f"held-out {loss_held:.4f} ({len(held_caps)})")
    if "optimiser" in modes:
        opt = modes["optimiser"]
        speed = opt["seconds_mean"] / modes["one pass"]["seconds_mean"]
        print(f"one pass is {speed:.0f}x faster per image than the default optimisation "
              f"({modes['one pass']['seconds_mean'] * 1000:.0f} ms vs {opt['seconds_mean']:.1f} s)")
        print("refinement steps from the one-pass start that reach the optimiser's rate, per criterion:")
        for c in (*CRITERIA, "colour_swap"):
            target = opt["table"]["all"][c]
            reached = [n for n in [0, *a.refine]
                       if modes["one pass" if n == 0 else f"ff + {n}"]["table"]["all"][c] >= target]
            print(f"  {c:12s} optimiser {target:4.0%}: {min(reached) if reached else 'none of ' + str(a.refine)}")
    (out / "results.json").write_text(json.dumps({
        "feed_forward": a.feed_forward, "seeds": a.seeds, "holdout": phrases, "load_seconds": load_s,
        "modes": {k: {"table": v["table"], "seconds_mean": v["seconds_mean"]} for k, v in modes.items()},
        "one_pass_seen": seen, "one_pass_held_out": held and held["table"], "clip_loss_seen": loss_seen,
        "clip_loss_held_out": loss_held, "preset": demo.preset()}, indent=1))
    print(f"wrote {out / 'results.json'} and a contact sheet per mode")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
