"""The one training loop (teacher and student): epochs, loss, early stopping, logging, resume.

Loss of a global batch B: ``w_cls · Σ_i w_{y_i} CE_i / Σ_i w_{y_i} + w_kd · KD(batch)`` where
``KD`` is the distillation loss's ``total_kd`` (`volkd.distill`; absent for the teacher, and for
a batch smaller than the loss's ``min_batch``). The scheduler is stepped once per EPOCH.
``last.pt`` is written atomically after every epoch with everything needed to continue
bit-for-bit: weights, optimizer, scheduler, loss scaler, RNG states (torch, CUDA, numpy,
python), early-stopping state and history.

Per step the loop does compute only: the epoch's logged sums stay on the device (float64) and
are read once per epoch; inputs, labels, class weights and teacher outputs are placed on the
device once per run (:mod:`volkd.train.device`).
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
import torch.utils.deterministic
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from volkd.atomic import write_text
from volkd.errors import ConfigError
from volkd.train.checkpoint import load_checkpoint, save_checkpoint
from volkd.train.config import TrainConfig
from volkd.train.data import ArrayData, apply_augment, epoch_order, global_batches, sample_augment_params, seeded_generator
from volkd.train.device import Precision, place_inputs, resolve_device, resolve_precision
from volkd.train.distributed import (
    DistContext, all_reduce_sum, barrier, context, gather_with_grad, shard, shard_sizes, sync_buffers, wrap_model,
)

KDFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
BEST, LAST = "best.pt", "last.pt"
HISTORY_JSONL, HISTORY_CSV = "history.jsonl", "history.csv"
#: config fields that may change between an interrupted run and its resumption (``device``:
#: e.g. finish on the CPU a run started on a GPU; ``precision``: the resumed epochs then differ
#: from an uninterrupted run's, as they would on another device)
RESUMABLE_CHANGES = ("progress", "device", "precision", "eval_batch_size", "teacher_cache_dir", "tensorboard")


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
class _Placed:
    """What a run keeps on its device (built once per run, see ``Loop._placed``)."""

    device: torch.device
    precision: Precision
    x: torch.Tensor  # training inputs: on the device, or pinned host memory
    y: torch.Tensor  # training labels on the device
    class_weight: torch.Tensor | None
    teacher_emb: torch.Tensor | None
    teacher_logits: torch.Tensor | None
    scaler: torch.amp.GradScaler | None
    sources: tuple[object, object]  # (train data, teacher outputs) these were built from


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
    _place: _Placed | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ setup
    def _placed(self) -> _Placed:
        """Resolve ``device``/``precision`` and move the model and the run's tensors there (once;
        again if ``train`` or ``teacher`` were replaced)."""
        if self._place is None or self._place.sources[0] is not self.train or self._place.sources[1] is not self.teacher:
            c = self.config
            device = resolve_device(c.device)
            prec = resolve_precision(c.precision, device)
            self.model.to(device)
            if c.channels_last:  # oneDNN's NHWC/NDHWC kernels: measured 5–22 % less CPU per step
                self.model.to(memory_format=torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d)
            t = self.teacher
            self._place = _Placed(
                device, prec, place_inputs(self.train.x, device), self.train.y.to(device),
                self.class_weight.to(device) if self.class_weight is not None else None,
                t.embeddings.to(device) if t is not None else None, t.logits.to(device) if t is not None else None,
                self._place.scaler if self._place is not None else prec.scaler(), (self.train, t))
        return self._place

    def _optimizer(self) -> torch.optim.Optimizer:
        """RAdam/Adam/AdamW; multi-tensor (``foreach``) updates: one kernel per step and state
        kind instead of one per parameter (≈ 2× faster steps for the small networks)."""
        c = self.config
        self._placed()  # parameters on the device before the optimizer sees them
        params = [p for p in self.model.parameters() if p.requires_grad]
        cls = {"radam": torch.optim.RAdam, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[c.optimizer]
        return cls(params, lr=c.lr, weight_decay=c.weight_decay, foreach=True)

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
            placed = self._placed()
            # what actually ran (the config may say auto/amp): recorded in every checkpoint
            self.meta["runtime"] = {"device": str(placed.device), "precision": placed.precision.name,
                                    "channels_last": c.channels_last,
                                    "torch_threads": torch.get_num_threads()}
            opt = self._optimizer()
            sched = self._scheduler(opt)
            stopper = _Stopper(c.monitor_mode, c.patience, c.min_delta)
            history: list[dict[str, Any]] = []
            start = 0
            last = self.out_dir / LAST
            if resume and last.is_file():
                start, history = self._restore(last, opt, sched, stopper)
            net = wrap_model(self.model, self.ctx, str(placed.device))
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
                        "scaler": placed.scaler.state_dict() if placed.scaler is not None else None,
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
        # a field added after the checkpoint was written counts as its default there
        defaults = TrainConfig().model_dump(mode="json")
        old.update({k: defaults[k] for k in new if k not in old and k in defaults})
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise ConfigError(f"{last}: cannot resume with a different configuration (changed: {', '.join(diff)}); use the original options or --force to start over")
        if ck.cohort_fingerprint != self.meta["cohort_fingerprint"] or ck.split != self.meta["split"]:
            raise ConfigError(f"{last}: the interrupted run used another cohort or split; resume with the same data or pass --force")
        self.model.load_state_dict(ck.state_dict)
        opt.load_state_dict(st["optimizer"])  # moves the state to the parameters' device
        for group in opt.param_groups:  # the implementation of this version, whatever wrote the state
            group["foreach"] = True
        if sched is not None and st["scheduler"] is not None:
            sched.load_state_dict(st["scheduler"])
        scaler = self._placed().scaler
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        for k, v in st["stopper"].items():
            setattr(stopper, k, v)
        _set_rng_state(st["rng"])
        return int(st["next_epoch"]), list(st["history"])

    # ----------------------------------------------------------------- epoch
    def _train_epoch(self, net: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        c, ctx, data = self.config, self.ctx, self.train
        pl = self._placed()
        net.train()
        order = epoch_order(data.y, c.seed, epoch, balanced_sampler=c.class_weighting == "sampler")
        batches = global_batches(order, c.batch_size)
        w_host = self.class_weight
        applies = getattr(self.kd, "applies", lambda n: True)
        sums = _EpochSums(pl.device)
        with _progress(len(batches), f"epoch {epoch}", enabled=c.progress and ctx.is_main) as advance:
            for b, gb in enumerate(batches):
                n = len(gb)
                sizes = shard_sizes(n, ctx.world)
                local = shard(gb, ctx)
                x = pl.x[local].to(pl.device, non_blocking=True)
                y = pl.y[local.to(pl.y.device)]
                if c.augment.enabled:
                    params = sample_augment_params(n, self.spatial_dims, c.augment, seeded_generator(c.seed, 0xA06, epoch, b))
                    start = sum(sizes[:ctx.rank])
                    params = {k: (v[start:start + len(local)] if v.dim() else v) for k, v in params.items()}
                    x = apply_augment(x, params, self.spatial_dims)
                with pl.precision.autocast():
                    logits, emb = net(x)
                logits, emb = logits.float(), emb.float()  # losses in fp32 (a no-op without amp)
                # the class-weight denominator from host copies: no device round trip
                denom = float(w_host[data.y[gb]].sum()) if w_host is not None else float(n)
                ce_sum = F.cross_entropy(logits, y, weight=pl.class_weight, reduction="sum")
                # DDP averages gradients over ranks: scale so the average is the global-batch gradient
                loss = c.w_cls * ce_sum * (ctx.world / denom)
                if self.kd is not None and applies(n):
                    s_emb = gather_with_grad(emb, ctx, sizes)
                    s_log = gather_with_grad(logits, ctx, sizes)
                    scan = data.index[gb].to(pl.device)
                    kd_value, parts = _kd_terms(self.kd, s_emb, s_log, pl.teacher_emb[scan], pl.teacher_logits[scan])
                    loss = loss + c.w_kd * kd_value
                    sums.add_kd(kd_value, parts, n)
                opt.zero_grad(set_to_none=True)
                if pl.scaler is not None:
                    pl.scaler.scale(loss).backward()
                    pl.scaler.step(opt)
                    pl.scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sums.add("train_ce", ce_sum.detach().double() / denom, n)  # this rank's share (summed over ranks below)
                sums.seen += n
                advance()
        sync_buffers(self.model, ctx)
        return sums.epoch_means(ctx, c.w_cls, c.w_kd, kd=self.kd is not None)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, data: ArrayData) -> torch.Tensor:
        """Softmax probabilities for every row (eval mode, no augmentation), on the CPU."""
        pl = self._placed()
        self.model.eval()
        bs = self.config.eval_batch_size
        out = []
        for i in range(0, len(data), bs):
            with pl.precision.autocast():
                logits = self.model(data.x[i:i + bs].to(pl.device, non_blocking=True))[0]
            out.append(torch.softmax(logits.float(), 1))
        return torch.cat(out).cpu() if out else torch.zeros((0, 0))

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
class _EpochSums:
    """An epoch's logged sums (weighted by batch size) as float64 tensors on the run's device:
    no host synchronisation per step; :meth:`epoch_means` reads them once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.values: dict[str, torch.Tensor] = {}
        self.seen = 0  # scans of the epoch's batches
        self.kd_seen = 0  # scans of the batches that had a KD term

    def add(self, key: str, value: torch.Tensor, n: int) -> None:
        v = value.to(self.device, torch.float64) * n
        self.values[key] = self.values[key] + v if key in self.values else v

    def add_kd(self, total: torch.Tensor, parts: dict[str, torch.Tensor], n: int) -> None:
        self.add("train_kd", total.detach(), n)
        for k, v in parts.items():
            if k != "kd":
                self.add(f"train_kd_{k}", v, n)
        self.kd_seen += n

    def epoch_means(self, ctx: DistContext, w_cls: float, w_kd: float, kd: bool) -> dict[str, float]:
        """Per-scan means: ``train_ce`` over every scan (summed over ranks), ``train_kd`` and its
        parts over the scans of batches that had a KD term, ``train_loss`` = the mean objective
        over every scan (a batch without a KD term adds its CE only)."""
        if "train_ce" in self.values:
            self.values["train_ce"] = all_reduce_sum(self.values["train_ce"], ctx)
        keys = list(self.values)
        host = torch.stack([self.values[k] for k in keys]).tolist() if keys else []  # the one sync
        sums = dict(zip(keys, host))
        n, n_kd = max(self.seen, 1), max(self.kd_seen, 1)
        out = {"train_ce": sums.get("train_ce", 0.0) / n}
        out["train_kd"] = sums.get("train_kd", 0.0) / n_kd
        out["train_loss"] = w_cls * out["train_ce"] + w_kd * sums.get("train_kd", 0.0) / n
        for k in keys:
            if k.startswith("train_kd_"):
                out[k] = sums[k] / n_kd
        if kd:
            out["train_kd_scans"] = float(self.kd_seen)
        return out


