"""Mine a guide's adversarial images: generate from shapes-world prompts, keep what the pixel judge rejects.

Why: a CLIP that ranks real drawings right can still be fooled by the optimiser, which finds patchwork it
scores above a clean drawing of the prompt. Those images, fed back to ``training.clip_train`` as negatives
(``negatives`` key: extra image columns that match no caption), teach the CLIP what the optimiser exploits.
Run it, fine-tune, mine again: each round's negatives come from the guide of the round before.

Writes ``OUT/*.png`` and ``OUT/negatives.jsonl`` (one line per image: file, prompt attributes, the judge's
verdict), appended image by image so an interrupted run keeps what it made.

    python -m training.mine_negatives --clip runs/clip_r0 --n 200 --seed 1 --out runs/neg_r1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.shape_judge import judge
from training.shapes import PALETTE, SHAPES

logger = logging.getLogger(__name__)


def prompts(n: int, seed: int) -> list[tuple[str, str, str, int]]:
    """``n`` (fg, shape, bg, generation seed) drawn from ``seed``: every shape equally often."""
    rng = np.random.default_rng(seed)
    colours = list(PALETTE)
    out = []
    for i in range(n):
        fg, bg = rng.choice(colours, 2, replace=False)
        out.append((str(fg), SHAPES[i % len(SHAPES)], str(bg), seed * 100_000 + i))
    return out


def mine(vqgan: str, clips: list[str], n: int, seed: int, out: Path, overrides: dict) -> dict:
    """Generate ``n`` images with the demo preset (plus ``overrides``) and record the judge's verdicts."""
    from vqgan_core import GenerationConfig, demo_preset, load_clip_ensemble, load_vqgan, run_generation

    out.mkdir(parents=True, exist_ok=True)
    vq = load_vqgan(vqgan)
    guide = load_clip_ensemble(clips)  # "demo": the demo's pair
    log = out / "negatives.jsonl"
    done = {json.loads(line)["file"] for line in log.read_text().splitlines()} if log.is_file() else set()
    kept = total = 0
    t0 = time.perf_counter()
    for fg, shape, bg, s in prompts(n, seed):
        name = f"{fg}_{shape}_{bg}_s{s}.png"
        if name in done:
            continue
        cfg = GenerationConfig.from_dict({**demo_preset(), **overrides, "seed": s,
                                          "prompts": f"a {fg} {shape} on a {bg} background"})
        img = run_generation(vq, guide, cfg).images[0]
        arr = (img.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        v = judge(arr, fg, shape, bg)
        Image.fromarray(arr).save(out / name)
        with log.open("a") as f:
            f.write(json.dumps({"file": name, "fg": fg, "shape": shape, "bg": bg, "seed": s, **v.as_dict()}) + "\n")
        total += 1
        kept += not v.all_four
        logger.info("%s: %s (%.0f s)", name, "pass" if v.all_four else "negative", time.perf_counter() - t0)
    return {"made": total, "negatives": kept}


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m training.mine_negatives", description=__doc__.splitlines()[0])
    p.add_argument("--vqgan", default="demo")
    p.add_argument("--clip", action="append", required=True, help="the guide (repeat for an ensemble)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a preset setting")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(a.threads)
    overrides = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        try:
            overrides[k] = json.loads(v)
        except ValueError:
            p.error(f"--set {kv}: the value must be JSON (e.g. steps=100, augments='[\"Hf\"]')")
    try:
        res = mine(a.vqgan, a.clip, a.n, a.seed, Path(a.out), overrides)
    except (ValueError, OSError) as e:  # bad settings, models that do not load: say which, no traceback
        p.exit(2, f"error: {e}\n")
    print(json.dumps(res))  # noqa: T201 (the CLI result)


if __name__ == "__main__":
    main()
