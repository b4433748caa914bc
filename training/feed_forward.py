"""Train a feed-forward text -> VQGAN-latent network with the CLIP loss (``python -m training.feed_forward``).

Why: the optimiser needs hundreds of steps per prompt; this network learns once, from captions (COCO 2017 or
any list), to give the latent in one pass. It is trained against the same composed objective a run
minimises (``vqgan_core.ClipLoss`` with its cutouts and augmentations, plus ``TVLoss``), per caption.

Habits of the VQGAN trainer: exact resume (``--resume``: weights, optimiser, schedule and every random
stream), atomic step folders (``OUT/checkpoints/step_N/{model.safetensors,state.pt}``, ``latest``), one run per
folder (lock), torchrun/DDP (each rank draws its own captions; gradients are averaged), ``metrics.jsonl`` and
TensorBoard, validation images for fixed captions (``OUT/val/step_N.png``). The result is
``OUT/feed_forward.safetensors``: ``vqgan_core.load_feed_forward`` reads it, with the VQGAN and CLIP it was
trained for in its metadata.

Usage::

    python -m training.feed_forward --config training/configs/ff_demo_shapes.yaml --data data/shapes --out runs/ff
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn.parallel import DistributedDataParallel as DDP

from vqgan_core import (
    ClipLoss,
    FeedForwardConfig,
    FeedForwardNet,
    RunInfo,
    StepContext,
    SumLoss,
    TVLoss,
    Views,
    atomic_torch_save,
    atomic_write,
    decode01,
    load_clip_ensemble,
    load_vqgan,
    read_safetensors,
    resolve_precision,
    safe_torch_load,
    save_feed_forward,
    stream_seed,
    vqgan_fingerprint,
)

from . import checkpointing as ck
from .captions import load_captions, split_held_out
from .config import TrainConfigError
from .distributed import any_rank, barrier, cleanup, init_distributed
from .ff_config import FFTrainConfig
from .logger import metrics_path, truncate_metrics
from .runlock import RunLock
from .state import install_signal_handlers, restore_signal_handlers

logger = logging.getLogger("training.feed_forward")

MODEL, STATE = "model.safetensors", "state.pt"
REQUIRED = (MODEL, STATE)
RESULT = "feed_forward.safetensors"
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _gen_state(g: torch.Generator) -> torch.Tensor:
    return g.get_state().cpu()


class FeedForwardTrainer:
    """One run: ``FeedForwardTrainer(cfg, data, out, resume).fit()`` returns the result file's path."""

    def __init__(self, cfg: FFTrainConfig, data: str | Path, out: str | Path, resume: bool = False) -> None:
        self.cfg, self.out = cfg, Path(out)
        self.dist = init_distributed(cfg.device)
        self.device = self.dist.device
        self.lock = RunLock(self.out) if self.dist.is_main else None
        if self.lock is not None:
            self.lock.acquire()
        try:
            self._setup(Path(data), resume)
        except BaseException:
            self.close()
            raise

    # -- setup ----------------------------------------------------------------------------------------
    def _setup(self, data: Path, resume: bool) -> None:
        cfg, dev = self.cfg, self.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.dist.is_main:
            ck.remove_leftovers(self.out, REQUIRED)
        barrier(self.dist)
        prec = cfg.precision if cfg.precision != "auto" else resolve_precision("auto", dev)
        self.low_dtype = torch.bfloat16 if prec == "bf16" else None  # fp16 (no bf16 on an old GPU): fp32 here
        self.vqgan = load_vqgan(cfg.vqgan, device=dev).eval().requires_grad_(False)
        self.guide = load_clip_ensemble([cfg.clip], device=dev).guides[0][0]
        self.captions, self.held = split_held_out(load_captions(data, cfg.split), cfg.holdout)
        logger.info("%d captions to train on, %d held out (%s)", len(self.captions), len(self.held), cfg.holdout)
        h, w = cfg.size
        grid = self.vqgan.latent_size(h, w)
        k, ch = self.vqgan.codebook.shape
        m = cfg.model
        self.net_config = FeedForwardConfig(
            text_dim=self.guide.embed_dim(), noise_dim=m.noise_dim, grid=grid, base=tuple(m.base), width=m.width,
            min_width=m.min_width, blocks=m.blocks, latent_channels=ch, n_embed=k, output=m.output,
            vqgan=Path(cfg.vqgan).name, vqgan_fingerprint=vqgan_fingerprint(self.vqgan), clip=self.guide.spec,
            extra={"run": cfg.name, "holdout": list(cfg.holdout), "n_captions": len(self.captions),
                   "size": [h, w]})
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.net = FeedForwardNet(self.net_config).to(dev).train()
        n = sum(p.numel() for p in self.net.parameters())
        logger.info("feed-forward network: %.2f M parameters, %s -> %s latent grid %s", n / 1e6, self.guide.spec,
                    m.output, grid)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm, total = max(cfg.warmup, 1), cfg.steps
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, s / total))))
        lc = cfg.loss
        views = Views(lc.cutout_method, lc.cutn, lc.cut_pow, tuple(lc.augments), lc.aug_noise, lc.aug_padding)
        self.clip_loss = ClipLoss(self.guide, views=views, weight=lc.clip_weight)
        self.loss = SumLoss([self.clip_loss, *([TVLoss(lc.tv_weight)] if lc.tv_weight else [])])
        r = self.dist.rank
        self.g_data = torch.Generator().manual_seed(stream_seed(cfg.seed, 1 + 1000 * r))
        self.g_noise = torch.Generator().manual_seed(stream_seed(cfg.seed, 2 + 1000 * r))
        self.g_view = torch.Generator(dev).manual_seed(stream_seed(cfg.seed, 3 + 1000 * r))
        self.step = 0
        self.val_captions = cfg.val_captions or (self.captions[:: max(1, len(self.captions) // 6)][:6] + self.held[:2])
        self._stop = False
        if resume:
            found = ck.find_latest(self.out, REQUIRED)
            if found is None:
                logger.warning("--resume: no checkpoint in %s, starting a new run", self.out)
            else:
                self._restore(found)
        self.model = DDP(self.net) if self.dist.enabled else self.net
        self.tb = None
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            text = json.dumps(cfg.to_dict(), indent=1)
            atomic_write(self.out / "config.json", lambda p: Path(p).write_text(text, encoding="utf-8"))
            if self.step:  # a resumed run keeps what was logged up to its checkpoint
                truncate_metrics(self.out, self.step)
            else:
                metrics_path(self.out).unlink(missing_ok=True)
            if cfg.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    logger.info("tensorboard not installed: logging to metrics.jsonl only")
                else:
                    self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step or None)

    def _restore(self, folder: Path) -> None:
        st = safe_torch_load(folder / STATE)
        saved, mine = st.get("train_config", {}), self.cfg.to_dict()
        for key in ("vqgan", "clip", "size", "model"):
            if saved.get(key) != mine[key]:
                raise TrainConfigError(f"--resume: {folder} was trained with {key}={saved.get(key)!r}, this config "
                                       f"says {mine[key]!r}; use another --out or the same setting")
        sd, _ = read_safetensors(folder / MODEL)
        self.net.load_state_dict({k: v.float() for k, v in sd.items()})
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.step = int(st["step"])
        rank = str(self.dist.rank)
        gens = st["generators"].get(rank)
        if gens is None:
            logger.warning("--resume: no random streams saved for rank %s; it draws from its own seed", rank)
        else:
            self.g_data.set_state(gens["data"])
            self.g_noise.set_state(gens["noise"])
            if gens["view_device"] == self.device.type:
                self.g_view.set_state(gens["view"])
        logger.info("resumed from %s at step %d", folder, self.step)

    # -- one step ---------------------------------------------------------------------------------------
    def _images(self, captions: list[str], g_noise: torch.Generator, net: torch.nn.Module
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        text = self.guide.encode_text(captions)
        raw = net(text, self.net.noise(len(captions), g_noise, self.device))
        z_q = self.net.to_latent(raw, self.vqgan)
        with torch.autocast(self.device.type, dtype=self.low_dtype or torch.bfloat16, enabled=self.low_dtype is not None):
            img = decode01(self.vqgan, z_q)
        return img.float(), text, raw, z_q

    def _loss(self, img: torch.Tensor, text: torch.Tensor, raw: torch.Tensor, z_q: torch.Tensor,
              gen: torch.Generator, step: int) -> torch.Tensor:
        b = img.shape[0]
        h, w = self.cfg.size
        run = RunInfo(self.vqgan, self.device, h, w, b, self.cfg.seed, z_q.detach(), self.cfg.steps,
                      low_dtype=self.low_dtype)  # the CLIP loss runs under the run's autocast
        self.clip_loss.use_text_targets([text])
        return self.loss(img, StepContext(step, gen, raw, z_q, z_q, run))

    def train_step(self) -> float:
        """One optimiser step on a fresh batch of captions; returns the mean loss."""
        cfg = self.cfg
        idx = torch.randint(len(self.captions), (cfg.batch_size,), generator=self.g_data).tolist()
        img, text, raw, z_q = self._images([self.captions[i] for i in idx], self.g_noise, self.model)
        loss = self._loss(img, text, raw, z_q, self.g_view, self.step).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return float(loss.detach())

    # -- validation, logging, checkpoints ----------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Images for the fixed captions (``OUT/val/step_N.png``) and their loss under fixed views."""
        self.net.eval()
        caps = self.val_captions
        img, text, raw, z_q = self._images(caps, torch.Generator().manual_seed(self.cfg.seed), self.net)
        gen = torch.Generator(self.device).manual_seed(self.cfg.seed)
        loss = self._loss(img, text, raw, z_q, gen, self.step)
        self.net.train()
        out = {"val_loss": float(loss.mean())}
        held = [i for i, c in enumerate(caps) if c in self.held]
        if held:
            out["val_loss_held_out"] = float(loss[held].mean())
        grid = (img.clamp(0, 1) * 255).round().byte().cpu().permute(0, 2, 3, 1).numpy()
        strip = np.concatenate(list(grid), axis=1)
        path = self.out / "val" / f"step_{self.step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: Image.fromarray(strip).save(p, format="PNG"))
        (self.out / "val" / "captions.txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
        if self.tb is not None:
            self.tb.add_images("val/images", img.clamp(0, 1).cpu(), self.step)
        return out

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to ``metrics.jsonl`` (and TensorBoard)."""
        with metrics_path(self.out).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step":
                    self.tb.add_scalar(f"ff/{k}", v, record["step"])

    def save(self) -> Path:
        """Checkpoint the run at its current step (rank 0 writes; every rank's random streams are kept)."""
        gens = self._gather_generators()
        if not self.dist.is_main:
            return self.out

        def write(tmp: Path) -> None:
            save_feed_forward(self.net, tmp / MODEL, extra_metadata={"train_step": str(self.step)})
            atomic_torch_save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                               "step": self.step, "generators": gens, "train_config": self.cfg.to_dict()},
                              tmp / STATE)

        return ck.save_step_folder(self.out, self.step, write, self.cfg.keep_last, REQUIRED)

    def _gather_generators(self) -> dict[str, Any]:
        mine = {"data": _gen_state(self.g_data), "noise": _gen_state(self.g_noise), "view": _gen_state(self.g_view),
                "view_device": self.device.type}
        if not self.dist.enabled:
            return {"0": mine}
        blobs: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(blobs, {k: v.tolist() if torch.is_tensor(v) else v
                                                    for k, v in mine.items()})
        return {str(r): {k: torch.tensor(v, dtype=torch.uint8) if k != "view_device" else v for k, v in b.items()}
                for r, b in enumerate(blobs)}

    def fit(self) -> Path:
        """Train to ``cfg.steps`` (or until SIGINT/SIGTERM: checkpoint, then return); returns the result file."""
        cfg = self.cfg
        old = install_signal_handlers(self.request_stop)
        try:
            t0, done0 = time.perf_counter(), self.step
            while self.step < cfg.steps and not any_rank(self._stop, self.dist):  # every rank stops together
                loss = self.train_step()
                last = self.step == cfg.steps
                val = (cfg.val_every and self.step % cfg.val_every == 0) or last
                if self.dist.is_main and (self.step % max(cfg.log_every, 1) == 0 or val):
                    dt = (time.perf_counter() - t0) / max(self.step - done0, 1)
                    rec = {"step": self.step, "loss": loss, "lr": self.sched.get_last_lr()[0], "sec_per_step": dt,
                           "images_per_sec": cfg.batch_size * self.dist.world_size / dt}
                    if val:
                        rec.update(self.validate())
                    self.log(rec)
                    logger.info("step %d loss %.4f %s", self.step, loss,
                                " ".join(f"{k} {v:.4f}" for k, v in rec.items() if k.startswith("val")))
                if (cfg.save_every and self.step % cfg.save_every == 0) or last:
                    self.save()
            if self.step < cfg.steps:  # stopped by a signal (on any rank)
                self.save()
                logger.info("stopped at step %d; continue with --resume", self.step)
                return self.out
            return self._write_result()
        finally:
            restore_signal_handlers(old)

    def _write_result(self) -> Path:
        path = self.out / RESULT
        if self.dist.is_main:
            save_feed_forward(self.net, path, dtype=_DTYPES[self.cfg.save_dtype],
                              extra_metadata={"train_config": json.dumps(self.cfg.to_dict(), sort_keys=True),
                                              "train_step": str(self.step)})
            logger.info("feed-forward model written: %s", path)
        barrier(self.dist)
        return path

    def request_stop(self) -> None:
        """Finish the current step, checkpoint and return (SIGINT/SIGTERM)."""
        self._stop = True

    def close(self) -> None:
        """Release the run folder and the process group."""
        if getattr(self, "tb", None) is not None:
            self.tb.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        cleanup()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m training.feed_forward", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML/JSON settings (training.ff_config.FFTrainConfig); default: all defaults")
    p.add_argument("--data", required=True, help="COCO 2017 folder (annotations/captions_*2017.json), a captions "
                   ".json, or a .txt with one caption per line")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics, validation images, the result)")
    p.add_argument("--resume", action="store_true", help="continue the newest checkpoint in --out")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings, e.g. steps=2000 loss.cutn=16")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = FFTrainConfig.load(a.config, a.overrides)
        trainer = FeedForwardTrainer(cfg, a.data, a.out, resume=a.resume)
    except (TrainConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    try:
        print(trainer.fit())  # noqa: T201 - CLI output
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
