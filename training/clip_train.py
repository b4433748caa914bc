"""Train the tiny open_clip-compatible demo CLIP on a COCO-layout captions dataset (e.g. shapes world).

Why: no pretrained CLIP can be downloaded offline, yet the demo must steer images by text. This trains a
~1.5 M-parameter open_clip ``CLIP`` (custom model config) with a contrastive loss plus hard negative captions
(the same caption with one attribute changed or fg/bg swapped), and writes a folder that plain open_clip loads::

    OUT/open_clip_config.json        # {"model_cfg": ..., "preprocess_cfg": ..., "tokenizer_cfg": ...}
    OUT/open_clip_model.safetensors  # open_clip.create_model("local-dir:OUT") loads it
    OUT/bpe_vocab.txt.gz             # SimpleTokenizer(bpe_path=..., context_length=16): small vocabulary
    OUT/train_info.json              # command settings and measured zero-shot accuracy

Usage: ``python -m training.clip_train --config training/configs/demo_clip.json --data DIR --out DIR``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer, bytes_to_unicode, default_bpe, get_pairs
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from training.shapes import CAPTION_TEMPLATES, PALETTE, SHAPES, caption_words, shape_polygon

logger = logging.getLogger(__name__)

BPE_FILE = "bpe_vocab.txt.gz"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULTS: dict = {
    "model_name": "demo-clip-shapes", "embed_dim": 128, "image_size": 64, "patch_size": 8,
    "vision_width": 128, "vision_layers": 4, "head_width": 32, "context_length": 16, "text_width": 128,
    "text_heads": 4, "text_layers": 3, "steps": 500, "batch_size": 128, "hard_negatives": 4, "lr": 1e-3,
    "warmup": 30, "weight_decay": 0.05, "seed": 0, "save_dtype": "float16", "threads": 1,
    "distractor_frac": 0.5, "mask_bank": 500, "shape_focus": 0.25,
    "init_logit_scale": None,
}


# ----------------------------------------------------------------------------------------- tokenizer
def needed_merges(words: list[str], bpe_path: str | None = None) -> list[tuple[str, str]]:
    """BPE merges (in open_clip's rank order) that the standard tokenizer applies to ``words``.

    Keeping only these gives the same token pieces for those words (each applied merge was the best-ranked
    pair present, and it still is in the subset) with a ~600-token vocabulary instead of 49 408.
    """
    lines = gzip.open(bpe_path or default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    ranks = {tuple(m.split()): i for i, m in enumerate(lines)}
    byte_enc = bytes_to_unicode()
    used: set[tuple[str, str]] = set()
    for w in words:
        token = "".join(byte_enc[b] for b in w.lower().encode("utf-8"))
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            bigram = min(get_pairs(word), key=lambda p: ranks.get(p, math.inf))
            if bigram not in ranks:
                break
            used.add(bigram)
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == bigram:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
    return sorted(used, key=ranks.__getitem__)


def write_bpe(path: Path, merges: list[tuple[str, str]]) -> None:
    """Write open_clip's bpe format: a header line, then one "a b" merge per line (no trailing newline)."""
    text = "\n".join(["#version: 0.2 (vqgan_core demo subset)"] + [f"{a} {b}" for a, b in merges])
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


# ----------------------------------------------------------------------------------------- model
def model_cfg(c: dict, vocab_size: int) -> dict:
    """open_clip model config dict (the same schema as open_clip/model_configs/*.json).

    ``vision_layers`` as a list (e.g. ``[1, 1, 1, 1]``) selects open_clip's ModifiedResNet image tower (as in the
    RN50 configs), an int a ViT with ``patch_size`` / ``head_width``.
    """
    if isinstance(c["vision_layers"], list):
        vision = {"image_size": c["image_size"], "layers": c["vision_layers"], "width": c["vision_width"]}
    else:
        vision = {"image_size": c["image_size"], "patch_size": c["patch_size"], "width": c["vision_width"],
                  "layers": c["vision_layers"], "head_width": c["head_width"]}
    extra = {"init_logit_scale": float(c["init_logit_scale"])} if c.get("init_logit_scale") else {}
    return {
        **extra,
        "embed_dim": c["embed_dim"],
        "vision_cfg": vision,
        "text_cfg": {"context_length": c["context_length"], "vocab_size": vocab_size, "width": c["text_width"],
                     "heads": c["text_heads"], "layers": c["text_layers"]},
    }


def create_registered(name: str, cfg: dict) -> torch.nn.Module:
    """Register ``cfg`` under ``name`` with open_clip (add_model_config) and build a fresh model from it."""
    d = Path(tempfile.mkdtemp(prefix="clipcfg_"))
    (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    return open_clip.create_model(name)


# ----------------------------------------------------------------------------------------- data
def load_coco(data: Path, split: str) -> tuple[torch.Tensor, list[dict]]:
    """Images as uint8 [N,3,H,W] plus the per-image ``shapes`` attributes from a shapes-world COCO json."""
    doc = json.loads((data / "annotations" / f"captions_{split}2017.json").read_text())
    if not doc["images"] or "shapes" not in doc["images"][0]:
        raise ValueError(f"{data}: captions_{split}2017.json has no 'shapes' attributes; "
                         "make it with `python -m training.shapes`")
    imgs = [np.asarray(Image.open(data / f"{split}2017" / im["file_name"]).convert("RGB")) for im in doc["images"]]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(), [im["shapes"] for im in doc["images"]]


TEMPLATES = CAPTION_TEMPLATES


def hard_negative(a: dict, rng: np.random.Generator, shape_focus: float = 0.25) -> dict:
    """The same attributes with exactly one thing wrong: shape (probability ``shape_focus``), fg, bg or a swap."""
    colours = list(PALETTE)
    rest = (1 - shape_focus) / 3
    kind = int(rng.choice(4, p=[rest, rest, shape_focus, rest]))
    n = dict(a)
    if kind == 0:
        n["fg"] = rng.choice([c for c in colours if c not in (a["fg"], a["bg"])])
    elif kind == 1:
        n["bg"] = rng.choice([c for c in colours if c not in (a["fg"], a["bg"])])
    elif kind == 2:
        n["shape"] = rng.choice([s for s in SHAPES if s != a["shape"]])
    else:
        n["fg"], n["bg"] = a["bg"], a["fg"]
    return n


def key(a: dict) -> tuple[str, str, str]:
    return a["fg"], a["bg"], a["shape"]


def _mask(shapes: list[tuple[str, float, float, float]], size: int) -> np.ndarray:
    """Anti-aliased coverage mask in [0,1] of some (shape, cx, cy, r) drawn together."""
    s = 4
    img = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(img)
    for shape, cx, cy, r in shapes:
        poly = shape_polygon(shape, cx * s, cy * s, r * s)
        if poly is None:
            draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
        else:
            draw.polygon(poly, fill=255)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255


def mask_bank(n: int, size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Shape masks for distractor images: one bank per single shape type, and one of 2-4 scattered shapes."""
    bank: dict[str, list[np.ndarray]] = {s: [] for s in (*SHAPES, "multi")}
    for _ in range(n):
        for s in SHAPES:
            r = rng.uniform(0.15, 0.40) * size
            bank[s].append(_mask([(s, *rng.uniform(r * 0.9, size - r * 0.9, 2), r)], size))
        parts = []
        for _ in range(int(rng.integers(2, 5))):
            r = rng.uniform(0.08, 0.22) * size
            parts.append((SHAPES[int(rng.integers(3))], *rng.uniform(r, size - r, 2), r))
        bank["multi"].append(_mask(parts, size))
    return {k: torch.from_numpy(np.stack(v))[:, None] for k, v in bank.items()}


def distractors(attrs: list[dict], bank: dict[str, torch.Tensor], g: torch.Generator, size: int,
                shape_focus: float = 0.2) -> torch.Tensor:
    """One image per sample with the sample's colours but the wrong content, as extra negatives for its text.

    Kinds: another shape (probability ``shape_focus``), several small shapes, an 8x8-block mosaic or an
    irregular blob (the patchwork that CLIP-guided generation tends to produce), or the colours swapped. Teaching the text tower to rank these
    below the true image is what makes guidance prefer one clean shape. Returns [B,3,H,W] in [0,1].
    """
    out = []
    for a in attrs:
        fg = torch.tensor(PALETTE[a["fg"]], dtype=torch.float32).view(3, 1, 1) / 255
        bg = torch.tensor(PALETTE[a["bg"]], dtype=torch.float32).view(3, 1, 1) / 255
        rest = (1 - shape_focus) / 4
        kind = int(torch.multinomial(torch.tensor([shape_focus, rest, rest, rest, rest]), 1, generator=g))
        if kind == 0:
            other = [s for s in SHAPES if s != a["shape"]][int(torch.randint(2, (1,), generator=g))]
            m = bank[other][int(torch.randint(len(bank[other]), (1,), generator=g))]
        elif kind == 1:
            m = bank["multi"][int(torch.randint(len(bank["multi"]), (1,), generator=g))]
        elif kind == 2:
            p = 0.1 + 0.4 * torch.rand(1, generator=g)
            m = (torch.rand(1, 1, 8, 8, generator=g) < p).float()
            m = F.interpolate(m, size=(size, size), mode="nearest")[0]
        elif kind == 3:
            n = int(torch.randint(3, 7, (1,), generator=g))
            noise = F.interpolate(torch.randn(1, 1, n, n, generator=g), size=(size, size), mode="bicubic")[0]
            q = torch.quantile(noise.flatten(), 1 - (0.1 + 0.3 * float(torch.rand(1, generator=g))))
            m = torch.sigmoid((noise - q) * 8)
        else:
            r = a["r"] if "r" in a else 0.25 * size
            m = torch.from_numpy(_mask([(a["shape"], a.get("cx", size / 2), a.get("cy", size / 2), r)], size))[None]
            fg, bg = bg, fg
        out.append(bg + m * (fg - bg))
    return torch.stack(out)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Generation-like augmentation on [B,3,H,W] in [0,1]: flip, affine (border fill, never black), jitter, blur, noise.

    Hue is never changed: colour names are the labels.
    """
    b = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    flip = u(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    ang = (u(b) - 0.5) * math.radians(30)
    scale = 0.85 + 0.3 * u(b)
    tx, ty = (u(b) - 0.5) * 0.3, (u(b) - 0.5) * 0.3
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    bright = 1 + (u(b, 1, 1, 1) - 0.5) * 0.2
    mean = x.mean((1, 2, 3), keepdim=True)
    contrast = 1 + (u(b, 1, 1, 1) - 0.5) * 0.2
    x = (x - mean) * contrast + mean * bright
    blur = u(b) < 0.3
    k = torch.tensor([0.25, 0.5, 0.25])
    xb = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), (k[:, None] * k[None, :]).expand(3, 1, 3, 3), groups=3)
    x = torch.where(blur[:, None, None, None], xb, x)
    x = x + torch.randn(x.shape, generator=g) * 0.05 * u(b, 1, 1, 1)
    return x.clamp(0, 1)


# ----------------------------------------------------------------------------------------- train / eval
def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)


def all_captions() -> tuple[list[tuple[str, str, str]], list[str]]:
    """Every (fg, bg, shape) combination and its canonical caption: the zero-shot label set."""
    keys = [(f, b, s) for f in PALETTE for b in PALETTE if f != b for s in SHAPES]
    return keys, [TEMPLATES[0].format(fg=f, bg=b, shape=s) for f, b, s in keys]


@torch.no_grad()
def zero_shot(model: torch.nn.Module, tok: SimpleTokenizer, imgs: torch.Tensor, attrs: list[dict]) -> dict:
    """Accuracy of picking the right caption among all 168 (and per attribute) on held-out images."""
    model.eval()
    keys, caps = all_captions()
    t = F.normalize(model.encode_text(tok(caps)), dim=-1)
    hits = {"all": 0, "fg": 0, "bg": 0, "shape": 0}
    for i in range(0, len(imgs), 256):
        f = F.normalize(model.encode_image(normalize(imgs[i:i + 256].float() / 255)), dim=-1)
        for j, p in enumerate((f @ t.T).argmax(1).tolist()):
            a, (fg, bg, sh) = attrs[i + j], keys[p]
            hits["all"] += (fg, bg, sh) == (a["fg"], a["bg"], a["shape"])
            hits["fg"] += fg == a["fg"]
            hits["bg"] += bg == a["bg"]
            hits["shape"] += sh == a["shape"]
    model.train()
    return {k: v / len(imgs) for k, v in hits.items()}


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor,
                     distract: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE where ``pos[i, j]`` marks every text j that truly describes image i.

    Duplicate captions in a batch are positives, not false negatives; hard-negative texts only add columns
    to the image->text direction, distractor image embeddings only to the text->image direction.
    """
    logits = scale * img @ txt.T
    i2t = (torch.logsumexp(logits.masked_fill(~pos, -1e4), 1) - torch.logsumexp(logits, 1)).mean()
    b = img.shape[0]
    lt = logits[:, :b].T
    pt = pos[:, :b].T
    if distract is not None:  # extra image columns for text->image, never positive
        lt = torch.cat([lt, scale * txt[:b] @ distract.T], 1)
        pt = torch.cat([pt, torch.zeros(b, distract.shape[0], dtype=torch.bool)], 1)
    t2i = (torch.logsumexp(lt.masked_fill(~pt, -1e4), 1) - torch.logsumexp(lt, 1)).mean()
    return -(i2t + t2i) / 2


def train(c: dict, data: Path, out: Path) -> dict:
    """Train, evaluate zero-shot on val, save the open_clip folder; returns the train_info dict."""
    torch.set_num_threads(int(c["threads"]))
    torch.manual_seed(c["seed"])
    g = torch.Generator().manual_seed(c["seed"])
    rng = np.random.default_rng(c["seed"])
    out.mkdir(parents=True, exist_ok=True)
    write_bpe(out / BPE_FILE, needed_merges(caption_words()))
    tok = SimpleTokenizer(bpe_path=str(out / BPE_FILE), context_length=c["context_length"])
    cfg = model_cfg(c, tok.vocab_size)
    model = create_registered(c["model_name"], cfg)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("vocab %d, %.2f M parameters", tok.vocab_size, n_params / 1e6)
    cache: dict[str, torch.Tensor] = {}

    def tokens(text: str) -> torch.Tensor:  # the tokenizer is slow pure python; captions repeat a lot
        if text not in cache:
            cache[text] = tok(text)[0]
        return cache[text]

    bank = mask_bank(c["mask_bank"], c["image_size"], rng)
    imgs, attrs = load_coco(data, "train")
    vimgs, vattrs = load_coco(data, "val")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]}, {"params": rest, "weight_decay": 0}],
                            lr=c["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / c["warmup"]) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / c["steps"]))))
    bs, k = c["batch_size"], c["hard_negatives"]
    t0 = time.time()
    for step in range(c["steps"]):
        idx = torch.randint(len(imgs), (bs,), generator=g)
        a = [attrs[i] for i in idx.tolist()]
        nd = int(bs * c["distractor_frac"])
        x = imgs[idx].float() / 255
        if nd:
            x = torch.cat([x, distractors(a[:nd], bank, g, c["image_size"], c["shape_focus"])])
        x = normalize(augment(x, g))
        tmpl = rng.integers(len(TEMPLATES), size=bs)
        texts_attr = a + [hard_negative(a[i], rng, c["shape_focus"]) for i in range(bs) for _ in range(k)]
        tmpl_all = np.concatenate([tmpl, np.repeat(tmpl, k)])
        caps = [TEMPLATES[t].format(**d) for t, d in zip(tmpl_all, texts_attr, strict=True)]
        pos = torch.tensor([[key(ai) == key(tj) for tj in texts_attr] for ai in a])
        fi = F.normalize(model.encode_image(x), dim=-1)
        ft = F.normalize(model.encode_text(torch.stack([tokens(t) for t in caps])), dim=-1)
        loss = contrastive_loss(fi[:bs], ft, pos, model.logit_scale.exp().clamp(max=100), fi[bs:] if nd else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == c["steps"] - 1:
            logger.info("step %d loss %.4f scale %.1f %.0fs", step, loss.item(), model.logit_scale.exp().item(),
                        time.time() - t0)
    acc = zero_shot(model, tok, vimgs, vattrs)
    logger.info("zero-shot accuracy on %d val images: %s", len(vimgs), acc)
    dtype = {"float16": torch.float16, "float32": torch.float32}[c["save_dtype"]]
    sd = {n: t.detach().to(dtype).contiguous() for n, t in model.state_dict().items()}
    tmp = out / "open_clip_model.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.chmod(0o644)  # safetensors' temp file is private; the weights ship with the package
    tmp.replace(out / "open_clip_model.safetensors")
    (out / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"image_size": c["image_size"], "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                           "interpolation": "bicubic", "resize_mode": "shortest"},
        "tokenizer_cfg": {"bpe": BPE_FILE, "context_length": c["context_length"],
                          "note": "build with open_clip.tokenizer.SimpleTokenizer(bpe_path=DIR/bpe, context_length)"},
    }, indent=1))
    info = {"config": c, "vocab_size": tok.vocab_size, "params": n_params, "train_seconds": round(time.time() - t0, 1),
            "zero_shot_val": acc, "n_train": len(imgs), "n_val": len(vimgs)}
    (out / "train_info.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; every DEFAULTS key can be overridden by ``--config FILE`` then ``--set key=value``."""
    p = argparse.ArgumentParser(prog="python -m training.clip_train", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="COCO-layout dataset with shapes attributes (training.shapes)")
    p.add_argument("--out", required=True, help="output folder (open_clip local-dir)")
    p.add_argument("--config", help="JSON file overriding DEFAULTS")
    p.add_argument("--steps", type=int, help="override the number of optimisation steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting (JSON value)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    c = dict(DEFAULTS)
    if a.config:
        user = json.loads(Path(a.config).read_text())
        unknown = set(user) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"{a.config}: unknown keys {sorted(unknown)}; valid keys: {sorted(DEFAULTS)}")
        c.update(user)
    for kv in a.set:
        k, _, v = kv.partition("=")
        if k not in DEFAULTS:
            raise ValueError(f"--set {kv}: unknown key {k!r}; valid keys: {sorted(DEFAULTS)}")
        try:
            c[k] = json.loads(v)
        except ValueError:
            c[k] = v
    if a.steps is not None:
        c["steps"] = a.steps
    info = train(c, Path(a.data), Path(a.out))
    print(json.dumps(info["zero_shot_val"]))


if __name__ == "__main__":
    main()
