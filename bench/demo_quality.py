"""Does the offline demo draw what it is asked for? A fixed prompt grid judged by pixels, not by CLIP.

The grid: every palette colour x every shape as the foreground, each with a background colour from a fixed
pairing per shape (so every "X on Y" run has its "Y on X" partner: the colour-swap test), 2+ seeds; each
run is the default ``python -m vqgan_core generate "a X SHAPE on a Y background" --seed S`` (the demo
preset, models loaded once). Every image is judged by :mod:`training.shape_judge` (nearest palette colour per
pixel): background right, foreground >= 5 %, one dominant blob, shape recognised, all four, plus the colour swap.

Printed first: the judge's own accuracy on real shapes-world drawings (>= 98 % or the numbers are not
trusted), then what the CLIP thinks of real drawings (3-way shape accuracy, and how its pick follows the
shape's area), then the grid table; writes OUT/sheet.png (contact sheet: green frame = all four passed),
OUT/results.json and the images. Seconds per image: in-process generation, plus one timed CLI run (imports
and model load included).

    python bench/demo_quality.py                          # shipped demo models, seeds 0 1 (~15 min, 2 cores)
    python bench/demo_quality.py --clip runs/clip_try --seeds 0 1 2 --out runs/dq_try
    python bench/demo_quality.py --clip demo --clip runs/clip_rn --out runs/dq_ensemble   # a CLIP ensemble
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.shape_judge import MIN_BLOB, MIN_FG, MIN_IOU, colour_swap, judge  # noqa: E402
from training.shapes import PALETTE, SHAPES, render, sample_spec  # noqa: E402

#: Background pairing per shape: each colour is paired with one other (a perfect matching), a different
#: matching per shape, so 12 distinct colour pairs appear, each in both orders.
PAIRS: dict[str, list[tuple[str, str]]] = {
    "circle": [("red", "blue"), ("orange", "cyan"), ("yellow", "purple"), ("green", "white")],
    "square": [("red", "green"), ("orange", "purple"), ("yellow", "cyan"), ("blue", "white")],
    "triangle": [("red", "yellow"), ("orange", "white"), ("green", "purple"), ("cyan", "blue")],
}
CRITERIA = ("bg_right", "fg_present", "one_blob", "shape_right", "all_four")


def grid(seeds: list[int]) -> list[tuple[str, str, str, int]]:
    """(fg, shape, bg, seed) for every colour as foreground x every shape x every seed."""
    out = []
    for seed in seeds:
        for shape in SHAPES:
            bg_of = dict(PAIRS[shape]) | {b: a for a, b in PAIRS[shape]}
            out += [(fg, shape, bg_of[fg], seed) for fg in PALETTE]
    return out


def real_images(n: int, seed: int, law: str) -> tuple[list[np.ndarray], list]:
    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng, 64, law) for _ in range(n)]
    return [np.asarray(render(s, 64, rng)) for s in specs], specs


def judge_accuracy(n: int) -> dict:
    """The judge on real drawings (held-out seed): shape accuracy and all-four rate, per size law."""
    res = {}
    for law in ("area", "radius"):
        imgs, specs = real_images(n, 12345, law)
        v = [judge(im, s.fg, s.shape, s.bg) for im, s in zip(imgs, specs, strict=True)]
        res[law] = {"shape": float(np.mean([x.shape_right for x in v])),
                    "all_four": float(np.mean([x.all_four for x in v])),
                    "bg_right": float(np.mean([x.bg_right for x in v]))}
    return res


def clip_shape_probe(clip, imgs: list[np.ndarray], truth: list[tuple[str, str, str]]) -> dict:  # noqa: ANN001
    """3-way shape choice of the CLIP with the true colours in the caption; mean fg share by its pick."""
    import torch
    import torch.nn.functional as F

    from training.shape_judge import NAMES, palette_labels

    picks = []
    with torch.no_grad():
        for im, (fg, _, bg) in zip(imgs, truth, strict=True):
            t = F.normalize(clip.encode_text([f"a {fg} {s} on a {bg} background" for s in SHAPES]), dim=-1)
            x = torch.tensor(np.array(im)).permute(2, 0, 1)[None].float() / 255
            f = F.normalize(clip.encode_image(x), dim=-1)
            picks.append(SHAPES[int((f @ t.T).argmax())])
    area = [float((palette_labels(im) == NAMES.index(fg)).mean()) for im, (fg, _, _) in zip(imgs, truth, strict=True)]
    acc = float(np.mean([p == s for p, (_, s, _) in zip(picks, truth, strict=True)]))
    by_pick = {s: round(float(np.mean([a for a, p in zip(area, picks, strict=True) if p == s])), 3)
               if s in picks else None for s in SHAPES}
    by_truth = {s: round(float(np.mean([a for a, (_, t, _) in zip(area, truth, strict=True) if t == s])), 3)
                for s in SHAPES}
    return {"shape_acc": round(acc, 3), "fg_share_by_pick": by_pick, "fg_share_by_truth": by_truth,
            "picks": picks}


def contact_sheet(rows: list[dict], path: Path, seeds: list[int]) -> None:
    from PIL import Image, ImageDraw

    cell, pad = 128, 4
    cols = len(PALETTE)
    nrows = len(SHAPES) * len(seeds)
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, nrows * (cell + 14 + pad) + pad), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for r in rows:
        i = seeds.index(r["seed"]) * len(SHAPES) + SHAPES.index(r["shape"])
        j = list(PALETTE).index(r["fg"])
        x, y = pad + j * (cell + pad), pad + i * (cell + 14 + pad)
        img = Image.open(r["file"]).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
        sheet.paste(img, (x, y))
        ok = r["all_four"]
        draw.rectangle([x - 2, y - 2, x + cell + 1, y + cell + 1], outline=(40, 200, 40) if ok else (220, 40, 40))
        draw.text((x, y + cell + 1), f"{r['fg']} {r['shape'][:3]}/{r['bg']} s{r['seed']}: {r['shape_seen'][:3]}",
                  fill=(230, 230, 230))
    sheet.save(path)


def run_cell(vq, clip, cell: tuple[str, str, str, int], overrides: dict, out: Path, log: bool = True,  # noqa: ANN001
             probe=None) -> dict:  # noqa: ANN001
    """Generate one grid cell with the demo preset (plus ``overrides``), save it under ``out`` and judge it.

    ``clip`` guides (a guide or an ensemble); ``probe`` (default ``clip``) is the single guide asked for its shape pick.
    """
    from PIL import Image

    from vqgan_core.engine.config import GenerationConfig
    from vqgan_core.engine.loop import run_generation
    from vqgan_core.hub import demo

    fg, shape, bg, seed = cell
    prompt = f"a {fg} {shape} on a {bg} background"
    cfg = GenerationConfig.from_dict({**demo.preset(), **overrides, "prompts": prompt, "seed": seed})
    t = time.perf_counter()
    res = run_generation(vq, clip, cfg)
    secs = time.perf_counter() - t
    img = (res.images[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    f = out / f"{fg}_{shape}_{bg}_s{seed}.png"
    Image.fromarray(img).save(f)
    v = judge(img, fg, shape, bg)
    pick = clip_shape_probe(probe or clip, [img], [(fg, shape, bg)])["picks"][0]
    if log:
        print(f"{prompt:42s} s{seed}: bg {v.bg_share:.0%} fg {v.fg_share:.0%} blob {v.blob_share:.0%} "
              f"seen {v.shape_seen} ({v.iou:.2f}) clip {pick} {'PASS' if v.all_four else 'fail'} {secs:.2f}s",
              flush=True)
    return {"fg": fg, "shape": shape, "bg": bg, "seed": seed, "seconds": round(secs, 3), "file": str(f),
            "clip_pick": pick, **v.as_dict()}


def summarise(rows: list[dict], show: bool = True) -> dict:
    """Rates of every criterion per shape and overall, the colour swap over the pairs present in ``rows``."""
    from training.shape_judge import Verdict

    def verdict(d: dict) -> Verdict:
        return Verdict(**{k: d[k] for k in Verdict.__dataclass_fields__})

    by_key = {(r["fg"], r["shape"], r["bg"], r["seed"]): r for r in rows}
    swaps = []
    for r in rows:
        o = by_key.get((r["bg"], r["shape"], r["fg"], r["seed"]))
        if o is not None and r["fg"] < r["bg"]:
            swaps.append({"shape": r["shape"], "ok": colour_swap(verdict(r), verdict(o))})

    def rate(sel: list[dict], k: str) -> float:
        return float(np.mean([r[k] for r in sel])) if sel else float("nan")

    table = {}
    if show:
        print(f"\n{'':10s}" + "".join(f"{c:>12s}" for c in (*CRITERIA, "colour_swap", "clip=seen")))
    for s in (*SHAPES, "all"):
        sel = [r for r in rows if s in ("all", r["shape"])]
        if not sel:
            continue
        ssel = [w for w in swaps if s in ("all", w["shape"])]
        row = {c: rate(sel, c) for c in CRITERIA}
        row["colour_swap"] = rate(ssel, "ok")
        row["clip_agrees_with_judge"] = float(np.mean([r["clip_pick"] == r["shape_seen"] for r in sel]))
        row["clip_pick_is_prompt"] = float(np.mean([r["clip_pick"] == r["shape"] for r in sel]))
        table[s] = row
        if show:
            print(f"{s:10s}" + "".join(f"{row[c]:12.0%}" for c in (*CRITERIA, "colour_swap", "clip_agrees_with_judge")))
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vqgan", default="demo")
    p.add_argument("--clip", action="append", help="'demo' (the demo's pair), 'demo-robust', or an open_clip folder "
                   "(e.g. a candidate demo CLIP); repeat for an ensemble (the last model is asked for its shape "
                   "pick); default: demo")
    p.add_argument("--clip-weight", type=float, action="append", help="loss weight of each --clip, in order "
                   "(experiments; default 1 each)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", default="runs/demo_quality")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--real", type=int, default=300, help="real drawings for the judge's and the CLIP's check")
    p.add_argument("--no-cli-timing", action="store_true", help="skip the timed CLI run")
    p.add_argument("--probe-only", action="store_true", help="only the checks on real drawings (no generation)")
    p.add_argument("--every", type=int, default=1, help="run every N-th grid cell only (quick experiments; the "
                   "colour swap needs both partners, so it reads nan or fewer pairs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override one preset setting (experiments only: the targets are about the defaults)")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    acc = judge_accuracy(a.real)
    trusted = acc["area"]["shape"] >= 0.98 and acc["radius"]["shape"] >= 0.98
    print(f"judge on {a.real} real shapes-world drawings (thresholds: fg >= {MIN_FG:.0%}, blob >= {MIN_BLOB:.0%}, "
          f"IoU >= {MIN_IOU}): shape {acc['area']['shape']:.1%} (equal-area data), {acc['radius']['shape']:.1%} "
          f"(first data); all four {acc['area']['all_four']:.1%} / {acc['radius']['all_four']:.1%}"
          + ("" if trusted else "  -- BELOW 98 %: the numbers below are NOT trusted"), flush=True)

    from vqgan_core import load_vqgan
    from vqgan_core.clip.guide import load_clip_ensemble

    a.clip = a.clip or ["demo"]
    guide = load_clip_ensemble(a.clip, a.clip_weight)  # "demo": the demo's pair (colour CLIP, robust shape CLIP)
    vq, clip = load_vqgan(a.vqgan), guide.guides[-1][0]  # the probes below ask one CLIP: the last one
    probes = {}
    for law in ("area", "radius"):
        imgs, specs = real_images(a.real, 777, law)
        pr = clip_shape_probe(clip, imgs, [(s.fg, s.shape, s.bg) for s in specs])
        pr.pop("picks")
        probes[law] = pr
        print(f"CLIP on real drawings ({law} sizes): 3-way shape {pr['shape_acc']:.1%}; mean fg share by its pick "
              f"{pr['fg_share_by_pick']} (by truth {pr['fg_share_by_truth']})", flush=True)
    with torch.no_grad():
        imgs, _ = real_images(a.real, 777, "area")
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
        rec = vq.decode(vq.encode(x * 2 - 1)[0]).clamp(-1, 1) / 2 + 0.5
        rec8 = (rec.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    _, specs = real_images(a.real, 777, "area")
    rv = [judge(im, s.fg, s.shape, s.bg) for im, s in zip(rec8, specs, strict=True)]
    recon = {"all_four": float(np.mean([v.all_four for v in rv])), "l1": float((rec - x).abs().mean())}
    print(f"VQGAN reconstructions of real drawings: all four {recon['all_four']:.1%}, L1 {recon['l1']:.4f}", flush=True)

    if a.probe_only:
        return 0 if trusted else 1
    overrides = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        overrides[k] = json.loads(v)
    rows = [run_cell(vq, guide, cell, overrides, out, probe=clip) for cell in grid(a.seeds)[::a.every]]
    table = summarise(rows)
    secs = [r["seconds"] for r in rows]
    print(f"seconds per image (in process, {a.threads} threads): mean {np.mean(secs):.1f}, max {max(secs):.1f}")

    cli = None
    if not a.no_cli_timing and a.vqgan == "demo" and a.clip == ["demo"]:
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vqgan_core", "generate", "a red circle on a blue background",
                        "--seed", "0", "--out", str(out / "cli_timing.png")], check=True, cwd=REPO, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli = round(time.perf_counter() - t, 1)
        print(f"one CLI run end to end (imports + model load + generation): {cli} s")

    contact_sheet(rows, out / "sheet.png", a.seeds)
    (out / "results.json").write_text(json.dumps({
        "judge_on_real": acc, "judge_trusted": trusted, "clip_on_real": probes, "vqgan_reconstruction": recon,
        "table": table, "seconds_mean": float(np.mean(secs)), "seconds_max": float(max(secs)), "cli_seconds": cli,
        "overrides": overrides, "vqgan": a.vqgan, "clip": a.clip, "rows": rows}, indent=1))
    print(f"wrote {out / 'sheet.png'} and {out / 'results.json'}")
    return 0 if trusted else 1


if __name__ == "__main__":
    raise SystemExit(main())
