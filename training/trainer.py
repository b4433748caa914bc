"""The training loop: taming's VQGAN recipe with a faster step, DDP, exact resume and atomic checkpoints.

Speed path: fused Adam (CUDA and CPU), bf16 autocast (CUDA; CPUs with native bf16), channels_last (CUDA), one
autoencoder forward shared by the generator and discriminator steps (taming recomputes it: ``train.shared_forward=false`` replays taming exactly), optional
``torch.compile``, no host synchronisation outside logging steps.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from vqgan_core import VQGANConfig, resolve_precision

from . import checkpointing as ck
from .build import (
    StartPoint,
    build_loss,
    build_optimizers,
    learning_rate,
    load_optimizer_state,
    load_start_point,
    taming_lpips_state,
)
from .codebook import CodeUsage, kmeans_init, restart_dead_codes
from .config import InitConfig, TrainConfig, TrainConfigError
from .data import ImageDataset, ResumableSampler, collate, resolve_splits
from .discriminator import DiscPair
from .distributed import all_reduce_sum_, any_rank, barrier, broadcast_, init_distributed
from .ema import EMA
from .logger import RunLogger, truncate_metrics
from .runlock import RunLock
from .state import gather_rng_states, install_signal_handlers, restore_signal_handlers, set_rng_state
from .validate import InceptionFeatures, validate

logger = logging.getLogger(__name__)
_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_STATE_KEYS = {"step", "samples_seen", "rng", "usage_log", "usage_dead", "code_gen"}  # what _restore reads
# Settings a resume cannot change: the weights (model.*) and the discriminator are built from the checkpoint.
_FIXED_ON_RESUME = ("loss.disc_ndf", "loss.disc_num_layers")


class Trainer:
    """One training run. ``Trainer(cfg, resume=True).fit()`` continues the newest checkpoint in ``cfg.out``."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.dist = init_distributed(cfg.train.device)
        self.out = Path(cfg.out)
        # One training per run folder; rank 0 holds the lock for the whole group (runlock.py says why).
        self.lock = RunLock(self.out) if self.dist.is_main else None
        if self.lock is not None:
            self.lock.acquire()
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    # -- setup -------------------------------------------------------------------------------------------
    def _setup(self, resume: bool) -> None:
        cfg, tc = self.cfg, self.cfg.train
        self.device = self.dist.device
        # auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX: ~1.6x a CPU step), as generation
        prec = "bf16" if tc.precision == "auto" and self.device.type == "cuda" else resolve_precision(tc.precision,
                                                                                                   self.device)
        if prec not in _PRECISIONS:
            raise ValueError(f"train.precision must be one of {['auto', *_PRECISIONS]}, got {tc.precision!r}")
        self.amp_dtype = _PRECISIONS[prec]
        if self.dist.is_main:
            ck.remove_leftovers(self.out)  # what a killed run left (we hold the lock: no other run writes here)
        barrier(self.dist)

        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        self.resume_from, start_cfg, sp = self._resume_point() if resume else (None, cfg, None)
        if resume and self.resume_from is None:
            logger.warning("--resume: no checkpoint in %s, starting a new run", self.out)
        if sp is None:
            sp = load_start_point(start_cfg)
        else:
            check_resume_config(cfg, sp.train_state, self.resume_from)
        if sp.lpips_state is None and start_cfg is not cfg:  # LPIPS that came from the original taming .ckpt
            sp.lpips_state = taming_lpips_state(cfg.init.from_checkpoint)
        self.model = sp.model.to(self.device).train().requires_grad_(True)
        self.loss = build_loss(start_cfg, sp.lpips_state, sp.disc_state, sp.source).to(self.device)
        self.disc = self.loss.discriminator
        self.lr = learning_rate(cfg, self.dist.world_size)
        # fused Adam: one vectorised pass per tensor; on a CPU about 6x faster than the for-loop kernel (a fifth of
        # a small-batch step was the optimiser, bench/bench_train.py), on CUDA it saves kernel launches
        cuda = self.device.type == "cuda"
        fused = cuda or self.device.type == "cpu"
        self.opt_ae, self.opt_d = build_optimizers(cfg, self.model, self.disc, self.lr, fused=fused)
        if sp.optimizer_states and start_cfg.init.load_optimizer:
            load_optimizer_state(self.opt_ae, sp.optimizer_states[0], self.lr, "autoencoder")
            if len(sp.optimizer_states) > 1 and sp.disc_state and start_cfg.init.load_discriminator:
                load_optimizer_state(self.opt_d, sp.optimizer_states[1], self.lr, "discriminator")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=prec == "fp16")
        self.ema = EMA(self.model, tc.ema_decay) if tc.ema else None
        n_embed = self.model.config.n_embed
        cc = cfg.codebook
        if self.model.config.quantizer != "vq" and (cc.kmeans_init or cc.dead_code_restart):
            raise ValueError(
                f"codebook.kmeans_init / dead_code_restart need the 'vq' quantizer; this model uses "
                f"{self.model.config.quantizer!r} (turn both off)"
            )
        self.usage_log, self.usage_dead = CodeUsage(n_embed, self.device), CodeUsage(n_embed, self.device)
        self.code_gen = torch.Generator().manual_seed(tc.seed + 7919)
        self.step, self.samples_seen, self.kmeans_done = 0, 0, False
        self.data_stats: Counter = Counter()
        self._rng_to_restore: dict[str, Any] | None = None
        if self.resume_from is not None:
            self._restore(sp.train_state if sp.train_state is not None else ck.load_state(self.resume_from))
        torch.manual_seed(tc.seed + 1000 * self.dist.rank + self.step)  # per-rank stream (Gumbel sampling)

        if cuda and tc.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.loss.to(memory_format=torch.channels_last)
        self.g = DDP(self.model, device_ids=[self.device] if cuda else None) if self.dist.enabled else self.model
        self.d_single = self.disc
        self.d_pair: torch.nn.Module = DiscPair(self.disc)
        if self.dist.enabled:
            self.d_pair = DDP(self.d_pair, device_ids=[self.device] if cuda else None, broadcast_buffers=False)
        if tc.compile:
            self.g, self.d_single, self.d_pair = (torch.compile(m) for m in (self.g, self.d_single, self.d_pair))
        self._stop = False
        resume_step = self.step if self.resume_from is not None else None
        if resume_step is not None and self.dist.is_main:
            truncate_metrics(self.out, resume_step)
        self.log = RunLogger(cfg, self.out, self.dist.is_main, resume_step)
        self._build_data()

    def _resume_point(self) -> tuple[Path | None, TrainConfig, StartPoint | None]:
        """The newest checkpoint that loads, with its start config; broken newer ones are skipped with a warning."""
        tried: list[str] = []
        for cand in ck.resume_candidates(self.out):
            start_cfg = copy.deepcopy(self.cfg)
            start_cfg.init = InitConfig(from_checkpoint=str(cand), taming_yaml=self.cfg.init.taming_yaml)
            try:
                sp = load_start_point(start_cfg)
                missing = sorted(_STATE_KEYS - set(sp.train_state or {}))
                if missing:
                    raise ValueError(f"{ck.STATE} lacks {missing}")
            except Exception as e:  # noqa: BLE001  any failure to read this one means "try the one before"
                why = " ".join(str(e).split()) or type(e).__name__
                tried.append(f"{cand.name}: {why}")
                logger.warning("checkpoint %s cannot be loaded (%s); falling back to an older checkpoint", cand, why)
                continue
            return cand, start_cfg, sp
        if tried:
            raise ValueError(f"--resume: no loadable checkpoint in {self.out / 'checkpoints'}: " + "; ".join(tried))
        return None, self.cfg, None

    def _build_data(self) -> None:
        dc, tc = self.cfg.data, self.cfg.train
        train, val = resolve_splits(dc)
        self.train_set = ImageDataset(train, dc.resolution, dc.min_size, dc.random_crop, tc.seed)
        per_rank = self.samples_seen // self.dist.world_size
        sampler = ResumableSampler(len(train), tc.seed, self.dist.rank, self.dist.world_size, start=per_rank)
        kw: dict[str, Any] = {
            "num_workers": dc.num_workers,
            "collate_fn": collate,
            "pin_memory": self.device.type == "cuda",
            "generator": torch.Generator().manual_seed(tc.seed),
        }
        if dc.num_workers > 0:
            kw.update(persistent_workers=True, prefetch_factor=4)
        self.train_loader = DataLoader(self.train_set, batch_size=tc.batch_size, sampler=sampler, **kw)
        self.val_loader = None
        if val and self.dist.is_main:
            vpaths = val[: dc.val_max_images]
            try:
                vset = ImageDataset(vpaths, dc.resolution, dc.min_size, random_crop=False, seed=tc.seed)
            except ValueError as e:  # training can go on; only the validation metrics are lost
                logger.warning("validation off: %s", e)
            else:
                workers = min(dc.num_workers, 2)
                self.val_loader = DataLoader(
                    vset, batch_size=tc.batch_size, shuffle=False, collate_fn=collate, num_workers=workers
                )
        self.log.info_once(f"data: {len(train)} train / {len(val)} val images from {dc.path}")

    def _restore(self, state: dict[str, Any]) -> None:
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.usage_log.counts.copy_(state["usage_log"])
        self.usage_dead.counts.copy_(state["usage_dead"])
        self.code_gen.set_state(state["code_gen"])
        self.kmeans_done = bool(state.get("kmeans_done", False))
        self.data_stats = Counter(state.get("data_stats", {}))
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self._rng_to_restore = state["rng"][self.dist.rank] if self.dist.rank < len(state["rng"]) else None
        logger.info("resuming %s at step %d", self.resume_from, self.step)

    # -- helpers -----------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype != torch.float32)

    def to_input(self, raw: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float in [-1,1] on the device (converted there: 4x less host->device traffic)."""
        x = raw.to(self.device, non_blocking=True).float().div_(127.5).sub_(1.0)
        if self.device.type == "cuda" and self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def _no_sync(module: torch.nn.Module, skip: bool) -> contextlib.AbstractContextManager:
        inner = getattr(module, "_orig_mod", module)
        return inner.no_sync() if skip and isinstance(inner, DDP) else contextlib.nullcontext()

    def close(self) -> None:
        """Flush the logs and release the run folder (fit() does this when it returns or fails)."""
        if getattr(self, "log", None) is not None:
            self.log.close()
        if self.lock is not None:
            self.lock.release()

    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and return from :meth:`fit` (signal handlers call this)."""
        self._stop = True

    # -- one optimiser step --------------------------------------------------------------------------------
    def train_step(self, micro: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Generator update then discriminator update on ``len(micro)`` accumulated micro-batches."""
        step, n, taming = self.step, len(micro), not self.cfg.train.shared_forward
        factor = self.loss.disc_factor(step)
        logs: dict[str, torch.Tensor] = {}
        self.opt_ae.zero_grad(set_to_none=True)
        self.disc.requires_grad_(False)  # the generator step must not train D (taming toggles optimisers)
        xrecs = []
        for i, x in enumerate(micro):
            with self._no_sync(self.g, i < n - 1):
                with self._autocast():
                    xrec, qloss, idx = self.g(x)
                    loss, glogs = self.loss.generator_loss(
                        x, xrec, qloss, step, self.model.get_last_layer(), self.d_single, gan_when_inactive=taming
                    )
                self.scaler.scale(loss / n).backward()
            self.usage_log.update(idx)
            self.usage_dead.update(idx)
            xrecs.append(xrec.detach())
            _accumulate(logs, glogs, n)
        self._optimizer_step(self.opt_ae, self.model)
        self.disc.requires_grad_(True)
        if factor > 0 or taming:
            self.opt_d.zero_grad(set_to_none=True)
            for i, x in enumerate(micro):
                with self._no_sync(self.d_pair, i < n - 1):
                    with self._autocast():
                        if taming:  # taming recomputes with the new weights; D's step needs no generator graph
                            with torch.no_grad():
                                xrec = self.model(x)[0]
                        else:
                            xrec = xrecs[i]
                        d_loss, dlogs = self.loss.discriminator_loss(x, xrec, step, self.d_pair)
                    self.scaler.scale(d_loss / n).backward()
                _accumulate(logs, dlogs, n)
            self._optimizer_step(self.opt_d, self.disc)
        self.scaler.update()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.last_recon = xrecs[0]
        return logs

    def _optimizer_step(self, opt: torch.optim.Optimizer, module: torch.nn.Module) -> None:
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(opt)

    # -- codebook options ------------------------------------------------------------------------------------
    def _kmeans_init(self) -> None:
        cc, tc = self.cfg.codebook, self.cfg.train
        if self.dist.is_main:
            g = torch.Generator().manual_seed(tc.seed + 31)
            idx = torch.randperm(len(self.train_set), generator=g)[: cc.kmeans_batches * tc.batch_size].tolist()
            batches = [
                torch.stack([self.train_set[(i, 0)][0] for i in idx[s : s + tc.batch_size]])
                for s in range(0, len(idx), tc.batch_size)
            ]
            inputs = [self.to_input(b) for b in batches]
            kmeans_init(self.model, inputs, cc.kmeans_iters, self.code_gen, autocast=self._autocast)
        broadcast_(self.model.quantize.codebook.data, self.dist)
        self.kmeans_done = True

    def _restart_dead(self, x: torch.Tensor) -> None:
        counts = all_reduce_sum_(self.usage_dead.counts.clone(), self.dist)
        cb = self.model.quantize.codebook
        with torch.no_grad(), self._autocast():
            h = self.model.encode_to_prequant(x)
        n = restart_dead_codes(cb, counts, h, self.cfg.codebook.dead_code_threshold, self.code_gen, self.opt_ae)
        broadcast_(cb.data, self.dist)
        self.usage_dead.reset()
        if n:
            self.log.scalars(self.step, {"codebook/restarted": float(n)})

    # -- checkpoints -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs (RNG gathered from every rank)."""
        rngs = gather_rng_states(self.dist)
        st = {
            "samples_seen": self.samples_seen,
            "optimizers": [self.opt_ae.state_dict(), self.opt_d.state_dict()],
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "usage_log": self.usage_log.counts.cpu(),
            "usage_dead": self.usage_dead.counts.cpu(),
            "code_gen": self.code_gen.get_state(),
            "kmeans_done": self.kmeans_done,
            "data_stats": dict(self.data_stats),
        }
        if self.ema is not None:
            st["ema"] = {k: v.cpu() for k, v in self.ema.state_dict().items()}
        return st

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0) and wait for every rank."""
        st = self.state()
        path = None
        if self.dist.is_main:
            ema_model = self.ema_model() if self.ema is not None else None
            path = ck.save_checkpoint(
                self.out, self.step, self.model, self.disc, st, ema_model, self.cfg.to_dict(), self.cfg.log.keep_last
            )
        barrier(self.dist)
        return path

    def ema_model(self) -> torch.nn.Module:
        """A copy of the generator holding the EMA weights."""
        m = copy.deepcopy(self.model)
        self.ema.copy_to(m)
        return m

    # -- loop --------------------------------------------------------------------------------------------------
    def fit(self, max_steps: int | None = None) -> dict[str, float]:
        """Train until ``max_steps`` (default ``train.max_steps``) or a stop request; returns the last logs."""
        tc, lc = self.cfg.train, self.cfg.log
        max_steps = max_steps if max_steps is not None else tc.max_steps
        if self.lock is not None:
            self.lock.acquire()  # again, if an earlier fit() released it
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
        if self.cfg.codebook.kmeans_init and not self.kmeans_done and self.step == 0:
            self._kmeans_init()
        old = install_signal_handlers(self.request_stop)
        it = iter(self.train_loader)
        last: dict[str, float] = {}
        saved_at = -1
        self.log.start(self.step, max_steps)
        try:
            while self.step < max_steps:
                micro = []
                for _ in range(tc.grad_accum):
                    raw, stats = next(it)
                    self.data_stats.update(stats)
                    micro.append(self.to_input(raw))
                self.samples_seen += tc.batch_size * tc.grad_accum * self.dist.world_size
                logs = self.train_step(micro)
                s = self.step
                if self.cfg.codebook.dead_code_restart and s % self.cfg.codebook.dead_code_every == 0:
                    self._restart_dead(micro[-1])
                if s % lc.every == 0 or s == max_steps:
                    last = self.log.train_logs(s, logs, self.usage_log, self.data_stats, self.lr)
                    self.usage_log.reset()
                self.log.progress(s, last)
                if lc.image_every > 0 and s % lc.image_every == 0:
                    self.log.images(s, micro[0], self.last_recon)
                if lc.val_every > 0 and s % lc.val_every == 0:
                    self.run_validation()
                if lc.ckpt_every > 0 and s % lc.ckpt_every == 0:
                    self.save()
                    saved_at = s
                check = not self.dist.enabled or s % 10 == 0 or s == max_steps
                if check and any_rank(self._stop, self.dist):
                    logger.warning("stop requested: checkpointing at step %d", s)
                    break
            if saved_at != self.step:
                self.save()
        finally:
            restore_signal_handlers(old)
            self.close()
        return last

    def run_validation(self) -> dict[str, float]:
        """Validation metrics on rank 0 (EMA weights when EMA is on); other ranks wait."""
        res: dict[str, float] = {}
        if self.dist.is_main and self.val_loader is not None:
            model = self.ema_model() if self.ema is not None else self.model
            inc = self._inception()
            res = validate(model, (b for b, _ in self.val_loader), self.to_input, self._autocast, inc)
            self.log.validation(self.step, res, inc is not None)
        barrier(self.dist)
        return res

    def _inception(self) -> InceptionFeatures | None:
        if not self.cfg.log.inception_weights:
            return None
        if not hasattr(self, "_inc"):
            self._inc = InceptionFeatures(self.cfg.log.inception_weights).to(self.device)
        return self._inc


def check_resume_config(cfg: TrainConfig, state: dict[str, Any] | None, ckpt: Path | None) -> None:
    """Refuse a resume whose config asks for another architecture than the checkpoint holds.

    Why: the resumed weights come from the checkpoint whatever ``model.*`` says, so a changed architecture would be
    ignored silently while the saved configs claim it. Everything else (steps, logging, learning rate, batch size,
    data, loss weights) may change on resume.
    """
    saved = (state or {}).get("train_config")
    if not isinstance(saved, dict):
        return  # a checkpoint without its config (older writer): nothing to compare against
    given = cfg.to_dict()
    diffs = [
        f"model.{k}: checkpoint {a!r}, given {b!r}"
        for k, (a, b) in _dict_diff(_model_dict(saved.get("model") or {}), _model_dict(given["model"])).items()
    ]
    for key in _FIXED_ON_RESUME:
        sect, name = key.split(".")
        a, b = (saved.get(sect) or {}).get(name), given[sect][name]
        if a is not None and a != b:
            diffs.append(f"{key}: checkpoint {a!r}, given {b!r}")
    if diffs:
        raise TrainConfigError(
            f"cannot resume {ckpt} with another architecture: {'; '.join(diffs)}. A resume keeps the checkpoint's "
            f"model.* and {', '.join(_FIXED_ON_RESUME)} (its weights are built from them); steps, log.*, "
            f"optim.* (learning rate, betas), train.batch_size, data.* and loss weights may change. Drop those "
            f"overrides, or train the new architecture in a new run folder (another --out)"
        )


def _model_dict(d: dict[str, Any]) -> dict[str, Any]:
    """``model`` section with defaults filled in, so ``ch: 128`` and an absent ``ch`` compare equal."""
    try:
        full = VQGANConfig.from_dict(dict(d)).to_dict()
    except (ValueError, TypeError):  # not a valid VQGAN config: compare what was written
        return dict(d)
    full.pop("extra", None)  # provenance, not architecture
    return full


def _dict_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _accumulate(acc: dict[str, torch.Tensor], logs: dict[str, torch.Tensor], n: int) -> None:
    for k, v in logs.items():
        acc[k] = acc.get(k, 0) + v.to(torch.float32) / n
