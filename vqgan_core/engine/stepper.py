"""The composed run: N steps of (latent, VQGAN, loss, optimiser), its whole state in ``state_dict()``.

Why: every part is the user's (a :class:`LatentParam`, any :class:`LossTerm`, an :class:`OptimizerSpec`);
the stepper only decodes, calls the loss, steps the optimiser and reports. Its state is the state of its
objects (optimiser moments, scheduler position, the random stream, the step of the whole run, the terms'
own state), so a run continued from ``state_dict()`` in another stepper, node or process is the same run:
k chained steppers of n steps give the image of one stepper of k*n steps, bit for bit on the CPU.

Speed: frozen weights, low precision (bf16 where the device has it) with private low-precision copies of
the decoder and the CLIP models, and on CUDA the loss forward + backward replayed as one CUDA graph.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_map

from ..objective.losses import clamp_with_grad
from ..util.finite import LastFinite, NonFiniteLossError, loss_error
from ..vqgan.seamless import is_seamless
from .callbacks import GenerationCallbacks
from .clip_loss import ClipLoss
from .cuda_graph import GraphedLossBackward
from .latent_param import LatentParam
from .oom import private_decoder
from .optim_spec import OptimizerSpec
from .run_info import RunInfo, StepContext, restore_stream, stream_seed
from .runtime import resolve_precision, run_context
from .terms import LossTerm, SumLoss

__all__ = ["STATE_VERSION", "StepResult", "Stepper", "clip_terms", "cpu_copy"]

log = logging.getLogger(__name__)

STATE_VERSION = 1


def clip_terms(loss: LossTerm) -> list[ClipLoss]:
    """The CLIP terms inside ``loss`` (which guides a run uses, which augmentations it draws)."""
    leaves = loss.leaves() if isinstance(loss, SumLoss) else [loss]
    return [t for t in leaves if isinstance(t, ClipLoss)]


def cpu_copy(tree: Any) -> Any:
    """Detached CPU copies of every tensor in ``tree`` (a host may keep states for long)."""
    return tree_map(lambda v: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v),
                    tree)


@dataclass
class StepResult:
    """What :meth:`Stepper.run` returns: the images, the latent to go on from, the losses, the state."""

    images: torch.Tensor  # [B,3,H,W] float32 CPU in [0,1]
    latent: torch.Tensor  # [B,C,h,w] float32
    indices: torch.Tensor  # [B,h,w] int64
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step of the whole run, loss)
    steps_done: int = 0
    interrupted: bool = False
    state: dict[str, Any] = field(default_factory=dict)


class Stepper:
    """Runs the steps of one composed run.

    Args:
        vqgan: the VQGAN that decodes the latent.
        latent: the parameterised latent (moved by the optimiser).
        loss: a loss term (a :class:`SumLoss` for several).
        optimizer: the optimiser spec.
        seed: the random stream of cutouts and augmentations (``state`` overrides it: a continued run goes on).
        planned_steps: steps of the whole run (schedules and decays span it; ``state`` overrides it).
        precision: auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA and on CPUs with native bf16).
        callbacks: progress / preview / save / should_stop hooks (``GenerationCallbacks``).
        log_every: fetch the loss (a device sync) every N steps of the whole run; the last step always.
        preview_every / save_every: call those hooks every N steps.
        cuda_graph: replay forward + backward as one CUDA graph (None: on CUDA when every augmentation allows).
        state: a :meth:`state_dict` to continue from (same kinds of parts; the latent is the one it ended on).
    """

    def __init__(self, vqgan: torch.nn.Module, latent: LatentParam, loss: LossTerm, optimizer: OptimizerSpec,
                 *, seed: int = 0, planned_steps: int = 100, precision: str = "auto",
                 callbacks: GenerationCallbacks | None = None, log_every: int = 10, preview_every: int = 0,
                 save_every: int = 0, cuda_graph: bool | None = None, state: dict[str, Any] | None = None) -> None:
        if not isinstance(loss, LossTerm):
            raise TypeError(f"loss must be a LossTerm (or a SumLoss of them), got {type(loss).__name__}")
        if state is not None:
            _check_version(state)
            seed, planned_steps = int(state["seed"]), int(state["planned_steps"])
        self.vqgan, self.param, self.loss, self.spec = vqgan, latent, loss, optimizer
        self.seed, self.planned_steps = int(seed), max(int(planned_steps), 1)
        self.cb = callbacks or GenerationCallbacks()
        self.log_every, self.preview_every, self.save_every = log_every, preview_every, save_every
        self.device = vqgan.codebook.device
        self.precision = resolve_precision(precision, self.device)
        self.low_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.step_index, self.losses = 0, []
        with torch.inference_mode(False):  # ComfyUI calls nodes under inference_mode
            self._setup(cuda_graph, 0 if state is None else int(state["step"]))
            if state is not None:
                self.load_state_dict(state)

    def _setup(self, cuda_graph: bool | None, start_step: int) -> None:
        clips = clip_terms(self.loss)
        bad = sorted({c for t in clips for c in t.not_capturable})
        use_graph = cuda_graph if cuda_graph is not None else (self.device.type == "cuda" and not bad)
        if use_graph and (bad or self.device.type != "cuda"):
            raise ValueError(f"cuda_graph=True needs a CUDA device and capturable augmentations "
                             f"(device {self.device}; not capturable: {', '.join(bad) or 'none'})")
        channels_last = self.device.type == "cuda"
        self._dec = private_decoder(self.vqgan, self.low_dtype, channels_last) if self.low_dtype else None
        self._channels_last = channels_last and self._dec is not None
        self.gen = torch.Generator(self.device).manual_seed(stream_seed(self.seed, 17))
        b, _, h, w = self.param.shape
        f = self.vqgan.downsample_factor
        self.run_info = RunInfo(self.vqgan, self.device, h * f, w * f, b, self.seed, self.param.latent(),
                                self.planned_steps, seamless=is_seamless(self.vqgan), low_dtype=self.low_dtype,
                                cast_cache=not use_graph, start_step=start_step)
        self.loss.bind(self.run_info)
        self.opt, self.schedule = self.spec.build(self.param.parameters(), self.planned_steps)
        self._graphed = GraphedLossBackward(self._body, self.param.z, [self.gen]) if use_graph else None
        self._modules = [self.vqgan, *(g.model for t in clips for g, _ in t.clip.guides)]

    # -- one step ------------------------------------------------------------------------------------------
    def render(self) -> tuple[torch.Tensor, StepContext]:
        """Decode this step's latent: ``(image [B,3,H,W] in [0,1] with gradients, the step's context)``."""
        z_q, pull = self.param.render(self.gen)
        if self._channels_last:
            z_q = z_q.contiguous(memory_format=torch.channels_last)
        with self.run_info.autocast():
            out = self.vqgan.decode(z_q) if self._dec is None else self._dec(z_q)
        img = clamp_with_grad(out.float().add(1).div(2), 0.0, 1.0)
        return img, StepContext(self.step_index, self.gen, self.param.z, z_q, pull, self.run_info)

    def _body(self) -> tuple[torch.Tensor, torch.Tensor]:
        img, ctx = self.render()
        return self.loss(img, ctx).sum(), img

    def _loss_and_grad(self, key: object) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graphed is not None:
            state = self.gen.get_state()
            try:
                return self._graphed(key)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as e:  # an op that cannot be captured: go on eagerly
                log.warning("CUDA graph capture failed (%s); continuing without", str(e).splitlines()[0])
                self._graphed = None
                self.gen = torch.Generator(self.device)
                self.gen.set_state(state)
                torch.cuda.synchronize(self.device)
        self.opt.zero_grad(set_to_none=True)
        loss, img = self._body()
        loss.backward()
        return loss.detach(), img.detach()

    def step(self) -> torch.Tensor:
        """One optimisation step; returns the (device) loss of the image before the update."""
        i = self.step_index
        for g in self.opt.param_groups:
            g["lr"] = self.spec.lr * self.schedule.factor()
        key = self.loss.prepare(i)
        loss, img = self._loss_and_grad(key)
        want_save = bool(self.save_every) and i % self.save_every == 0 and self.cb.save is not None
        want_preview = bool(self.preview_every) and i % self.preview_every == 0 and self.cb.preview is not None
        if want_save or want_preview:  # the run's image at this step (codebook sampling: its most likely codes)
            shown = img.float().cpu() if self.param.method == "z_quantize" else self.decode(self.param.latent())[0]
            if want_save:
                self.cb.save(i, shown)
            if want_preview:
                self.cb.preview(i, shown)
        self.opt.step()
        self.schedule.step()
        self.param.after_step()
        self.step_index += 1
        return loss

    # -- the run ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [B,3,H,W] float32 CPU in [0,1], code indices)`` of a latent, as the run renders it."""
        z_q, idx = self.param.quantize(z.detach().to(self.device))
        with self.run_info.autocast():
            out = self.vqgan.decode(z_q) if self._dec is None else self._dec(z_q)
        return out.float().add(1).div(2).clamp(0, 1).cpu(), idx

    def run(self, steps: int) -> StepResult:
        """Run ``steps`` more steps with the callbacks, then decode. Call again to go on."""
        end, done, interrupted = self.step_index + int(steps), 0, False
        with run_context(self._modules, deterministic=False, cudnn_benchmark=self.device.type == "cuda"):
            watch = LastFinite(self.step_index, self.param.latent())
            while self.step_index < end:
                if self.cb.should_stop is not None and self.cb.should_stop():
                    interrupted = True
                    break
                i = self.step_index
                on_cadence = bool(self.log_every) and i % self.log_every == 0
                reads = on_cadence or i + 1 == end
                before = self.param.latent() if reads else None  # kept if this step's loss is finite
                loss = self.step()
                done += 1
                value = None
                if reads:
                    value = float(loss)  # the only host sync of the loop
                    if not watch.update(value, i, before):
                        raise self._non_finite(value, i, watch)
                    self.losses.append((i, value))
                    if on_cadence:
                        self.schedule.observe(value)
                if self.cb.progress is not None:
                    self.cb.progress(done, int(steps), value)
            z = self.param.latent()
            if not bool(torch.isfinite(z).all()):
                raise self._non_finite(float("nan"), self.step_index, watch)
            images, idx = self.decode(z)
        return StepResult(images, z, idx, list(self.losses), done, interrupted, self.state_dict())

    def _non_finite(self, value: float, step: int, watch: LastFinite) -> NonFiniteLossError:
        err = loss_error(value, step, watch.step, f"a learning rate ({self.spec.lr:g}) or loss weights too large, "
                         "or NaN in an input")
        images, idx = self.decode(watch.latent)
        err.result = StepResult(images, watch.latent, idx, list(self.losses), watch.step, True, {})
        return err

    # -- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything that continues this run elsewhere (CPU copies; JSON-like plus tensors)."""
        with torch.inference_mode(False):
            return {
                "version": STATE_VERSION, "step": self.step_index, "seed": self.seed,
                "planned_steps": self.planned_steps, "latent_shape": tuple(self.param.z.shape),
                "optimizer": {"name": self.spec.name.lower(), "state": cpu_copy(self.opt.state_dict())},
                "scheduler": {"name": self.spec.schedule.lower(), "state": cpu_copy(self.schedule.state_dict())},
                "rng": {"device": self.gen.device.type, "state": self.gen.get_state()},
                "latent": self.param.state_dict(), "loss": self.loss.state_dict(),
                "losses": list(self.losses),
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from :meth:`state_dict` of a run with the same kinds of parts (errors name what differs)."""
        _check_version(state)
        if int(state["seed"]) != self.seed or int(state["planned_steps"]) != self.planned_steps:
            raise ValueError("a run's seed and planned steps are fixed when it starts: build the Stepper with "
                             "state=... to continue it")
        if tuple(state["latent_shape"]) != tuple(self.param.z.shape):
            raise ValueError(f"the saved run's latent is {tuple(state['latent_shape'])}, this one "
                             f"{tuple(self.param.z.shape)}")
        opt, sched = state["optimizer"], state["scheduler"]
        if opt["name"] != self.spec.name.lower() or sched["name"] != self.spec.schedule.lower():
            raise ValueError(f"the saved run used {opt['name']} ({sched['name']}), this one "
                             f"{self.spec.name.lower()} ({self.spec.schedule.lower()}): connect the same optimizer, "
                             "or start a new run")
        with torch.inference_mode(False):
            self.param.load_state_dict(state["latent"])
            self.loss.load_state_dict(state["loss"])
            self.opt.load_state_dict(copy.deepcopy(opt["state"]))  # copies: a host's cached state never changes
            self.schedule.load_state_dict(copy.deepcopy(sched["state"]))
            restore_stream(self.gen, state["rng"]["device"], state["rng"]["state"])
        self.step_index, self.losses = int(state["step"]), list(state.get("losses", []))


def _check_version(state: dict[str, Any]) -> None:
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"not a run state of this version (want version {STATE_VERSION}, got "
                         f"{state.get('version') if isinstance(state, dict) else type(state).__name__})")
