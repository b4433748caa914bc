"""Train the tiny open_clip-compatible demo CLIP on a COCO-layout captions dataset (e.g. shapes world).

Why: no pretrained CLIP can be downloaded offline, yet the demo must steer images by text. This trains a
~1.5 M-parameter open_clip ``CLIP`` (custom model config) with a contrastive loss plus hard negative captions
(the same caption with one attribute changed or fg/bg swapped), and writes a folder that plain open_clip loads::

    OUT/open_clip_config.json        # {"model_cfg": ..., "preprocess_cfg": ..., "tokenizer_cfg": ...}
    OUT/open_clip_model.safetensors  # open_clip.create_model("local-dir:OUT") loads it
    OUT/bpe_vocab.txt.gz             # SimpleTokenizer(bpe_path=..., context_length=16): small vocabulary
    OUT/train_info.json              # command settings and measured zero-shot accuracy

Usage: ``python -m training.clip_train --config training/configs/demo_clip.json --data DIR --out DIR``.
Fine-tuning rounds against the optimiser (``scripts/demo_clip_rounds.sh``): ``--set init='"DIR"'`` starts from a
folder this script wrote, ``--set 'negatives=["NEG_DIR", ...]'`` adds ``training.mine_negatives`` rejects as
negative images. ``--set adv_eps=3`` trains it adversarially (PGD in an L2 ball, ``training.adversarial``):
a robust guide whose gradients the optimiser cannot satisfy with patchwork; ``--set adv_distract=1`` also pushes
the distractor images towards their caption before they serve as negatives. ``--set freeze_text=true`` (with
``init``) retrains the image tower only, so the text embeddings, and whatever was trained on them, stay as they were.
``--set near_miss=0.25`` makes that share of the distractors near misses (``training.clip_data.NEAR_MISSES``:
oblongs, rounded squares, ellipses, pairs; ``near_miss_kinds`` picks some) in the sample's colours, so the text
learns that "a red square" is one shape with equal sides and sharp corners, not whatever red blob is squarish.
"""

from __future__ import annotations

import argparse
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
from open_clip.constants import OPENAI_DATASET_MEAN as OPENAI_MEAN
from open_clip.constants import OPENAI_DATASET_STD as OPENAI_STD
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from training.adversarial import pgd_l2
from training.clip_data import NEAR_MISSES, TEMPLATES, augment, distractors, hard_negative, key, load_coco, mask_bank
from training.clip_vocab import needed_merges, write_bpe
from training.shapes import PALETTE, SHAPES, caption_words
from vqgan_core import atomic_save_file

logger = logging.getLogger(__name__)

BPE_FILE = "bpe_vocab.txt.gz"  # file name inside the output folder
DEFAULTS: dict = {
    "model_name": "demo-clip-shapes", "embed_dim": 128, "image_size": 64, "patch_size": 8,
    "vision_width": 128, "vision_layers": 4, "head_width": 32, "context_length": 16, "text_width": 128,
    "text_heads": 4, "text_layers": 3, "steps": 500, "batch_size": 128, "hard_negatives": 4, "lr": 1e-3,
    "warmup": 30, "weight_decay": 0.05, "seed": 0, "save_dtype": "float16", "threads": 1,
    "distractor_frac": 0.5, "mask_bank": 500, "shape_focus": 0.25,
    # share of the distractors that are near misses (training.clip_data.NEAR_MISSES: oblongs, rounded squares,
    # ellipses, pairs in the sample's colours): negatives for every shape caption, so "square" means equal sides
    "near_miss": 0.0,
    "near_miss_kinds": list(NEAR_MISSES),  # which near misses, in turn (see NEAR_MISSES)
    "init_logit_scale": None, "aug_noise": 0.05,
    "mask_size_law": "area",  # distractor shape sizes (training.shapes.SIZE_LAWS); "radius" for the first data
    "init": None,  # an open_clip folder written by this script to start from (its architecture and vocabulary)
    "negatives": [],  # folders of training.mine_negatives: the guide's rejected generations, extra negative images
    "negatives_per_step": 32,
    # adversarial training (training.adversarial): this share of each batch's real images is replaced by its
    # worst case within an L2 ball of radius adv_eps (pixels in [0,1]) found by adv_steps of PGD; 0 = off
    "adv_eps": 0.0,
    "adv_steps": 3,
    "adv_frac": 0.5,
    "adv_after": 0,  # the first adv_after steps are clean: shapes are learnt first, robustness after
    # this share of the distractor images is moved (same PGD) TOWARDS its sample's caption before it is used as a
    # negative: what the generator does to a wrong image, so the text learns to reject it anyway; 0 = off
    "adv_distract": 0.0,
    # train the image tower only (with init): the text embeddings stay exactly as they were, so whatever reads
    # them (the feed-forward network trained on this CLIP's text) keeps working
    "freeze_text": False,
}


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