def _kd_terms(kd: KDFn, se: torch.Tensor, sl: torch.Tensor, te: torch.Tensor, tl: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The KD loss and its parts as tensors: :meth:`KDLoss.terms` when the loss has it (no host
    sync), else the plain callable's float parts."""
    terms = getattr(kd, "terms", None)
    if terms is not None:
        return terms(se, sl, te, tl)
    total, parts = kd(se, sl, te, tl)
    return total, {k: torch.as_tensor(v, dtype=torch.float64) for k, v in parts.items()}


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
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    if st.get("cuda") is not None and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])
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
    """Deterministic algorithms on (or off) for the run, restored afterwards.

    Without filling uninitialised memory (``torch.utils.deterministic.fill_uninitialized_memory``,
    a debugging aid: every ``torch.empty`` was NaN-filled, ≈ 4 % of a small network's step), and
    through the C setter: the public ``torch.use_deterministic_algorithms`` also imports
    TorchInductor to configure it (≈ 2 CPU-s per process; volkd does not compile).
    """
    if on:  # cuBLAS needs this for deterministic matmuls on CUDA; harmless on CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    set_mode = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_mode is None:  # pragma: no cover - other torch versions
        set_mode = torch.use_deterministic_algorithms
    set_mode(on)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        set_mode(prev, warn_only=prev_warn)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


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
