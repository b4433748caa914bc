"""Run output on rank 0: progress bar, TensorBoard scalars and reconstruction grids, ``metrics.jsonl``, log lines."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from vqgan_core import atomic_write

from .codebook import CodeUsage
from .config import TrainConfig

logger = logging.getLogger("training")


class RunLogger:
    """Everything a run reports. On ranks other than 0 every method is a no-op (except returning values)."""

    def __init__(self, cfg: TrainConfig, out: Path, is_main: bool, resume_step: int | None = None) -> None:
        self.cfg, self.out, self.main = cfg, out, is_main
        self.tb = None
        self.pbar: tqdm | None = None
        self._skips_reported = 0
        self._fid_note = False
        if not is_main:
            return
        out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        atomic_write(out / "config.yaml", lambda p: Path(p).write_text(text, encoding="utf-8"))
        if cfg.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # an optional extra: the README install has no tensorboard, and the run must go on
                logger.info(
                    "tensorboard not installed: logging to metrics.jsonl only "
                    "(pip install tensorboard to get TensorBoard logs, or set log.tensorboard=false)"
                )
            else:
                # A resumed run drops the events it logged after its checkpoint (they are logged again).
                purge = resume_step + 1 if resume_step is not None else None
                self.tb = SummaryWriter(str(out / "tb"), purge_step=purge)

    def info_once(self, msg: str) -> None:
        """Log on rank 0 only."""
        if self.main:
            logger.info(msg)

    def start(self, step: int, max_steps: int) -> None:
        """Open the progress bar."""
        if self.main and self.cfg.log.progress:
            self.pbar = tqdm(total=max_steps, initial=step, desc=self.cfg.name, dynamic_ncols=True)

    def progress(self, step: int, last: dict[str, float]) -> None:
        """Advance the bar; show the newest losses."""
        if self.pbar is not None:
            self.pbar.update(step - self.pbar.n)
            if last and step % self.cfg.log.every == 0:
                keys = ("train/total_loss", "train/disc_loss", "train/codebook_usage")
                self.pbar.set_postfix({k.split("/")[1]: f"{last[k]:.4g}" for k in keys if k in last})

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard + metrics.jsonl."""
        if not self.main:
            return
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        with open(metrics_path(self.out), "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **values}) + "\n")

    def train_logs(
        self, step: int, logs: dict[str, torch.Tensor], usage: CodeUsage, data_stats: Counter, lr: float
    ) -> dict[str, float]:
        """Turn the step's loss tensors into floats (the only host sync of a step) and record them."""
        vals = {f"train/{k}": float(v) for k, v in logs.items()}
        vals.update({f"train/codebook_{k}": v for k, v in usage.stats().items()})
        vals["train/lr"] = lr
        skipped = sum(v for k, v in data_stats.items() if k.startswith("skipped_"))
        vals["data/skipped_images"] = float(skipped)
        vals["data/converted_images"] = float(sum(v for k, v in data_stats.items() if k.startswith("converted_")))
        if self.main and skipped > self._skips_reported:
            level = logging.WARNING if self._skips_reported == 0 else logging.INFO  # warn once, then keep counting
            logger.log(
                level,
                "data: %d unreadable/too-small images skipped so far (rank 0): %s",
                skipped,
                dict(sorted(data_stats.items())),
            )
            self._skips_reported = skipped
        self.scalars(step, vals)
        return vals

    def images(self, step: int, x: torch.Tensor, xrec: torch.Tensor, n: int = 4) -> None:
        """Inputs (top row) over reconstructions (bottom row) as a TensorBoard image."""
        if self.tb is None:
            return
        from torchvision.utils import make_grid

        both = torch.cat([x[:n].float(), xrec[:n].float()]).clamp(-1, 1).add(1).div(2).cpu()
        self.tb.add_image("reconstructions", make_grid(both, nrow=min(n, x.shape[0])), step)

    def validation(self, step: int, res: dict[str, float], has_fid: bool) -> None:
        """Record validation metrics; say once that rFID is skipped without Inception weights."""
        if not self.main or not res:
            return
        if not has_fid and not self._fid_note:
            logger.info(
                "rFID skipped: no Inception weights (set log.inception_weights to a torchvision "
                "inception_v3 weights file to enable it)"
            )
            self._fid_note = True
        self.scalars(step, {f"val/{k}": v for k, v in res.items()})
        logger.info("step %d validation: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in res.items()))

    def close(self) -> None:
        """Flush everything."""
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None


def metrics_path(out: str | Path) -> Path:
    """Where a run's JSON-lines scalar log lives (the one definition: the logger writes it, tools read it)."""
    return Path(out) / "metrics.jsonl"


def truncate_metrics(out: str | Path, step: int) -> int:
    """Drop records after ``step`` from ``metrics.jsonl`` (atomically); returns how many went.

    Why: a run killed after its last checkpoint logged steps that the resumed run logs again; without this each of
    them would appear twice. A torn last line (killed mid-write) goes too.
    """
    p = metrics_path(out)
    if not p.is_file():
        return 0
    keep, dropped = [], 0
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if rec_step <= step:
            keep.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        atomic_write(p, lambda tmp: Path(tmp).write_text("".join(keep), encoding="utf-8"))
        logger.info(
            "%s: dropped %d records logged after step %d (after the checkpoint this run resumes from; "
            "they are logged again)",
            p,
            dropped,
            step,
        )
    return dropped


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    """All logged scalar records of a run."""
    p = metrics_path(out)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []
