"""The one training loop (teacher and student): epochs, loss, early stopping, logging, resume.

Loss of a global batch B: ``w_cls · Σ_i w_{y_i} CE_i / Σ_i w_{y_i} + w_kd · KD(batch)`` where
``KD`` is the distillation loss's ``total_kd`` (`volkd.distill`; absent for the teacher).
The scheduler is stepped once per EPOCH. ``last.pt`` is written atomically after every
epoch with everything needed to continue bit-for-bit: weights, optimizer, scheduler, RNG
states (torch, numpy, python), early-stopping state and history.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from volkd.atomic import write_text
from volkd.errors import ConfigError
from volkd.train.checkpoint import load_checkpoint, save_checkpoint
from volkd.train.config import TrainConfig
from volkd.train.data import ArrayData, apply_augment, epoch_order, global_batches, sample_augment_params, seeded_generator
from volkd.train.distributed import (
    DistContext, all_reduce_sum, barrier, context, gather_with_grad, shard, shard_sizes, sync_buffers, wrap_model,
)

KDFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
BEST, LAST = "best.pt", "last.pt"
HISTORY_JSONL, HISTORY_CSV = "history.jsonl", "history.csv"
#: config fields that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = ("progress", "device", "eval_batch_size", "teacher_cache_dir", "tensorboard")


@dataclass
class TeacherOutputs:
    """Frozen teacher outputs for every cohort scan, indexed by scan index."""

    embeddings: torch.Tensor
    logits: torch.Tensor


@dataclass
class FitResult:
    """What the loop produced."""

    best_epoch: int
    best_metric: float
    history: list[dict[str, Any]]
    best_path: Path
    last_path: Path
    stopped_early: bool


@dataclass
class _Stopper:
    mode: str
    patience: int
    min_delta: float
    best: float = math.nan
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value``; True if it is the new best."""
        improved = not math.isnan(value) and (
            math.isnan(self.best)
            or (value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta)
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
            self.stopped = self.bad_epochs >= self.patience
        return improved

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "stopped": self.stopped}