def image_to_text(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of an image's true captions (``pos``) among all the texts: the image->text InfoNCE term."""
    return (torch.logsumexp(logits.masked_fill(~pos, -1e4), 1) - torch.logsumexp(logits, 1)).mean()


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor,
                     distract: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE where ``pos[i, j]`` marks every text j that truly describes image i.

    Duplicate captions in a batch are positives, not false negatives; hard-negative texts only add columns
    to the image->text direction, distractor image embeddings only to the text->image direction.
    """
    logits = scale * img @ txt.T
    i2t = image_to_text(logits, pos)
    b = img.shape[0]
    lt = logits[:, :b].T
    pt = pos[:, :b].T
    if distract is not None:  # extra image columns for text->image, never positive
        lt = torch.cat([lt, scale * txt[:b] @ distract.T], 1)
        pt = torch.cat([pt, torch.zeros(b, distract.shape[0], dtype=torch.bool)], 1)
    t2i = (torch.logsumexp(lt.masked_fill(~pt, -1e4), 1) - torch.logsumexp(lt, 1)).mean()
    return -(i2t + t2i) / 2


def attack(model: torch.nn.Module, x: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor,
           c: dict, g: torch.Generator) -> torch.Tensor:
    """The images ``x`` ([0,1]) perturbed to mismatch their captions: PGD on the image->text InfoNCE term."""

    def loss(xx: torch.Tensor) -> torch.Tensor:
        return -image_to_text(scale * F.normalize(model.encode_image(normalize(xx)), dim=-1) @ txt.T, pos)

    return pgd_l2(loss, x, float(c["adv_eps"]), int(c["adv_steps"]), g)


def attack_towards(model: torch.nn.Module, x: torch.Tensor, txt: torch.Tensor, c: dict,
                   g: torch.Generator) -> torch.Tensor:
    """Wrong images ``x`` ([0,1]) perturbed to MATCH the captions ``txt`` (one normalised text row each).

    Why: guidance starts from wrong images and climbs towards the text; a distractor a small step can push
    to the text's score is a shortcut the optimiser will take. Rejecting the pushed versions closes it.
    """

    def loss(xx: torch.Tensor) -> torch.Tensor:
        return (F.normalize(model.encode_image(normalize(xx)), dim=-1) * txt).sum(1).mean()

    return pgd_l2(loss, x, float(c["adv_eps"]), int(c["adv_steps"]), g)


def load_init(model: torch.nn.Module, folder: Path) -> None:
    """Start from a folder this script wrote (fine-tuning rounds); it must have the same architecture."""
    from safetensors.torch import load_file

    f = folder / "open_clip_model.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"init: {f} not found (expected a folder written by training.clip_train)")
    sd = load_file(str(f))
    own = model.state_dict()
    bad = sorted(k for k in own if k not in sd or sd[k].shape != own[k].shape)
    if bad or set(sd) - set(own):
        raise ValueError(f"init: {f} does not fit this config (first mismatched keys: {bad[:3]}); "
                         "use the config the folder was trained with")
    model.load_state_dict({k: v.float() for k, v in sd.items()})


def load_negatives(folders: list[Path], size: int) -> torch.Tensor:
    """The images ``training.mine_negatives`` rejected (judge: not all four checks) as uint8 [N,3,H,W]."""
    imgs = []
    for d in folders:
        log = d / "negatives.jsonl"
        if not log.is_file():
            raise FileNotFoundError(f"negatives: {log} not found (make it with python -m training.mine_negatives)")
        for i, line in enumerate(log.read_text().splitlines()):
            try:
                row = json.loads(line)
                name = row["file"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"negatives: line {i + 1} of {log} is not a mine_negatives record: {line[:80]!r}") from None
            if row.get("all_four"):
                continue
            with Image.open(d / name) as im:
                a = np.asarray(im.convert("RGB"))
            if a.shape[:2] != (size, size):
                raise ValueError(f"negatives: {d / name} (line {i + 1} of {log}) is {a.shape[1]}x{a.shape[0]}, "
                                 f"expected {size}x{size}")
            imgs.append(a)
    logger.info("%d mined negative images from %d folders", len(imgs), len(folders))
    if not imgs:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def check_settings(c: dict) -> None:
    """The fine-tuning and adversarial keys, which JSON could give any type: a clear error naming the key."""
    if c["init"] is not None and not isinstance(c["init"], str):
        raise ValueError(f"init must be an open_clip folder written by this script (a string) or null, got {c['init']!r}")
    if not isinstance(c["negatives"], list) or not all(isinstance(d, str) for d in c["negatives"]):
        raise ValueError(f'negatives must be a JSON list of folders (--set \'negatives=["runs/neg_r1"]\'), '
                         f"got {c['negatives']!r}")
    if not isinstance(c["negatives_per_step"], int) or c["negatives_per_step"] < 1:
        raise ValueError(f"negatives_per_step must be a positive integer, got {c['negatives_per_step']!r}")
    if not isinstance(c["adv_eps"], (int, float)) or c["adv_eps"] < 0:
        raise ValueError(f"adv_eps must be a number >= 0 (0 = no adversarial training), got {c['adv_eps']!r}")
    if not isinstance(c["adv_steps"], int) or c["adv_steps"] < 1:
        raise ValueError(f"adv_steps must be a positive integer, got {c['adv_steps']!r}")
    if not isinstance(c["adv_after"], int) or c["adv_after"] < 0:
        raise ValueError(f"adv_after must be an integer >= 0 (clean steps before the attacks start), got {c['adv_after']!r}")
    if not isinstance(c["adv_frac"], (int, float)) or not 0 < c["adv_frac"] <= 1:
        raise ValueError(f"adv_frac must be in (0, 1], got {c['adv_frac']!r}")
    if not isinstance(c["adv_distract"], (int, float)) or not 0 <= c["adv_distract"] <= 1:
        raise ValueError(f"adv_distract must be in [0, 1] (share of distractors attacked), got {c['adv_distract']!r}")
    if not isinstance(c["near_miss"], (int, float)) or not 0 <= c["near_miss"] <= 1 - c["shape_focus"]:
        raise ValueError(f"near_miss must be in [0, 1 - shape_focus] (share of distractors that are near misses), "
                         f"got {c['near_miss']!r}")
    kinds = c["near_miss_kinds"]
    if not isinstance(kinds, list) or not kinds or any(k not in NEAR_MISSES for k in kinds):
        raise ValueError(f"near_miss_kinds must be a non-empty JSON list of {', '.join(NEAR_MISSES)}; got {kinds!r}")
    if not isinstance(c["freeze_text"], bool):
        raise ValueError(f"freeze_text must be true or false, got {c['freeze_text']!r}")
    if c["freeze_text"] and not c["init"]:
        raise ValueError("freeze_text needs init (the folder whose text tower to keep): a frozen random text "
                         "tower would never learn")


def train(c: dict, data: Path, out: Path) -> dict:
    """Train, evaluate zero-shot on val, save the open_clip folder; returns the train_info dict."""
    check_settings(c)
    torch.set_num_threads(int(c["threads"]))
    torch.manual_seed(c["seed"])
    g = torch.Generator().manual_seed(c["seed"])
    rng = np.random.default_rng(c["seed"])
    out.mkdir(parents=True, exist_ok=True)
    write_bpe(out / BPE_FILE, needed_merges(caption_words()))
    tok = SimpleTokenizer(bpe_path=str(out / BPE_FILE), context_length=c["context_length"])
    cfg = model_cfg(c, tok.vocab_size)
    model = create_registered(c["model_name"], cfg)
    if c["init"]:
        load_init(model, Path(c["init"]))
    if c["freeze_text"]:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("visual.") or name == "logit_scale")
    negs = load_negatives([Path(d) for d in c["negatives"]], c["image_size"])
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("vocab %d, %.2f M parameters", tok.vocab_size, n_params / 1e6)
    cache: dict[str, torch.Tensor] = {}

    def tokens(text: str) -> torch.Tensor:  # the tokenizer is slow pure python; captions repeat a lot
        if text not in cache:
            cache[text] = tok(text)[0]
        return cache[text]

    bank = mask_bank(c["mask_bank"], c["image_size"], rng, c["mask_size_law"],
                     tuple(c["near_miss_kinds"]) if c["near_miss"] > 0 else ())
    imgs, attrs = load_coco(data, "train")
    vimgs, vattrs = load_coco(data, "val")
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in trained if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]}, {"params": rest, "weight_decay": 0}],
                            lr=c["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / c["warmup"]) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / max(1, c["steps"])))))
    bs, k = c["batch_size"], c["hard_negatives"]
    t0 = time.time()
    for step in range(c["steps"]):
        idx = torch.randint(len(imgs), (bs,), generator=g)
        a = [attrs[i] for i in idx.tolist()]
        n_distract = int(bs * c["distractor_frac"])
        x = imgs[idx].float() / 255
        if n_distract:
            x = torch.cat([x, distractors(a[:n_distract], bank, g, c["image_size"], c["shape_focus"],
                                        c["near_miss"])])
        if len(negs):
            x = torch.cat([x, negs[torch.randint(len(negs), (c["negatives_per_step"],), generator=g)].float() / 255])
        nd = x.shape[0] - bs
        x = augment(x, g, c["aug_noise"])
        tmpl = rng.integers(len(TEMPLATES), size=bs)
        texts_attr = a + [hard_negative(a[i], rng, c["shape_focus"]) for i in range(bs) for _ in range(k)]
        tmpl_all = np.concatenate([tmpl, np.repeat(tmpl, k)])
        caps = [TEMPLATES[t].format(**d) for t, d in zip(tmpl_all, texts_attr, strict=True)]
        pos = torch.tensor([[key(ai) == key(tj) for tj in texts_attr] for ai in a])
        ft = F.normalize(model.encode_text(torch.stack([tokens(t) for t in caps])), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        attacking = c["adv_eps"] > 0 and step >= c["adv_after"]
        na = int(bs * c["adv_frac"]) if attacking else 0
        if na:
            x = torch.cat([attack(model, x[:na], ft.detach(), pos[:na], scale.detach(), c, g), x[na:]])
        nt = int(n_distract * c["adv_distract"]) if attacking else 0
        if nt:  # distractor j was made from sample j, whose caption is text row j
            pushed = attack_towards(model, x[bs:bs + nt], ft[:nt].detach(), c, g)
            x = torch.cat([x[:bs], pushed, x[bs + nt:]])
        fi = F.normalize(model.encode_image(normalize(x)), dim=-1)
        loss = contrastive_loss(fi[:bs], ft, pos, scale, fi[bs:] if nd else None)
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
    atomic_save_file(sd, out / "open_clip_model.safetensors", metadata={"format": "pt"})
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


def settings(config: str | None, sets: list[str], steps: int | None = None) -> dict:
    """DEFAULTS, then the JSON ``config`` file, then each ``KEY=VALUE`` (JSON value), then ``steps``; checked."""
    c = dict(DEFAULTS)
    if config:
        user = json.loads(Path(config).read_text())
        unknown = set(user) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"{config}: unknown keys {sorted(unknown)}; valid keys: {sorted(DEFAULTS)}")
        c.update(user)
    for kv in sets:
        k, _, v = kv.partition("=")
        if k not in DEFAULTS:
            raise ValueError(f"--set {kv}: unknown key {k!r}; valid keys: {sorted(DEFAULTS)}")
        try:
            c[k] = json.loads(v)
        except ValueError:
            c[k] = v
    if steps is not None:
        c["steps"] = steps
    check_settings(c)
    return c


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
    info = train(settings(a.config, a.set, a.steps), Path(a.data), Path(a.out))
    print(json.dumps(info["zero_shot_val"]))


if __name__ == "__main__":
    main()
