"""The VQGAN+CLIP optimisation loop of a whole ``GenerationConfig``: models and config in, callbacks out.

The run itself is made of the composable engine's parts (``vqgan_core.engine``), built from the config: the
latent parameterisation, the loss terms (CLIP per view, TV, image losses, init pull-back). One step: render
the latent (snap or draw codes), decode once for the whole batch, sum the loss terms (each CLIP term cuts
out + augments all items in one call per guide), backward, optimiser step, clamp to the codebook range.

Speed (fast path): frozen weights (no weight gradients), bf16 autocast + channels_last on CUDA (bf16 on CPUs
with native bf16), device-side augmentation parameters, no host sync in the loop except on logging steps,
and on CUDA the loss forward + backward replayed as one CUDA graph (``vqgan_core.engine.cuda_graph``).
``precision="classic"`` keeps the classic numerics (fp32 VQGAN, fp16 CLIP on CUDA) for comparisons.
"""

from __future__ import annotations

import copy
import logging
import random
from typing import Any

import torch

from ..clip.guide import ClipEnsemble, ClipGuide
from ..latents.init import encode_image01
from ..objective.losses import clamp_with_grad
from ..objective.regions import RegionPrompt, RegionView
from ..objective.targets import TargetBank
from ..util.finite import LastFinite, NonFiniteLossError, loss_error
from ..views.cutouts import Cutouts
from ..vqgan.compile_blocks import compile_blocks
from ..vqgan.seamless import is_seamless
from .callbacks import GenerationCallbacks, GenerationResult
from .config import GenerationConfig
from .cuda_graph import GraphedLossBackward
from .from_config import parts_from_config
from .oom import MemoryRecovery
from .optim_spec import ScheduleFactor
from .optimizers import make_optimizer
from .run_info import RunInfo, StepContext, restore_stream, stream_seed
from .runtime import resolve_precision, run_context
from .stepper import clip_terms, cpu_copy
from .terms import InitLoss

__all__ = ["GenerationCallbacks", "GenerationLoop", "GenerationResult", "resolve_precision", "run_generation"]

log = logging.getLogger(__name__)


