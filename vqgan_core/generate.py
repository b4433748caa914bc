"""The VQGAN+CLIP optimisation loop as an object: models and config in, callbacks out, no globals.

One step: snap the latent to the codebook (straight-through, cached codebook norms), decode once for
the whole batch, cut out + augment all items in one call per CLIP guide, encode, classic spherical
loss (+ optional TV / init pull-back), backward, optimiser step, clamp to the codebook range.

Speed (fast path): frozen weights (no weight gradients; the classic script left the VQGAN trainable),
bf16 autocast + channels_last on CUDA (bf16 on CPUs with native bf16), device-side augmentation
parameters, no host sync in the loop except on logging steps, and on CUDA the loss forward + backward
replayed as one CUDA graph (``vqgan_core.cuda_graph``). ``precision="classic"`` keeps the
classic numerics (fp32 VQGAN, fp16 CLIP on CUDA) for comparisons.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random

import torch

from vqgan_core.augment import Augmenter
from vqgan_core.clip_guide import ClipEnsemble, ClipGuide
from vqgan_core.code_sampling import CodeSampler
from vqgan_core.compile_blocks import compile_blocks
from vqgan_core.cuda_graph import GraphedLossBackward
from vqgan_core.cutouts import Cutouts
from vqgan_core.edit_mask import keep_cells
from vqgan_core.gen_config import GenerationConfig
from vqgan_core.gen_latent import LatentState
from vqgan_core.gen_memory import MemoryRecovery
from vqgan_core.gen_runtime import resolve_precision, run_context
from vqgan_core.gen_types import GenerationCallbacks, GenerationResult
from vqgan_core.image_io import load_image01
from vqgan_core.image_losses import image_losses
from vqgan_core.init import encode_image01, fit_image
from vqgan_core.init import init_latent as make_init_latent
from vqgan_core.losses import clamp_with_grad, init_weight_factor, prompt_loss, tv_loss
from vqgan_core.optimizers import make_optimizer
from vqgan_core.prompts import parse_story
from vqgan_core.regions import RegionPrompt, RegionView, load_mask, region_banks
from vqgan_core.schedules import make_lr_schedule
from vqgan_core.seamless import is_seamless, random_roll, seamless_copy
from vqgan_core.targets import TargetBank

__all__ = ["GenerationCallbacks", "GenerationLoop", "GenerationResult", "resolve_precision", "run_generation"]

log = logging.getLogger(__name__)


def _stream_seed(seed: int, stream: int) -> int:
    """An independent generator seed per random stream, kept inside torch's 64-bit seed range."""
    return (seed * 7919 + stream) % 2**64


