"""The offline demo models (name ``demo``) and the generation settings that make them work.

Why: pretrained VQGAN/CLIP weights cannot be downloaded everywhere, so the package ships four tiny models
trained by this project's own code on the synthetic "shapes world" dataset (``python -m training.shapes``):

* ``assets/demo/vqgan.safetensors``: an f4 VQGAN (256 codes, GroupNorm with 8 groups, stored in fp16) from
  ``python -m training`` (config ``training/configs/demo_vqgan.yaml``).
* ``assets/demo/clip/`` (``demo``): an open_clip folder (``open_clip_config.json``, ``open_clip_model.safetensors``
  in fp16, ``bpe_vocab.txt.gz``) from ``python -m training.clip_train`` (``training/configs/demo_clip.json``): a
  small ViT that knows the colours.
* ``assets/demo/clip_robust/`` (``demo-robust``): a small-ResNet open_clip folder trained adversarially
  (``training/configs/demo_clip_robust.json``), then fine-tuned with oblongs, rounded squares and ellipses as
  negatives (``training/configs/demo_clip_robust_nearmiss.json``), that knows the shapes. The demo guide is the
  pair (``DEMO_GUIDE``).
* ``assets/demo/feed_forward.safetensors``: a feed-forward text -> latent network for the VQGAN and the colour
  CLIP (fp16) from ``python -m training.feed_forward`` (config ``training/configs/ff_demo_shapes.yaml``).

Reproduce (commands and measured numbers in ``train_info.json`` and the configs' headers)::

    python -m training.shapes --out data/shapes_v1 --size-law radius --n-train 6000 --n-val 600 --seed 0
    python -m training.shapes --out data/shapes --n-train 6000 --n-val 600 --seed 0
    python -m training.clip_train --config training/configs/demo_clip.json --data data/shapes_v1 --out vqgan_core/hub/assets/demo/clip
    python -m training.clip_train --config training/configs/demo_clip_robust.json --data data/shapes --out runs/clip_robust
    python -m training.clip_train --config training/configs/demo_clip_robust_nearmiss.json --data data/shapes --out vqgan_core/hub/assets/demo/clip_robust
    OMP_NUM_THREADS=1 python -m training --config training/configs/demo_vqgan.yaml --data data/shapes_v1 --out runs/demo_vqgan
    python -m training export runs/demo_vqgan runs/demo_vqgan.safetensors
    python -m vqgan_core convert runs/demo_vqgan.safetensors vqgan_core/hub/assets/demo/vqgan.safetensors --dtype float16
    python -m training.feed_forward --config training/configs/ff_demo_shapes.yaml --data data/shapes_v1 --out runs/ff_demo
    cp runs/ff_demo/feed_forward.safetensors vqgan_core/hub/assets/demo/feed_forward.safetensors

What they draw: ``python bench/demo_quality.py`` (48 default runs judged by pixels; numbers in the README).

They only know captions like "a red circle on a blue background" (colours: red, orange, yellow, green, cyan,
blue, purple, white; shapes: circle, square, triangle) at 64x64 pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .assets import DEMO_DIR

NAME = "demo"
ROBUST_NAME = "demo-robust"
#: The demo's guide: the colour CLIP ``demo`` and the adversarially trained shape CLIP ``demo-robust``, with their
#: loss weights. ``--clip demo`` (CLI, ``load_clip_ensemble``) and the Load CLIP Guide node's ``demo`` mean this pair.
DEMO_GUIDE: tuple[tuple[str, float], ...] = ((NAME, 1.0), (ROBUST_NAME, 1.0))
_REPRODUCE = "see README 'Offline demo models' (python -m training.shapes / training.clip_train / training)"


def _existing(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"demo asset missing: {path}. The package data was not installed; reproduce it: "
                                f"{_REPRODUCE}")
    return path


def is_demo(name: object) -> bool:
    """True when a model name/path argument asks for the shipped demo model."""
    return isinstance(name, str) and name == NAME


def is_demo_clip(name: object) -> bool:
    """True for the names of the two shipped demo CLIP models (``demo``, ``demo-robust``)."""
    return isinstance(name, str) and name in (NAME, ROBUST_NAME)


def vqgan_path() -> Path:
    """The demo VQGAN's safetensors file (config in its metadata; ``load_vqgan("demo")`` uses it)."""
    return _existing(DEMO_DIR / "vqgan.safetensors")


def feed_forward_path() -> Path:
    """The demo feed-forward network (text -> demo VQGAN latent in one pass; ``load_feed_forward("demo")``)."""
    return _existing(DEMO_DIR / "feed_forward.safetensors")


def clip_dir() -> Path:
    """The demo CLIP folder; ``open_clip.create_model("local-dir:" + str(clip_dir()))`` loads it.

    Its tokenizer is ``SimpleTokenizer(bpe_path=clip_dir() / "bpe_vocab.txt.gz", context_length=16)``
    (``vqgan_core.clip.guide.load_clip("demo")`` builds both); ``open_clip.get_tokenizer("local-dir:...")``
    would silently return the standard 49k-token tokenizer, whose ids do not fit this model.
    """
    return _existing(DEMO_DIR / "clip")


def robust_clip_dir() -> Path:
    """The demo's shape CLIP (``demo-robust``): a small-ResNet open_clip folder trained adversarially.

    Why a second model: the ViT ``demo`` CLIP judges colours well but picks shapes by their area; this one tells
    circle, square and triangle apart at any size, and its adversarial training (PGD in an L2 ball,
    ``training.adversarial``) makes its gradients draw outlines instead of patchwork the optimiser can fool it with.
    """
    return _existing(DEMO_DIR / "clip_robust")


def clip_folder(name: str) -> Path:
    """The folder of demo CLIP ``name`` (``demo`` or ``demo-robust``)."""
    return robust_clip_dir() if name == ROBUST_NAME else clip_dir()


def preset() -> dict[str, Any]:
    """Generation settings tuned for the demo models (keys are ``GenerationConfig`` fields).

    Measured on a 2-core CPU: see tests/e2e/test_demo_e2e.py and bench/demo_quality.py for what these settings
    achieve.
    """
    return dict(_PRESET)


demo_preset = preset  # the public name (``from vqgan_core import demo_preset``)


_PRESET: dict[str, Any] = {
    "width": 64,
    "height": 64,
    "steps": 150,
    "cutout_method": "mixed",  # half whole-image views, half random crops: 8/8 vs 6-7/8 pixel-test passes
    "cutn": 16,
    "augments": ["Hf", "Af", "Ji"],
    "aug_padding": "border",
    "aug_noise": 0.05,
    "tv_weight": 20.0,  # smoothness: one compact blob instead of scattered patches (0 -> 3 -> 20 tried)
    "lr": 0.35,  # bigger latent steps leave the first patchwork: all four checks 48 % -> 62 % (0.05/0.1/0.2/0.5 tried)
    # one flat outer frame once the layout has settled: shapes stop touching the edges (circles and squares, all
    # four 44 % -> 69 % on 32 runs; weight 2/6/8 and start 0/0.5 tried, from the start the frame took the fg colour)
    "image_losses": {"plain_border": 4.0},
    "image_losses_from": 0.33,
    "precision": "fp32",
}
