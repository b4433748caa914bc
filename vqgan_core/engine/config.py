"""``GenerationConfig``: every setting of a VQGAN+CLIP run, JSON-serialisable for PNG metadata.

A PNG written by the CLI carries this config (with the resolved seed and model specs), so
``generate --from-png out.png`` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..latents.code_sampling import METHODS
from ..latents.init import NOISE_IMAGES
from ..objective.image_losses import parse_image_losses
from ..objective.prompts import PROMPT_HELP
from ..util.finite import check_finite
from ..util.settings import check_settings, reject_unknown_keys, setting
from ..views.augment import DEFAULT_AUGMENTS, parse_augments
from ..views.cutouts import cutout_names
from .optim_spec import SCHEDULERS
from .optimizers import optimizer_names
from .terms import INIT_DECAYS

__all__ = ["COMPILE_MODES", "METHODS", "PRECISIONS", "SEED_MAX", "GenerationConfig"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "classic")
COMPILE_MODES = ("off", "blocks", "full")
SEED_MAX = 2**32 - 1  # the engine derives generator seeds as seed * 7919 + k; ComfyUI's seed widgets stop here


@dataclass
class GenerationConfig:
    """Settings of one generation run (defaults = the classic nerdyrodent script, except size/steps).

    Each field is declared with :func:`~vqgan_core.util.settings.setting`: its help, range and choices are also the
    command line's flags and the ComfyUI widgets (generated from here, checked for drift by the tests).
    """

    # prompts
    prompts: str = setting("", help=PROMPT_HELP, flag=False, group="prompts", widget="prompt",
                           ui_default="a red circle on a blue background")
    image_prompts: str = setting("", help="Images as targets: 'path_or_url:weight:stop|...'.", group="prompts")
    noise_prompts: str = setting("", help="Random CLIP directions as targets: 'seed:weight:stop|...'.",
                                 group="prompts")
    batch_prompts: list[str] | None = setting(None, help="One prompt string per batch item (instead of the prompt).",
                                              cli={"nargs": "+"}, group="prompts")
    change_prompts_every: int = setting(0, min=0, max=100000, step=1, aliases=("-cpe",), group="prompts",
                                        help="Story mode: with '^' in the prompt, switch to the next phrase set "
                                        "every N steps, cycling (the classic -cpe). 0: the nodes share their steps "
                                        "evenly among the sets; the command line keeps the first set (classic).")
    story_fade: int = setting(0, min=0, max=100000, step=1, group="prompts",
                              help="Story mode: blend into each new phrase set over N steps instead of switching "
                              "at once (at most change_prompts_every). 0 = switch at once (classic).")
    region_prompts: list[list[str]] | None = setting(
        None, flag="--region", group="prompts", cli={"nargs": 2, "action": "append", "metavar": ("MASK", "PROMPTS")},
        help="Prompts for part of the image: a mask image (white or opaque = the region) and prompts in the same "
        "grammar; repeat for several regions.")
    # image and run
    width: int = setting(256, min=8, max=16384, step=8, flag=False, help="Image width in pixels: a multiple of the "
                         "VQGAN's downsampling factor, 16 for most models (the nodes round down; CPU: 64-256).")
    height: int = setting(256, min=8, max=16384, step=8, flag=False, help="Image height in pixels: a multiple of "
                          "the VQGAN's downsampling factor (the nodes round down).")
    steps: int = setting(300, min=0, max=100000, step=1, ui_default=50, group="image and run",
                         help="Optimisation steps (classic 300-500 for a finished image; the demo: 150).")
    seed: int | None = setting(None, min=0, max=SEED_MAX, step=1, ui_default=0, group="image and run",
                               help="Seed of the starting codes, cutouts and augmentations: same seed, same image "
                               "(none: drawn at random and recorded with the image).")
    batch_size: int = setting(1, min=1, max=64, step=1, flag="--batch", group="image and run",
                              help="Images optimised together in one batched step (item i uses seed + i).")
    seamless: bool = setting(False, group="image and run", help="A tileable image (no seams when repeated side by "
                             "side): the VQGAN pads circularly and the views roll.")
    # initialisation
    init: str = setting("random", choices=lambda: ("random", "image", *NOISE_IMAGES.names()), group="initialisation",
                        help="Starting latent: random codes, an init image, or a noise image (pixels, gradient, "
                        "perlin).")
    init_image: str | None = setting(None, group="initialisation", help="Image file or URL to start from "
                                     "(implies init 'image').")
    init_weight: float = setting(0.0, min=0.0, max=100.0, step=0.01, group="initialisation",
                                 help="Pull back towards the starting latent (keeps an init image's layout).")
    init_weight_decay: str = setting("classic", choices=INIT_DECAYS, group="initialisation",
                                     help="How the pull-back fades: classic (1/(2i+1)/2), linear, none.")
    feed_forward: str | None = setting(None, group="initialisation", help="Start from a feed-forward network's "
                                       "one-pass latent for the prompt (a file from python -m training.feed_forward, "
                                       "or 'demo'); with --steps 0 that one-pass image is the result.")
    edit_mask: str | None = setting(None, group="initialisation", help="Inpainting: a mask image; only its white / "
                                    "opaque part changes, the rest keeps the start (use with an init image).")
    # cutouts and augmentation
    cutout_method: str = setting("latest", choices=cutout_names, flag="--cutouts", group="cutouts, augmentation, loss",
                                 help="How crops are taken: latest (the classic script's mix of pooled views and crops), crops "
                                 "(random squares), mixed (half each).")
    cutn: int = setting(32, min=1, max=256, step=1, widget="cutouts", group="cutouts, augmentation, loss",
                        help="Crops of the image CLIP sees per step (more: steadier, slower; classic 32, CPU: 8-16).")
    cut_pow: float = setting(1.0, min=0.0, max=10.0, step=0.05, group="cutouts, augmentation, loss",
                             help="Crop size power: above 1 favours small crops (detail), below 1 large ones "
                             "(composition).")
    augments: list[str] = setting(default_factory=lambda: list(DEFAULT_AUGMENTS), widget="augmentations",
                                  group="cutouts, augmentation, loss",
                                  help="Comma-separated augmentation codes applied to the crops (Af affine, Pe "
                                  "perspective, Ji colour jitter, Er erasing, Sh sharpness, Gn noise, Ro rotation, Et elastic, Ts thin-plate, Cr "
                                  "crop, Re resized crop, Hf flip) or 'none'.")
    aug_noise: float = setting(0.1, min=0.0, max=1.0, step=0.01, group="cutouts, augmentation, loss",
                               help="Per-crop noise up to this strength (classic 0.1; 0 = none).")
    aug_padding: str = setting("zeros", choices=("zeros", "border", "reflection"),
                               group="cutouts, augmentation, loss",
                               help="What fills the borders that geometric augmentations reveal.")
    # loss
    tv_weight: float = setting(0.0, min=0.0, max=1000.0, step=0.001, group="cutouts, augmentation, loss",
                               help="Total-variation smoothing of the image.")
    image_losses: dict[str, float] | None = setting(
        None, group="cutouts, augmentation, loss", ui_default="",
        help="Extra image terms 'name:weight,...' (positive = more of it): symmetry, symmetry_vertical, saturation, "
        "brightness, contrast, smoothness, plain_border (one flat outer frame: the subject not cut by the edges). "
        "Empty = none.")
    image_losses_from: float = setting(0.0, min=0.0, max=1.0, step=0.01, group="cutouts, augmentation, loss",
                                       help="Fraction of the run before the image losses switch on (0: from the "
                                       "start). A layout prior such as plain_border applied at once can freeze the "
                                       "random start's layout; later it only tidies it (the demo: 0.33).")
    clip_weights: list[float] | None = setting(None, cli={"nargs": "+", "type": float}, group="models",
                                               help="Ensemble weights, one per CLIP guide (default 1 each).")
    # optimisation
    method: str = setting("z_quantize", choices=METHODS, group="optimisation",
                          help="z_quantize (classic): move a continuous latent, snapped to the nearest codes. "
                          "codebook_sampling (EleutherAI's notebook): learn which code each cell holds, drawing "
                          "codes every step; cleaner parts, more memory; try lr 0.3 with adamw.")
    optimizer: str = setting("adam", choices=optimizer_names, group="optimisation",
                             help="Optimiser of the latent: adam (classic), adamw, lion, radam, ... (torch.optim).")
    lr: float = setting(0.1, min=0.0001, max=10.0, step=0.001, group="optimisation",
                        help="Learning rate of the latent (classic 0.1).")
    lr_schedule: str = setting("constant", choices=SCHEDULERS.names, group="optimisation",
                               help="Learning rate over the steps: constant (classic), cosine (decays to 0.1x: finer "
                               "detail at the end), step (x0.1 after 75%, pixray), plateau (halves when the loss "
                               "stalls).")
    clamp_latent: bool = setting(True, flag="--no-clamp", group="optimisation",
                                 cli={"action": "store_const", "const": False},
                                 help="Clamp the latent to the codebook's per-channel range after each step (on unless "
                                 "switched off).")
    # speed / numerics
    precision: str = setting("auto", choices=PRECISIONS, group="speed and output",
                             help="auto (bf16 where fast, else fp32), fp32, bf16, fp16, classic (fp32 VQGAN + fp16 "
                             "CLIP on CUDA).")
    channels_last: bool | None = setting(None, group="speed and output",
                                         help="Channels-last memory layout (default: on for CUDA and bf16).")
    compile: str = setting("off", choices=COMPILE_MODES, group="speed and output",
                           cli={"nargs": "?", "const": "blocks"},
                           help="torch.compile: blocks (each decoder/CLIP block; the flag alone), full (the whole "
                           "step), off.")
    checkpoint_decoder: bool | None = setting(
        None, group="speed and output",
        help="Recompute the decoder's activations in backward: large images in little memory (about one more decoder "
        "pass per step, same image). Default: switched on when a step runs out of GPU memory; off: fail instead.")
    cuda_graph: bool | None = setting(None, group="speed and output", help="Replay each step's forward+backward as "
                                      "one CUDA graph (default: on for CUDA unless deterministic).")
    deterministic: bool = setting(False, group="speed and output",
                                  help="torch deterministic algorithms (CUDA: slower).")
    cudnn_benchmark: bool | None = setting(
        None, group="speed and output", help="Let cuDNN time its convolution algorithms on the first step (default: "
        "on for CUDA unless deterministic; the pick can vary between runs, so same-seed images may differ in the "
        "last bits on CUDA).")
    # reporting
    log_every: int = setting(10, min=0, max=100000, group="speed and output",
                             help="Read the loss (a device sync) every N steps.")
    save_every: int = setting(0, min=0, max=100000, group="speed and output",
                              help="Write the current image every N steps (0 = only the result).")
    preview_every: int = setting(0, min=0, max=10000, step=1, flag=False, ui_default=10,
                                 help="Show a preview every N steps (0 = none; decoding costs time).")
    # provenance (filled by the CLI; not used by the loop)
    vqgan: str | None = None
    clip: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool) or self.compile is None:  # settings of older versions: a flag
            self.compile = "blocks" if self.compile else "off"
        for w in self.clip_weights or []:
            check_finite(w, "clip_weights entry")
        check_settings(self)  # types, ranges and choices, from the field declarations above
        if self.story_fade and self.change_prompts_every and self.story_fade > self.change_prompts_every:
            raise ValueError(f"story_fade ({self.story_fade}) must be at most change_prompts_every "
                             f"({self.change_prompts_every}): a crossfade ends before the next change")
        if self.batch_prompts is not None and len(self.batch_prompts) != self.batch_size:
            raise ValueError(f"batch_prompts has {len(self.batch_prompts)} entries but batch_size is {self.batch_size}")
        for r in self.region_prompts or []:
            if not (isinstance(r, (list, tuple)) and len(r) == 2 and all(isinstance(v, str) for v in r)):
                raise ValueError(f"each region prompt is [mask file, prompts], got {r!r}")
        self.image_losses = parse_image_losses(self.image_losses) or None
        if isinstance(self.augments, str):
            self.augments = list(parse_augments(self.augments))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON types only)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Compact JSON for PNG text metadata."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationConfig:
        """Build from a dict; unknown keys are an error naming them (a typo never goes unnoticed)."""
        reject_unknown_keys(cls, d, "generation setting(s)")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> GenerationConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> GenerationConfig:
        """Copy with some fields changed (validated)."""
        return self.from_dict({**self.to_dict(), **changes})
