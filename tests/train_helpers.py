"""Shared helpers for the training tests: a tiny synthetic COCO-layout dataset with every awkward image kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from training.config import TrainConfig

BAD_KINDS = ("corrupt", "truncated", "too_small")
ODD_KINDS = ("gray", "cmyk", "rgba", "palette_alpha", "gray16")


PALETTE = np.array([(230, 30, 30), (30, 200, 40), (40, 60, 220), (240, 240, 240), (20, 20, 20)], dtype=np.float64)


def _smooth_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A disc on a plain background from a 5-colour palette: learnable in a few dozen steps."""
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    fg, bg = rng.choice(len(PALETTE), 2, replace=False)
    img = np.broadcast_to(PALETTE[bg], (h, w, 3)).copy()
    cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.35)
    img[((xx - cx) ** 2 + (yy - cy) ** 2) < r * r] = PALETTE[fg]
    return img.clip(0, 255).astype(np.uint8)


def make_coco(root: Path, n_train: int = 24, n_val: int = 6, size: int = 40, seed: int = 0, odd: bool = True) -> Path:
    """COCO 2017 layout (train2017/, val2017/, annotations/captions_*.json) with optional bad/odd files in train."""
    rng = np.random.default_rng(seed)
    for split, n, first in (("train", n_train, 1), ("val", n_val, 10_000)):
        d = root / f"{split}2017"
        d.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        kinds = ["rgb"] * n
        if odd and split == "train":
            extra = list(BAD_KINDS + ODD_KINDS)
            kinds = extra + kinds[len(extra) :]
        for i, kind in enumerate(kinds):
            iid = first + i
            name = f"{iid:012d}.{'jpg' if kind in ('cmyk', 'truncated') else 'png'}"
            _write(d / name, kind, rng, size + int(rng.integers(0, 12)), size)
            images.append({"id": iid, "file_name": name, "width": size, "height": size})
            anns.append({"id": iid, "image_id": iid, "caption": f"image {iid} of kind {kind}"})
        ann = root / "annotations"
        ann.mkdir(exist_ok=True)
        (ann / f"captions_{split}2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def _write(path: Path, kind: str, rng: np.random.Generator, w: int, h: int) -> None:
    rgb = Image.fromarray(_smooth_image(rng, w, h))
    if kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    elif kind == "truncated":
        rgb.save(path, "JPEG", quality=90)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "too_small":
        rgb.resize((6, 6)).save(path)
    elif kind == "gray":
        rgb.convert("L").save(path)
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, "JPEG")
    elif kind == "rgba":
        a = rgb.convert("RGBA")
        a.putalpha(128)
        a.save(path)
    elif kind == "palette_alpha":
        p = rgb.convert("P")
        p.info["transparency"] = 0
        p.save(path, transparency=0)
    elif kind == "gray16":
        arr = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        Image.fromarray(arr).save(path)
    else:
        rgb.save(path)


def tiny_config(data: Path, out: Path, **over: object) -> TrainConfig:
    """The smallest useful run: f4, 16 px crops, batch 4, LPIPS with random weights, GAN from step 2."""
    d = {
        "name": "test",
        "out": str(out),
        "model": {
            "resolution": 16,
            "ch": 32,
            "ch_mult": [1, 1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "z_channels": 8,
            "embed_dim": 8,
            "n_embed": 32,
        },
        "data": {"path": str(data), "resolution": 16, "min_size": 16, "num_workers": 0, "val_max_images": 4},
        "loss": {
            "perceptual_weight": 1.0,
            "lpips_random": True,
            "lpips_chns": [4, 8, 8, 16, 16],
            "disc_start": 2,
            "disc_ndf": 8,
            "disc_num_layers": 2,
        },
        "optim": {"learning_rate": 1e-3},
        "train": {"batch_size": 4, "max_steps": 6, "seed": 0},
        "log": {"every": 1, "image_every": 3, "val_every": 0, "ckpt_every": 0, "tensorboard": False, "progress": False},
    }
    for k, v in over.items():
        sect, _, key = k.partition("__")
        if key:
            d.setdefault(sect, {})[key] = v
        else:
            d[sect] = v
    return TrainConfig.from_dict(d)


def taming_param_order(fix: Path) -> tuple[list[str], list[str]]:
    """The state_dict names of the AE and the discriminator optimizer's parameters, in the order taming's
    ``configure_optimizers`` lists them (recorded from the real code in tiny_f4_train/train_step_golden)."""
    from safetensors import safe_open

    with safe_open(fix / "train_step_golden.safetensors", "pt") as f:
        meta = f.metadata()
    return json.loads(meta["ae_params"]), json.loads(meta["disc_params"])


def taming_ckpt_with_adam_moments(fix: Path, out: Path) -> Path:
    """``fix/last_pl_legacy.ckpt`` as if saved after some training: both optimizer states get Adam moments.

    The fixture was saved before the first step (Adam states empty: moments for every weight would not fit the
    fixtures' size budget). The moments written here are markers, ``exp_avg == index + 1``, at the parameter
    indices taming's optimizers use, so a test sees where each one lands. The class-keyed callback state
    (which needs an alias to unpickle) is left out; tests of that global use the fixture itself.
    """
    import torch

    from vqgan_core import safe_torch_load

    obj = safe_torch_load(fix / "last_pl_legacy.ckpt")
    obj.pop("callbacks", None)
    sd = obj["state_dict"]
    for opt, names in zip(obj["optimizer_states"], taming_param_order(fix), strict=True):
        assert opt["param_groups"][0]["params"] == list(range(len(names)))
        opt["state"] = {i: {"step": torch.tensor(7.0), "exp_avg": torch.full_like(sd[n], i + 1.0),
                            "exp_avg_sq": torch.full_like(sd[n], (i + 1.0) ** 2)} for i, n in enumerate(names)}
    obj["global_step"] = 7
    torch.save(obj, out)
    return out