class GenerationLoop(MemoryRecovery):
    """One VQGAN+CLIP run from a :class:`GenerationConfig`; call :meth:`step` yourself or :meth:`run` to completion.

    The run is made of the composable engine's parts, built from the config by
    ``vqgan_core.engine.from_config``: the latent (``self.param``), the loss terms (``self.objective``). This
    class adds what a whole config asks for around them: precision, compiled blocks, CUDA graphs, recovery from
    running out of memory, the learning-rate schedule, resumes and callbacks.

    Args:
        vqgan: a ``vqgan_core.VQGAN`` (VQ or Gumbel), any device.
        clip: a guide, a list of guides / (guide, weight), or a :class:`ClipEnsemble` on the same device.
        config: the settings (``seed=None`` draws one; see ``result.config.seed``).
        callbacks: progress / preview / save / interrupt hooks.
        init_latent: ``[B or 1, C, h, w]`` latent to continue from (overrides ``config.init``).
        init_image: ``[1 or B, 3, H, W]`` in [0,1] for ``init="image"`` (else ``config.init_image`` is read).
        image_prompts: extra image prompts as tensors: ``(image01 [1,3,H,W], weight, stop)``.
        regions: prompts for parts of the image (:class:`~vqgan_core.objective.regions.RegionPrompt`), besides
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
            self._setup(vqgan, clip, config, callbacks, init_latent, init_image, image_prompts, regions or [],
                        edit_mask)

    def _setup(self, vqgan, clip, config, callbacks, init_latent, init_image, image_prompts, regions,
               edit_mask) -> None:
        if is_seamless(vqgan) and not config.seamless:  # a seamless model (ComfyUI node): roll the views too
            config = config.replace(seamless=True)
        if config.seed is None:
            config = config.replace(seed=random.SystemRandom().randrange(2**31))  # noqa: S311 - not crypto
        c = config
        if c.story_fade > 1 and c.change_prompts_every <= 0:
            log.warning("story_fade is %d but change_prompts_every is 0: there is no story to fade", c.story_fade)
        parts = parts_from_config(vqgan, clip, c, init_latent=init_latent, init_image=init_image,
                                  image_prompts=image_prompts, regions=regions, edit_mask=edit_mask)
        self.vqgan, self.param, self.objective = parts.vqgan, parts.latent, parts.loss
        self._clip_terms = clip_terms(self.objective)
        self.clip = self._clip_terms[0].clip  # every CLIP term of a config shares its ensemble (with clip_weights)
        self._init_term = next((t for t in self.objective.leaves() if isinstance(t, InitLoss)), None)
        self.config, self.cb = config, callbacks or GenerationCallbacks()
        self.device = self.vqgan.codebook.device
        self.precision = resolve_precision(c.precision, self.device)
        self.step_index, self.losses = 0, []
        b, _, h, w = self.param.shape
        self.height, self.width = h * self.vqgan.downsample_factor, w * self.vqgan.downsample_factor
        # randomness of cutouts/augmentations: a generator on the run device
        self.gen = torch.Generator(self.device).manual_seed(stream_seed(c.seed, 17))
        self.opt = make_optimizer(c.optimizer, [self.z], lr=c.lr)
        # the schedule spans the whole run (a resumed one from its first start): a torch scheduler's multiplier
        self.lr_schedule = ScheduleFactor(c.lr_schedule, c.steps + self._schedule_offset)
        self.lr_schedule.advance(self._schedule_offset)
        self._forward = torch.compile(self._loss) if c.compile == "full" else self._loss
        use_graph = self._use_graph()  # before any autocast use: capture needs autocast's cast cache off
        self._prepare_models()
        self.run_info = RunInfo(self.vqgan, self.device, self.height, self.width, b, c.seed, self.param.latent(),
                                c.steps, seamless=c.seamless, low_dtype=self._low_dtype, cast_cache=self._cast_cache,
                                start_step=self._story_offset)
        self.objective.bind(self.run_info)  # encodes the prompts now, so errors surface before the first step
        for t in self._clip_terms:
            t.use_models(self._clip_models)
        if self._init_term is not None:  # the pull-back decays over the whole run (a resumed one: from its start)
            self._init_term.restart(self._story_offset - self._schedule_offset, c.steps + self._schedule_offset)
        self._graphed = GraphedLossBackward(self._graph_body, self.z, [self.gen]) if use_graph else None

    # -- the parts, as the loop's callers knew them ------------------------------------------------------------
    @property
    def z(self) -> torch.Tensor:
        """The optimised tensor: the latent, or (codebook sampling) the logits over the codes."""
        return self.param.z

    @property
    def z_init(self) -> torch.Tensor | None:
        """The init pull-back's target latent (None without ``init_weight``)."""
        return None if self._init_term is None else self._init_term.target

    @property
    def targets(self) -> TargetBank | None:
        """The whole image's targets (None when only regions have prompts)."""
        return next((t.bank for t in self._clip_terms if t.view is None), None)

    @property
    def _banks(self) -> list[tuple[RegionView | None, TargetBank]]:
        return [(t.view, t.bank) for t in self._clip_terms]

    @property
    def cutouts(self) -> Cutouts:
        """What CLIP sees of the image (every CLIP term of a config has the same views)."""
        return self._clip_terms[0].cutouts

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(B, C, h, w)`` of the run's latent (codebook sampling optimises ``(B, K, h, w)`` logits instead)."""
        return self.param.shape

    def latent(self) -> torch.Tensor:
        """The run's latent now (a copy): the optimised latent, or the most likely codes' vectors."""
        return self.param.latent()

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook entry per cell (fp32), straight-through gradient to ``z``."""
        return self.param.quantize(z)

    def continue_logits(self, logits: torch.Tensor) -> bool:
        """Codebook sampling: go on with a saved code distribution (``LatentParam.continue_logits``)."""
        return self.param.continue_logits(logits)

    def set_latent(self, z: torch.Tensor, reset_optimizer: bool = True, steps_ahead: int | None = None) -> None:
        """Continue from ``z`` (same shape): the classic zoom video re-encodes each frame this way.

        Copies in place, so a captured CUDA graph stays valid. The init pull-back (``init_weight``)
        targets the new latent and its decay starts again, over ``steps_ahead`` steps (default: the
        rest of the run); the optimiser starts afresh (Adam's moments belong to the old latent).
        """
        self.param.set_latent(z)
        if self._init_term is not None:
            self._init_term.retarget(self.param.latent())
            ahead = steps_ahead if steps_ahead is not None else self.config.steps - self.step_index
            self._init_term.restart(self.step_index + self._story_offset, ahead)
        if reset_optimizer:
            self.opt.state.clear()

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
        bad = sorted({code for t in self._clip_terms for code in t.not_capturable})
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
        return self._render_step(z)[:2]

    def _render_step(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_q, pull = self.param.render(self.gen, z)
        if self._channels_last:
            z_q = z_q.contiguous(memory_format=torch.channels_last)
        with self.run_info.autocast():
            out = self.vqgan.decode(z_q) if self._dec is None else self._dec(z_q)
        return clamp_with_grad(out.float().add(1).div(2), 0.0, 1.0), z_q, pull

    def _loss(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's loss (summed over the batch) and the image, for the optimised tensor ``z``."""
        img, z_q, pull = self._render_step(z)
        ctx = StepContext(self.step_index + self._story_offset, self.gen, z, z_q, pull, self.run_info)
        return self.objective(img, ctx).sum(), img

    def _graph_body(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(self.z)

    def _loss_and_grad(self, key: object, rng_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and image of the current latent; ``z.grad`` holds the gradient afterwards.

        ``rng_state``: the run generator's state before this step, taken while a graph is in use (a failed
        capture leaves the generator in capture mode: the step goes on with a fresh one in that state).
        """
        if self._graphed is not None:
            try:
                return self._graphed(key)
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
        loss, img = self._forward(self.z)
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
            g["lr"] = c.lr * self.lr_schedule.factor()
        key = self.objective.prepare(i + self._story_offset)  # this step's targets and pull-back factor
        loss, img = self._loss_and_grad_fitting(key)
        wants_img = (c.save_every and i % c.save_every == 0 and self.cb.save) or (
            c.preview_every and i % c.preview_every == 0 and self.cb.preview
        )
        if wants_img:  # the run's image at this step (codebook sampling: the most likely codes, not this draw)
            shown = img.detach().float().cpu() if self.param.method == "z_quantize" else self.decode(self.latent())[0]
            if c.save_every and i % c.save_every == 0 and self.cb.save:
                self.cb.save(i, shown)
            if c.preview_every and i % c.preview_every == 0 and self.cb.preview:
                self.cb.preview(i, shown)
        self.opt.step()
        self.lr_schedule.step()
        self.param.after_step()  # clamp to the codebook's range, restore kept cells
        self.step_index += 1
        return loss.detach()

    def _non_finite(self, value: float, step: int, watch: LastFinite) -> NonFiniteLossError:
        """The error for a loss of ``value`` at ``step``, carrying the result of the last finite latent."""
        err = loss_error(value, step, watch.step, _hints(self.config))
        err.result = self.result(interrupted=True, z=watch.latent)
        err.result.steps_done = watch.step
        return err

    # -- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What continues this run in another loop, node or session, from its parts' own state (copies on the
        CPU: a host such as ComfyUI's cache may keep it for long). The keys are ``vqgan_core.engine.run_state``'s file
        format: ``optimizer``, ``method``, ``shape``, ``steps`` (of the whole run), ``optimizer_state``, ``seed``,
        ``rng_device``, ``rng_state`` [, ``lr_schedule``, ``z_init``, ``logits``]."""
        c = self.config
        with torch.inference_mode(False):  # normal tensors: the next loop's optimiser updates them in place
            opt_state = cpu_copy(self.opt.state_dict())
        state = {"optimizer": c.optimizer, "method": c.method, "shape": tuple(self.z.shape),
                 "steps": self._story_offset + self.step_index, "optimizer_state": opt_state, "seed": c.seed,
                 "rng_device": self.gen.device.type, "rng_state": self.gen.get_state()}
        # the torch scheduler's state and the multiplier (plateau: its best loss and patience count too)
        state["lr_schedule"] = {"name": c.lr_schedule.lower(), "state": cpu_copy(self.lr_schedule.state_dict())}
        if self._init_term is not None:  # the init pull-back's target (the run's start, not this loop's)
            state["z_init"] = self._init_term.state_dict()["target"]
        logits = self.param.state_dict().get("logits")
        if logits is not None:  # codebook sampling: the latent holds only the most likely codes
            state["logits"] = logits
        return state

    def load_state_dict(self, state: dict[str, Any], rng: bool = False) -> bool:
        """Go on from :meth:`state_dict` when the optimiser and latent shape match (this loop's learning rate wins);
        returns whether the optimiser state was loaded. ``rng``: a resume: also the random stream, the init
        pull-back's target and the schedule's state (build the loop with ``story_offset`` and ``schedule_offset``
        = ``state["steps"]``); without it the loop's own seed draws (chained ComfyUI nodes)."""
        c = self.config
        if rng:
            if state.get("rng_state") is not None:
                restore_stream(self.gen, state.get("rng_device"), state["rng_state"])
            if self._init_term is not None and state.get("z_init") is not None:
                self._init_term.load_state_dict({"target": state["z_init"]})
            saved = state.get("lr_schedule")
            if isinstance(saved, dict) and saved.get("name") == c.lr_schedule.lower():
                try:
                    self.lr_schedule.load_state_dict(saved["state"])
                except (KeyError, TypeError, ValueError) as e:
                    log.warning("the saved learning-rate schedule state does not load (%s): it starts afresh", e)
        method = state.get("method", "z_quantize")
        if method != c.method:
            log.info("the saved run used the %s method, this one %s: starting the optimiser afresh", method, c.method)
            return False
        if state.get("logits") is not None:
            self.param.continue_logits(state["logits"])
        opt_state = state.get("optimizer_state")
        if opt_state is None:
            return False
        if str(state.get("optimizer", "")).lower() != c.optimizer.lower() or \
                tuple(state.get("shape", ())) != tuple(self.z.shape):
            log.info("not continuing the optimiser state (saved: %s on %s; now: %s on %s): starting it afresh",
                     state.get("optimizer"), tuple(state.get("shape", ())), c.optimizer, tuple(self.z.shape))
            return False
        try:
            with torch.inference_mode(False):  # copies: a caller's (ComfyUI's cached) state must never change
                self.opt.load_state_dict(copy.deepcopy(opt_state))
        except (ValueError, KeyError, TypeError, RuntimeError) as e:  # e.g. another optimiser version's layout
            log.warning("the saved optimiser state does not load (%s): starting it afresh", e)
            self.opt.state.clear()
            return False
        for g in self.opt.param_groups:
            g["lr"] = g["initial_lr"] = c.lr
        return True

    # -- the run -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [B,3,H,W] float32 CPU in [0,1], code indices)`` of a latent, as the run renders it."""
        z_q, idx = self.quantize(z.detach().to(self.device))
        with self.run_info.autocast():
            img = (self.vqgan.decode(z_q) if self._dec is None else self._dec(z_q)).float().add(1).div(2).clamp(0, 1)
        return img.cpu(), idx

    def result(self, interrupted: bool = False, z: torch.Tensor | None = None) -> GenerationResult:
        """Decode the current latent (or ``z``) into the final images."""
        z = self.latent() if z is None else z
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
                watch = LastFinite(self.step_index, self.latent())
                while self.step_index < end:
                    if self.cb.should_stop is not None and self.cb.should_stop():
                        interrupted = True
                        break
                    i = self.step_index
                    # the cadence counts the whole run's steps, so a resumed plateau schedule sees the same losses
                    on_cadence = bool(c.log_every) and (i + self._schedule_offset) % c.log_every == 0
                    reads = on_cadence or i + 1 == c.steps
                    before = self.latent() if reads else None  # kept if this step's loss is finite
                    loss = self.step()
                    value = None
                    if reads:
                        value = float(loss)  # the only host sync of the loop
                        if not watch.update(value, i, before):
                            raise self._non_finite(value, i, watch)
                        self.losses.append((i, value))
                        if on_cadence:  # (a part's last step is no check of the whole run's)
                            self.lr_schedule.observe(value)
                    if self.cb.progress is not None:
                        self.cb.progress(self.step_index, c.steps, value)
                z = self.latent()
                if not bool(torch.isfinite(z).all()):
                    raise self._non_finite(float("nan"), self.step_index, watch)
                return self.result(interrupted)
        finally:
            if converted:  # hand the caller's (possibly cached, shared) model back unchanged
                self.vqgan.to(memory_format=torch.contiguous_format)


def _hints(config: GenerationConfig) -> str:
    return (f"a learning rate ({config.lr:g}) or weights too large for this model (try --lr {config.lr / 10:g}), or "
            "NaN in an input")


def run_generation(
    vqgan: torch.nn.Module,
    clip: ClipGuide | ClipEnsemble | list,
    config: GenerationConfig,
    callbacks: GenerationCallbacks | None = None,
    **kwargs,
) -> GenerationResult:
    """Convenience: ``GenerationLoop(vqgan, clip, config, callbacks, **kwargs).run()``."""
    return GenerationLoop(vqgan, clip, config, callbacks, **kwargs).run()