@dataclass
class Loop:
    """One training run. ``meta`` is the checkpoint payload minus weights/epoch/metrics."""

    model: torch.nn.Module
    train: ArrayData
    val: ArrayData
    config: TrainConfig
    out_dir: Path
    meta: dict[str, Any]
    spatial_dims: int
    class_weight: torch.Tensor | None = None
    kd: KDFn | None = None
    teacher: TeacherOutputs | None = None
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
    ctx: DistContext = field(default_factory=context)

    # ------------------------------------------------------------------ setup
    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        cls = {"radam": torch.optim.RAdam, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[c.optimizer]
        return cls(params, lr=c.lr, weight_decay=c.weight_decay)

    def _scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        c = self.config
        if c.scheduler == "cosine_warm_restarts":
            return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=c.t0, T_mult=c.t_mult, eta_min=c.eta_min)
        if c.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs, eta_min=c.eta_min)
        return None

    # ------------------------------------------------------------------- run
    def run(self, resume: bool = False) -> FitResult:
        """Train to ``config.epochs`` or early stop; resume from ``last.pt`` if asked and present."""
        c = self.config
        if self.kd is not None and self.teacher is None:
            raise ConfigError("a KD loss needs the teacher's cached outputs (teacher=None)")
        with _deterministic(c.deterministic):
            _seed_everything(c.seed)
            opt = self._optimizer()
            sched = self._scheduler(opt)
            stopper = _Stopper(c.monitor_mode, c.patience, c.min_delta)
            history: list[dict[str, Any]] = []
            start = 0
            last = self.out_dir / LAST
            if resume and last.is_file():
                start, history = self._restore(last, opt, sched, stopper)
            net = wrap_model(self.model, self.ctx, c.device)
            tb = _tensorboard(self.out_dir, c.tensorboard and self.ctx.is_main)
            for epoch in range(start, c.epochs):
                if stopper.stopped:
                    break
                row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
                row.update(self._train_epoch(net, opt, epoch))
                row.update(self.evaluate(self.val, prefix="val_"))
                if sched is not None:
                    sched.step()
                improved = stopper.update(float(row[c.monitor]), epoch)
                row["best"] = improved
                history.append(row)
                if self.ctx.is_main:
                    metrics = {k: v for k, v in row.items() if isinstance(v, float)}
                    if improved:
                        save_checkpoint(self.out_dir / BEST, self._payload(epoch, metrics))
                    state = {
                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict() if sched else None,
                        "rng": _rng_state(), "stopper": stopper.state(), "history": history, "next_epoch": epoch + 1,
                    }
                    save_checkpoint(last, {**self._payload(epoch, metrics), "train_state": state})
                    write_history(self.out_dir, history)
                    _echo_epoch(row, c)
                    if tb is not None:
                        for k, v in metrics.items():
                            tb.add_scalar(k, v, epoch)
                        tb.flush()
                if self.on_epoch_end is not None:
                    self.on_epoch_end(epoch, row)
            if tb is not None:
                tb.close()
        barrier(self.ctx)  # rank 0 has written best.pt/last.pt before any rank reads them
        best_path = self.out_dir / BEST
        if stopper.best_epoch < 0:
            raise ConfigError(f"{self.out_dir}: the monitored metric '{c.monitor}' was never defined (NaN every epoch); choose --monitor val_loss")
        return FitResult(stopper.best_epoch, stopper.best, history, best_path, last, stopper.stopped)

    def _payload(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        sd = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return {**self.meta, "state_dict": sd, "epoch": epoch, "metrics": metrics}

    def _restore(self, last: Path, opt: torch.optim.Optimizer, sched: Any, stopper: _Stopper) -> tuple[int, list[dict[str, Any]]]:
        ck = load_checkpoint(last)
        st = ck.train_state
        if not st:
            raise ConfigError(f"{last}: has no training state to resume from; pass --force to start over")
        old = {k: v for k, v in ck.config.items() if k not in RESUMABLE_CHANGES}
        new = {k: v for k, v in self.config.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise ConfigError(f"{last}: cannot resume with a different configuration (changed: {', '.join(diff)}); use the original options or --force to start over")
        if ck.cohort_fingerprint != self.meta["cohort_fingerprint"] or ck.split != self.meta["split"]:
            raise ConfigError(f"{last}: the interrupted run used another cohort or split; resume with the same data or pass --force")
        self.model.load_state_dict(ck.state_dict)
        opt.load_state_dict(st["optimizer"])
        if sched is not None and st["scheduler"] is not None:
            sched.load_state_dict(st["scheduler"])
        for k, v in st["stopper"].items():
            setattr(stopper, k, v)
        _set_rng_state(st["rng"])
        return int(st["next_epoch"]), list(st["history"])

    # ----------------------------------------------------------------- epoch
    def _train_epoch(self, net: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        c, ctx, data = self.config, self.ctx, self.train
        net.train()
        order = epoch_order(data.y, c.seed, epoch, balanced_sampler=c.class_weighting == "sampler")
        batches = global_batches(order, c.batch_size)
        sums: dict[str, float] = {}
        n_seen = 0
        with _progress(len(batches), f"epoch {epoch}", enabled=c.progress and ctx.is_main) as advance:
            for b, gb in enumerate(batches):
                sizes = shard_sizes(len(gb), ctx.world)
                local = shard(gb, ctx)
                x = data.x[local].to(c.device)
                y = data.y[local].to(c.device)
                if c.augment.enabled:
                    params = sample_augment_params(len(gb), self.spatial_dims, c.augment, seeded_generator(c.seed, 0xA06, epoch, b))
                    start = sum(sizes[:ctx.rank])
                    params = {k: (v[start:start + len(local)] if v.dim() else v) for k, v in params.items()}
                    x = apply_augment(x, params, self.spatial_dims)
                logits, emb = net(x)
                w = self.class_weight
                y_global = data.y[gb]
                denom = float(w[y_global].sum()) if w is not None else float(len(gb))
                ce_sum = F.cross_entropy(logits, y, weight=w.to(c.device) if w is not None else None, reduction="sum")
                # DDP averages gradients over ranks: scale so the average is the global-batch gradient
                loss = c.w_cls * ce_sum * (ctx.world / denom)
                parts: dict[str, float] = {}
                kd_value = torch.zeros(())
                if self.kd is not None:
                    s_emb = gather_with_grad(emb, ctx, sizes)
                    s_log = gather_with_grad(logits, ctx, sizes)
                    scan = data.index[gb]
                    t_emb = self.teacher.embeddings[scan].to(c.device)
                    t_log = self.teacher.logits[scan].to(c.device)
                    kd_value, parts = self.kd(s_emb, s_log, t_emb, t_log)
                    loss = loss + c.w_kd * kd_value
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                ce_global = float(all_reduce_sum(ce_sum.detach(), ctx)) / denom
                row = {"train_ce": ce_global, "train_kd": float(kd_value.detach()),
                       "train_loss": c.w_cls * ce_global + c.w_kd * float(kd_value.detach())}
                row.update({f"train_kd_{k}": float(v) for k, v in parts.items() if k != "kd"})
                for k, v in row.items():
                    sums[k] = sums.get(k, 0.0) + v * len(gb)
                n_seen += len(gb)
                advance()
        sync_buffers(self.model, ctx)
        return {k: v / max(n_seen, 1) for k, v in sums.items()}

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, data: ArrayData) -> torch.Tensor:
        """Softmax probabilities for every row (eval mode, no augmentation)."""
        self.model.eval()
        out = [torch.softmax(self.model(data.x[i:i + self.config.eval_batch_size].to(self.config.device))[0].float(), 1).cpu()
               for i in range(0, len(data), self.config.eval_batch_size)]
        return torch.cat(out) if out else torch.zeros((0, 0))

    def evaluate(self, data: ArrayData, prefix: str = "val_") -> dict[str, float]:
        """Loss (class-weighted CE, the training weights), accuracy, balanced accuracy, AUC."""
        proba = self.predict(data)
        return {f"{prefix}{k}": v for k, v in classification_summary(data.y, proba, self.class_weight).items()}


def classification_summary(y: torch.Tensor, proba: torch.Tensor, class_weight: torch.Tensor | None = None) -> dict[str, float]:
    """Weighted CE ``loss``, ``accuracy``, ``balanced_accuracy`` and ``auc`` (NaN if undefined)."""
    y_np = y.numpy()
    logp = torch.log(proba.clamp_min(1e-12))
    loss = float(F.nll_loss(logp, y, weight=class_weight))
    pred = proba.argmax(1).numpy()
    out = {"loss": loss, "accuracy": float((pred == y_np).mean())}
    with np.errstate(all="ignore"):
        out["balanced_accuracy"] = float(balanced_accuracy_score(y_np, pred)) if len(np.unique(y_np)) > 1 else math.nan
    if len(np.unique(y_np)) < proba.shape[1]:
        out["auc"] = math.nan
    elif proba.shape[1] == 2:
        out["auc"] = float(roc_auc_score(y_np, proba[:, 1].numpy()))
    else:
        out["auc"] = float(roc_auc_score(y_np, proba.numpy(), multi_class="ovr"))
    return out


# ---------------------------------------------------------------- helpers
def write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``history.jsonl`` and ``history.csv`` atomically (one row per epoch)."""
    write_text(out_dir / HISTORY_JSONL, "".join(json.dumps(_json_row(r)) + "\n" for r in history))
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    write_text(out_dir / HISTORY_CSV, buf.getvalue())


def _json_row(r: dict[str, Any]) -> dict[str, Any]:
    """NaN → null so the JSONL is strict JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(tuple(st["numpy"]))
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _tensorboard(out_dir: Path, on: bool) -> Any:
    """A SummaryWriter under ``out_dir/tensorboard``, or None (off, or tensorboard not installed)."""
    if not on:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        import warnings

        warnings.warn("tensorboard is not installed: skipping TensorBoard logging (history.jsonl/csv are written)", stacklevel=2)
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


@contextlib.contextmanager
def _deterministic(on: bool) -> Iterator[None]:
    if on:  # cuBLAS needs this for deterministic matmuls on CUDA; harmless on CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


@contextlib.contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as p:
        task = p.add_task(label, total=total)
        yield lambda: p.advance(task)


def _echo_epoch(row: dict[str, Any], c: TrainConfig) -> None:
    if not c.progress:
        return
    from rich.console import Console

    Console(stderr=True).print(
        f"epoch {row['epoch']:>3}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"val_bacc {row['val_balanced_accuracy']:.3f}  val_auc {row['val_auc']:.3f}  lr {row['lr']:.2e}"
        + ("  *" if row["best"] else ""), highlight=False, soft_wrap=True)
