"""A ``GenerationConfig`` as composed parts: the latent, the loss terms and the optimiser spec.

Why: the config (and so the CLI and the one-node Generate) and a hand-wired graph describe the same run;
building the parts here makes them the same run, and a test holds both to the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..clip.guide import ClipEnsemble, ClipGuide
from ..latents.code_sampling import CodeSampler
from ..latents.init import init_latent as make_init_latent
from ..media.image_io import load_image01, load_mask
from ..objective.prompts import parse_story
from ..objective.regions import RegionPrompt
from ..vqgan.seamless import is_seamless, seamless_copy
from .clip_loss import ClipLoss, Views
from .config import GenerationConfig
from .latent_param import LatentParam
from .optim_spec import OptimizerSpec
from .terms import ImageLoss, InitLoss, LossTerm, SumLoss, TVLoss

__all__ = ["Parts", "parts_from_config", "start_latent", "views_of"]


@dataclass
class Parts:
    """The parts of one run: ``Stepper(p.vqgan, p.latent, p.loss, p.optimizer, seed=..., ...)``. ``vqgan`` is the
    given model, or its seamless copy (shared weights) for a tiling run."""

    vqgan: torch.nn.Module
    latent: LatentParam
    loss: LossTerm
    optimizer: OptimizerSpec


def views_of(config: GenerationConfig) -> Views:
    """What CLIP sees, from the config's cutout and augmentation settings."""
    c = config
    return Views(c.cutout_method, c.cutn, c.cut_pow, tuple(c.augments), c.aug_noise, c.aug_padding)


def start_latent(vqgan: torch.nn.Module, config: GenerationConfig, init_latent: torch.Tensor | None = None,
                 init_image: torch.Tensor | None = None,
                 edit_mask: torch.Tensor | None = None) -> LatentParam:
    """The run's latent as the config starts it (item ``b`` draws from seed ``seed + b``)."""
    c, B = config, config.batch_size
    gens = [torch.Generator().manual_seed((c.seed + b) % 2**64) for b in range(B)]
    if edit_mask is None and c.edit_mask:
        edit_mask = load_mask(c.edit_mask)
    kw = {"method": c.method, "edit_mask": edit_mask, "clamp": c.clamp_latent}
    if init_latent is not None:
        z = init_latent.detach().float()
        z = z.expand(B, -1, -1, -1) if z.shape[0] == 1 else z
        if z.shape[0] != B:
            raise ValueError(f"init_latent batch {z.shape[0]} does not match batch_size {B}")
        return LatentParam(vqgan, z, **kw)
    if c.method == "codebook_sampling" and c.init == "random":  # the notebook's start: random logits
        logits = CodeSampler(vqgan).random_logits(B, *vqgan.latent_size(c.height, c.width), gens)
        return LatentParam(vqgan, None, logits=logits, **kw)
    img = init_image
    if img is None and c.init == "image":
        if not c.init_image:
            raise ValueError("init 'image' needs init_image (a file, URL or tensor)")
        img = load_image01(c.init_image)
    return LatentParam(vqgan, make_init_latent(vqgan, c.init, B, c.height, c.width, gens, img), **kw)


def feed_forward_start(vqgan: torch.nn.Module, clip: ClipEnsemble, config: GenerationConfig, prompts: list[str],
                       init_image: torch.Tensor | None = None) -> torch.Tensor:
    """The start latent ``config.feed_forward`` gives for the prompts (each item's first phrase set)."""
    from ..feedforward.infer import feed_forward_latent, pick_guide
    from ..feedforward.io import FeedForwardError, load_feed_forward

    c = config
    if c.init_image or init_image is not None or c.init != "random":
        raise ValueError(f"feed_forward and init {c.init!r}{' / init_image' if c.init_image else ''} are two "
                         "starts; give one")
    net = load_feed_forward(c.feed_forward, vqgan.codebook.device, vqgan)
    grid = vqgan.latent_size(c.height, c.width)
    if tuple(grid) != tuple(net.config.grid):
        f = vqgan.downsample_factor
        gh, gw = net.config.grid
        raise FeedForwardError(f"{c.feed_forward}: the feed-forward model makes {gw}x{gh}-code latents ({gw * f}x"
                               f"{gh * f} pixels with this VQGAN); this run is {c.width}x{c.height}")
    strings = prompts * c.batch_size if len(prompts) == 1 else prompts
    first = [p.split("^")[0] for p in strings]
    return feed_forward_latent(net, vqgan, pick_guide(net, [g for g, _ in clip.guides]), first, seed=c.seed)


def parts_from_config(vqgan: torch.nn.Module, clip: ClipGuide | ClipEnsemble | list, config: GenerationConfig, *,
                      init_latent: torch.Tensor | None = None, init_image: torch.Tensor | None = None,
                      image_prompts: list[tuple[torch.Tensor, float, float]] | None = None,
                      regions: list[RegionPrompt] | None = None, edit_mask: torch.Tensor | None = None) -> Parts:
    """The parts of the run ``config`` describes (the arguments as ``GenerationLoop``'s). ``config.seed`` must be set."""
    c = config
    if c.seed is None:
        raise ValueError("parts_from_config needs a seed (config.replace(seed=...))")
    ens = ClipEnsemble.of(clip)
    if c.clip_weights is not None:
        if len(c.clip_weights) != len(ens.guides):
            raise ValueError(f"{len(c.clip_weights)} clip_weights for {len(ens.guides)} CLIP models")
        ens = ClipEnsemble([(g, float(w)) for (g, _), w in zip(ens.guides, c.clip_weights, strict=True)])
    views = views_of(c)
    strings = c.batch_prompts if c.batch_prompts is not None else c.prompts
    story = {"change_every": c.change_prompts_every, "fade": c.story_fade, "views": views}
    regions = [*(RegionPrompt(load_mask(m), p) for m, p in (c.region_prompts or [])), *(regions or [])]
    per_item = [strings] if isinstance(strings, str) else list(strings)
    has_global = image_prompts or not all(
        parse_story(p, c.change_prompts_every, c.image_prompts, c.noise_prompts).at(0).is_empty() for p in per_item)
    terms: list[LossTerm] = []
    if has_global or not regions:
        terms.append(ClipLoss(ens, strings, image_prompts=c.image_prompts, image_tensors=image_prompts or (),
                              noise_prompts=c.noise_prompts, **story))
    for k, r in enumerate(regions, 1):
        try:
            terms.append(ClipLoss(ens, r.prompts, image_tensors=r.image_prompts, region=r.mask,
                                  label=f"region {k} of {len(regions)}", **story))
        except ValueError as e:
            raise ValueError(f"region {k} of {len(regions)}: {e}") from None
    if c.tv_weight:
        terms.append(TVLoss(c.tv_weight))
    if c.image_losses:  # one sum, added as one term (the classic order of additions)
        terms.append(SumLoss([ImageLoss(n, w, c.image_losses_from) for n, w in c.image_losses.items()]))
    if c.init_weight:
        terms.append(InitLoss(c.init_weight, c.init_weight_decay))
    if c.seamless and not is_seamless(vqgan):
        vqgan = seamless_copy(vqgan)  # shares the weights: the caller's model keeps its padding
    if c.feed_forward and init_latent is None:
        init_latent = feed_forward_start(vqgan, ens, c, per_item, init_image)
    latent = start_latent(vqgan, c, init_latent, init_image, edit_mask)
    return Parts(vqgan, latent, SumLoss(terms), OptimizerSpec(c.optimizer, c.lr, c.lr_schedule))