class GenerationLoop(LatentState, MemoryRecovery):
    """One VQGAN+CLIP run; call :meth:`step` yourself or :meth:`run` to completion.

    Args:
        vqgan: a ``vqgan_core.VQGAN`` (VQ or Gumbel), any device.
        clip: a guide, a list of guides / (guide, weight), or a :class:`ClipEnsemble` on the same device.
        config: the settings (``seed=None`` draws one; see ``result.config.seed``).
        callbacks: progress / preview / save / interrupt hooks.
        init_latent: ``[B or 1, C, h, w]`` latent to continue from (overrides ``config.init``).
        init_image: ``[1 or B, 3, H, W]`` in [0,1] for ``init="image"`` (else ``config.init_image`` is read).
        image_prompts: extra image prompts as tensors: ``(image01 [1,3,H,W], weight, stop)``.
        regions: prompts for parts of the image (:class:`~vqgan_core.regions.RegionPrompt`), besides
            ``config.region_prompts`` (mask files).
        edit_mask: inpainting: ``[H, W]`` pixel mask, 1 where the image may change (else ``config.edit_mask``).
        story_offset: steps already run before this loop (a continued run): story phrase sets go on from
            there instead of restarting.
        schedule_offset: likewise for the learning-rate schedule, which then spans ``schedule_offset +
            config.steps`` (a resumed run follows the schedule of one longer run; chained nodes keep their own).
    """

    def __init__(
        self,
        vqgan: torch.nn.Module,
        clip: ClipGuide | ClipEnsemble | list,
        config: GenerationConfig,
        callbacks: GenerationCallbacks | None = None,
        init_latent: torch.Tensor | None = None,
        init_image: torch.Tensor | None = None,
        image_prompts: list[tuple[torch.Tensor, float, float]] | None = None,
        regions: list[RegionPrompt] | None = None,
        edit_mask: torch.Tensor | None = None,
        story_offset: int = 0,
        schedule_offset: int = 0,
    ) -> None:
        self._story_offset, self._schedule_offset = int(story_offset), int(schedule_offset)
        with torch.inference_mode(False):  # ComfyUI calls nodes under inference_mode
            self._setup(vqgan, clip, config, callbacks, init_latent, init_image, image_prompts, regions or [])
            self._setup_edit_mask(edit_mask)

    def _setup_edit_mask(self, edit_mask: torch.Tensor | None) -> None:
        """Inpainting: the cells outside the mask keep the starting latent (``vqgan_core.edit_mask``)."""
        if edit_mask is None and self.config.edit_mask:
            edit_mask = load_mask(self.config.edit_mask)
        self._keep = self._z_keep = self._latent_keep = None
        if edit_mask is not None:
            h, w = self.z.shape[-2:]
            self._keep = keep_cells(edit_mask, h, w, self.vqgan.downsample_factor, self.device)
            self._z_keep, self._latent_keep = self.z.detach().clone(), self.latent()

    def _setup(self, vqgan, clip, config, callbacks, init_latent, init_image, image_prompts, regions) -> None:
        if config.seamless and not is_seamless(vqgan):
            vqgan = seamless_copy(vqgan)  # shares the weights: the caller's model keeps its padding
        elif is_seamless(vqgan) and not config.seamless:  # a seamless model (ComfyUI node): roll the views too
            config = config.replace(seamless=True)
        self.vqgan, self.clip = vqgan, ClipEnsemble.of(clip)
        if config.seed is None:
            config = config.replace(seed=random.SystemRandom().randrange(2**31))  # noqa: S311 - not crypto
        self.config, self.cb = config, callbacks or GenerationCallbacks()
        self.device = vqgan.codebook.device
        self.precision = resolve_precision(config.precision, self.device)
        self.step_index, self.losses = 0, []
        # the init pull-back decays over the whole run (a resumed one: from its original start)
        self._decay_start, self._decay_len = -self._schedule_offset, config.steps + self._schedule_offset
        c, B = config, config.batch_size
        cb = vqgan.codebook.detach().float()
        self._cb, self._cb_sq = cb, cb.pow(2).sum(1)
        self._zmin, self._zmax = cb.amin(0).view(1, -1, 1, 1), cb.amax(0).view(1, -1, 1, 1)
        # latent
        self._codes = CodeSampler(vqgan) if c.method == "codebook_sampling" else None
        gens = [torch.Generator().manual_seed((c.seed + b) % 2**64) for b in range(B)]
        logits = False  # whether z already holds logits (else a latent)
        if init_latent is not None:
            z = init_latent.detach().float().to(self.device)
            z = z.expand(B, -1, -1, -1).clone() if z.shape[0] == 1 else z.clone()
            if z.shape[0] != B:
                raise ValueError(f"init_latent batch {z.shape[0]} does not match batch_size {B}")
        elif self._codes is not None and c.init == "random":  # the notebook's start: random logits
            z, logits = self._codes.random_logits(B, *vqgan.latent_size(c.height, c.width), gens), True
        else:
            img = init_image
            if img is None and c.init == "image":
                if not c.init_image:
                    raise ValueError("init 'image' needs init_image (a file, URL or tensor)")
                img = load_image01(c.init_image)
            z = make_init_latent(vqgan, c.init, B, c.height, c.width, gens, img)
        if self._codes is not None and not logits:  # a latent: its codes start most likely
            z = self._codes.logits_from_latent(z)
        # the optimised tensor: the latent, or (codebook sampling) the logits over the codes
        self.z = z.to(self.device).requires_grad_(True)
        self.z_init = self.latent() if c.init_weight else None  # the pull-back's target is a latent
        self.height, self.width = z.shape[-2] * vqgan.downsample_factor, z.shape[-1] * vqgan.downsample_factor
        # randomness of cutouts/augmentations: a generator on the run device
        self.gen = torch.Generator(self.device).manual_seed(_stream_seed(c.seed, 17))
        self.cutouts = Cutouts(c.cutout_method, c.cutn, c.cut_pow, Augmenter(c.augments, c.aug_noise, c.aug_padding))
        # targets
        prompt_strings = c.batch_prompts if c.batch_prompts is not None else [c.prompts] * B
        schedules = [parse_story(p, c.change_prompts_every, c.image_prompts, c.noise_prompts) for p in prompt_strings]
        if any("^" in p for p in prompt_strings) and c.change_prompts_every <= 0:
            log.warning("prompts contain '^' phrase sets but change_prompts_every is 0: only the first set is used")
        if c.story_fade > 1 and c.change_prompts_every <= 0:
            log.warning("story_fade is %d but change_prompts_every is 0: there is no story to fade", c.story_fade)
        if c.clip_weights is not None:
            if len(c.clip_weights) != len(self.clip.guides):
                raise ValueError(f"{len(c.clip_weights)} clip_weights for {len(self.clip.guides)} CLIP models")
            self.clip = ClipEnsemble([(g, float(w)) for (g, _), w in zip(self.clip.guides, c.clip_weights, strict=True)])
        self._build_targets(schedules, image_prompts, regions)
        self.opt = make_optimizer(c.optimizer, [self.z], lr=c.lr)
        self.lr_schedule = make_lr_schedule(c.lr_schedule, max(c.steps + self._schedule_offset, 1))
        self._forward = torch.compile(self._loss) if c.compile == "full" else self._loss
        use_graph = self._use_graph()  # before any autocast use: capture needs autocast's cast cache off
        self._prepare_models()
        self._packs_at(0)  # encode prompts now, so errors surface before the first step
        self._graphed = GraphedLossBackward(self._graph_body, self.z, [self.gen]) if use_graph else None

    # -- setup -------------------------------------------------------------------------------------------
    def _build_targets(self, schedules: list, image_prompts: list | None, regions: list[RegionPrompt]) -> None:
        """One :class:`TargetBank` per view of the image: the whole image (global prompts) and each region."""
        c, B = self.config, self.config.batch_size
        regions = [*(RegionPrompt(load_mask(m), p) for m, p in (c.region_prompts or [])), *regions]
        has_global = image_prompts or not all(s.at(0).is_empty() for s in schedules)
        self.targets = None  # the global bank (None when only regions have prompts)
        self._banks: list[tuple[RegionView | None, TargetBank]] = []
        if has_global or not regions:
            self.targets = TargetBank(self.clip, schedules, self._encode_image_prompt, load_image01, image_prompts,
                                      fade=c.story_fade)
            self._banks.append((None, self.targets))
        self._banks += region_banks(regions, self.clip, (self.height, self.width), self.device, B,
                                    c.change_prompts_every, self._encode_image_prompt, fade=c.story_fade)

    def _packs_at(self, step: int) -> tuple[tuple, list]:
        """(cache key, packed targets of every bank) at ``step`` (of the story: after ``story_offset``)."""
        step += self._story_offset
        return tuple(b.key(step) for _, b in self._banks), [b.at(step) for _, b in self._banks]

    @property
    def cudnn_benchmark(self) -> bool:
        """Whether cuDNN times its algorithms in this run: ``cudnn_benchmark`` if set, else on for CUDA unless
        deterministic (not on ROCm, whose MIOpen search is exhaustive and slow)."""
        c = self.config
        if c.cudnn_benchmark is not None:
            return bool(c.cudnn_benchmark) and not c.deterministic
        return self.device.type == "cuda" and torch.version.hip is None and not c.deterministic

    def _use_graph(self) -> bool:
        """Whether steps replay a CUDA graph: ``cuda_graph`` if set, else on for CUDA when nothing forbids it."""
        c = self.config
        bad = self.cutouts.augmenter.not_capturable if self.cutouts.augmenter is not None else []
        use_graph = c.cuda_graph if c.cuda_graph is not None else (
            self.device.type == "cuda" and not c.deterministic and not bad)
        if use_graph and bad:
            raise ValueError(f"cuda_graph=True cannot capture augmentation(s) {', '.join(bad)} (host synchronisation); "
                             "leave cuda_graph unset or False, or drop them")
        if use_graph and c.deterministic:
            # measured on an H200: a 30-step demo run with both did not finish in 60 s
            raise ValueError("cuda_graph=True and deterministic=True cannot be combined; deterministic runs eagerly "
                             "(leave cuda_graph unset or False)")
        if use_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device; this run is on {self.device}")
        if use_graph and not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
            log.warning("this torch %s cannot capture custom generators in CUDA graphs; running without", torch.__version__)
            use_graph = False
        self._cast_cache = not use_graph
        return use_graph

    def _prepare_models(self) -> None:
        cl = self.config.channels_last
        self._channels_last = bool(cl or (cl is None and self.device.type == "cuda"))
        self._dec: torch.nn.Module | None = None
        self._clip_models: list[torch.nn.Module | None] = [None] * len(self.clip.guides)
        blocks, recompute = self.config.compile == "blocks", bool(self.config.checkpoint_decoder)
        self._recomputing = self._host_freed = False
        if self.precision in ("bf16", "fp16") or blocks or recompute:  # private frozen copies: no casts per step
            self._make_private_decoder()
            if recompute:
                self._recompute_decoder()
            if self.precision in ("bf16", "fp16"):
                self._clip_models = [g.lowp_model(self._low_dtype) for g, _ in self.clip.guides]
        # The caller's VQGAN (used when no private copy exists) is converted by run() and handed back after.
        self._convert_vqgan = self._channels_last and self._dec is None
        if self.precision == "classic" and self.device.type == "cuda":
            # OpenAI clip.load(jit=False) on CUDA gives fp16 weights; a cached copy leaves the caller's guide intact
            self._clip_models = [g.lowp_model(torch.float16) for g, _ in self.clip.guides]
        if blocks:  # compiled copies of their own: the guides' cached copies must stay plain for other runs
            self._clip_models = [copy.deepcopy(m if m is not None else g.model).eval().requires_grad_(False)
                                 for m, (g, _) in zip(self._clip_models, self.clip.guides, strict=True)]
            n = sum(compile_blocks(m) for m in [self._dec, *self._clip_models])
            log.info("torch.compile: %d blocks (compiled on first use)", n)

    @property
    def story_offset(self) -> int:
        """Steps run before this loop (a continued run)."""
        return self._story_offset

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._low_dtype is not None:
            # CUDA graph capture forbids autocast's weight-cast cache (the low-precision copies need none)
            return torch.autocast(self.device.type, dtype=self._low_dtype, cache_enabled=self._cast_cache)
        return contextlib.nullcontext()

    def _encode_image_prompt(self, guide: ClipGuide, img01: torch.Tensor,
                             size: tuple[int, int] | None = None) -> torch.Tensor:
        """Image prompt -> embeddings, seen like the image is: fitted to ``size`` (default: the image), cut out."""
        img = fit_image(img01, *(size or (self.height, self.width))).to(self.device)
        gen = torch.Generator(self.device).manual_seed(_stream_seed(self.config.seed, 23))
        with torch.no_grad(), self._autocast():
            return guide.encode_image(self.cutouts(img, guide.image_size, gen))

    def encode_images(self, img01: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` images in [0,1] -> quantised latent ``[B,C,h,w]`` (fp32, on the run device)."""
        with torch.inference_mode(False):
            return encode_image01(self.vqgan, img01)

    # -- the step ----------------------------------------------------------------------------------------
    def render(self, z: torch.Tensor) -> torch.Tensor:
        """The optimised tensor -> image in [0,1] (clamp keeps gradients that pull back into range). Codebook
        sampling draws the codes from the run's generator: a call outside the loop moves its random stream on."""
        return self._render(z)[0]

    def _render(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, decoded latent)``; codebook sampling draws the codes (from the run's generator)."""
        if self._codes is None:
            z_q, _ = self.quantize(z)
        else:
            z_q, _ = self._codes.sample(z, self.gen)
            if self._keep is not None:  # inpainting: the kept cells show their code, never a draw
                z_q = torch.where(self._keep, self._latent_keep, z_q)
        if self._channels_last:
            z_q = z_q.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.vqgan.decode(z_q) if self._dec is None else self._dec(z_q)
        return clamp_with_grad(out.float().add(1).div(2), 0.0, 1.0), z_q

    def _loss(self, z: torch.Tensor, packs: list, init_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
        c, B = self.config, z.shape[0]
        img, z_q = self._render(z)
        per_item = torch.zeros(B, device=z.device)
        for (view, _), bank_packs in zip(self._banks, packs, strict=True):
            if view is not None:
                seen = view(img)
            else:  # a tileable image is judged across its edges too
                seen = random_roll(img, self.gen) if c.seamless else img
            for (guide, gw), tg, model in zip(self.clip.guides, bank_packs, self._clip_models, strict=True):
                cuts = self.cutouts(seen, guide.image_size, self.gen)
                with self._autocast():
                    emb = guide.encode_image(cuts, model)
                per_item = per_item + gw * prompt_loss(emb.view(B, c.cutn, -1), tg.embeds, tg.weights, tg.stops)
        if c.tv_weight:
            per_item = per_item + c.tv_weight * tv_loss(img, circular=c.seamless)  # tiles: across the edges too
        if c.image_losses:
            per_item = per_item + image_losses(img, c.image_losses)
        if self.z_init is not None:  # (codebook sampling: the drawn latent, gradient through the expected one)
            mse = ((z if self._codes is None else z_q.float()) - self.z_init).pow(2).flatten(1).mean(1)
            per_item = per_item + c.init_weight * init_factor * mse
        return per_item.sum(), img

    def _graph_body(self, packs: list, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(self.z, packs, factor)

    def _loss_and_grad(self, i: int, factor: float,
                       rng_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and image of the current latent; ``z.grad`` holds the gradient afterwards.

        ``rng_state``: the run generator's state before this step, taken while a graph is in use (a failed
        capture leaves the generator in capture mode: the step goes on with a fresh one in that state).
        """
        key, packs = self._packs_at(i)
        if self._graphed is not None:
            try:
                return self._graphed(key, packs, self._graphed.scalar("init_factor", factor))
            except torch.OutOfMemoryError:
                raise  # not a capture problem: the eager step would need the same memory
            except RuntimeError as e:  # an op that cannot be captured: keep the run alive, eagerly
                if isinstance(e.__context__, torch.OutOfMemoryError):  # ending the failed capture raised anew
                    raise e.__context__ from None
                log.warning("CUDA graph capture failed (%s); continuing without CUDA graphs", str(e).splitlines()[0])
                self._graphed = None
                self._fresh_generator(rng_state)
                torch.cuda.synchronize(self.device)
        self.opt.zero_grad(set_to_none=True)
        loss, img = self._forward(self.z, packs, factor)
        loss.backward()
        return loss.detach(), img.detach()

    @property
    def graphed(self) -> bool:
        """True while steps replay a CUDA graph (False before the first capture or without CUDA graphs)."""
        return self._graphed is not None and self._graphed.captures > 0

    def step(self) -> torch.Tensor:
        """One optimisation step; returns the (device) loss of the image before the update."""
        c, i = self.config, self.step_index
        for g in self.opt.param_groups:
            g["lr"] = c.lr * self.lr_schedule.factor(i + self._schedule_offset)
        factor = 0.0
        if self.z_init is not None:  # the pull-back decays from the start, or from the last set_latent
            factor = init_weight_factor(i - self._decay_start, self._decay_len, c.init_weight_decay)
        loss, img = self._loss_and_grad_fitting(i, factor)
        wants_img = (c.save_every and i % c.save_every == 0 and self.cb.save) or (
            c.preview_every and i % c.preview_every == 0 and self.cb.preview
        )
        if wants_img:  # the run's image at this step (codebook sampling: the most likely codes, not this draw)
            shown = img.detach().float().cpu() if self._codes is None else self.decode(self.latent())[0]
            if c.save_every and i % c.save_every == 0 and self.cb.save:
                self.cb.save(i, shown)
            if c.preview_every and i % c.preview_every == 0 and self.cb.preview:
                self.cb.preview(i, shown)
        self.opt.step()
        with torch.no_grad():
            if c.clamp_latent and self._codes is None:
                self.z.copy_(torch.maximum(torch.minimum(self.z, self._zmax), self._zmin))
            if self._keep is not None:
                self.z.copy_(torch.where(self._keep, self._z_keep, self.z))
        self.step_index += 1
        return loss.detach()

    # -- the run -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [B,3,H,W] float32 CPU in [0,1], code indices)`` of a latent, as the run renders it."""
        z_q, idx = self.quantize(z.detach().to(self.device))
        with self._autocast():
            img = (self.vqgan.decode(z_q) if self._dec is None else self._dec(z_q)).float().add(1).div(2).clamp(0, 1)
        return img.cpu(), idx

    def result(self, interrupted: bool = False) -> GenerationResult:
        """Decode the current latent into the final images."""
        z = self.latent()
        img, idx = self.decode(z)
        return GenerationResult(img, z, idx, self.config, list(self.losses),
                                self.step_index, interrupted)

    def run(self, max_steps: int | None = None) -> GenerationResult:
        """Run the remaining steps (at most ``max_steps`` of them) with callbacks, then decode.

        The weights' ``requires_grad``/modes and the caller's VQGAN memory format are restored afterwards,
        so ``run`` can be called again to continue (the zoom animation runs frame by frame this way).
        """
        c, interrupted = self.config, False
        end = c.steps if max_steps is None else min(c.steps, self.step_index + max_steps)
        mods = [self.vqgan] + [g.model for g, _ in self.clip.guides]
        converted = self._convert_vqgan  # (an out-of-memory switch to a private decoder clears the flag)
        if converted:
            self.vqgan.to(memory_format=torch.channels_last)
        try:
            with run_context(mods, c.deterministic, self.cudnn_benchmark):
                while self.step_index < end:
                    if self.cb.should_stop is not None and self.cb.should_stop():
                        interrupted = True
                        break
                    i = self.step_index
                    loss = self.step()
                    value = None
                    # the cadence counts the whole run's steps, so a resumed plateau schedule sees the same losses
                    on_cadence = bool(c.log_every) and (i + self._schedule_offset) % c.log_every == 0
                    if on_cadence or self.step_index == c.steps:
                        value = float(loss)  # the only host sync of the loop
                        self.losses.append((i, value))
                        if on_cadence:  # (a part's last step is no check of the whole run's)
                            self.lr_schedule.observe(value)
                    if self.cb.progress is not None:
                        self.cb.progress(self.step_index, c.steps, value)
                return self.result(interrupted)
        finally:
            if converted:  # hand the caller's (possibly cached, shared) model back unchanged
                self.vqgan.to(memory_format=torch.contiguous_format)


def run_generation(
    vqgan: torch.nn.Module,
    clip: ClipGuide | ClipEnsemble | list,
    config: GenerationConfig,
    callbacks: GenerationCallbacks | None = None,
    **kwargs,
) -> GenerationResult:
    """Convenience: ``GenerationLoop(vqgan, clip, config, callbacks, **kwargs).run()``."""
    return GenerationLoop(vqgan, clip, config, callbacks, **kwargs).run()
