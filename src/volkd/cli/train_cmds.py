"""train commands (registered on the shared typer app): ``volkd train-teacher``, ``volkd train-student``."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from volkd.atomic import probe_writable
from volkd.cli.app import app
from volkd.errors import ConfigError
from volkd.locks import output_lock

# Library modules are imported inside the commands, not here: `volkd --help` stays fast (see volkd/cli/__init__.py).

console = Console(stderr=True)

_EPOCHS = typer.Option(100, "--epochs", help="Maximum epochs (early stopping may end sooner).")
_BATCH = typer.Option(32, "--batch-size", help="Global batch size.")
_LR = typer.Option(1e-3, "--lr", help="Learning rate.")
_OPT = typer.Option("radam", "--optimizer", help="radam (the study's), adam or adamw.")
_SCHED = typer.Option("cosine_warm_restarts", "--scheduler", help="cosine_warm_restarts (per epoch, T_0=10, T_mult=2), cosine or none.")
_PATIENCE = typer.Option(20, "--patience", help="Early-stopping patience in epochs.")
_MONITOR = typer.Option("val_loss", "--monitor", help="val_loss, val_balanced_accuracy, val_auc or val_accuracy.")
_CW = typer.Option("inverse_frequency", "--class-weighting", help="inverse_frequency (weighted CE), sampler (balanced batches) or none.")
_SEED = typer.Option(0, "--seed", help="Random seed.")
_NORM = typer.Option("zscore", "--normalizer", help="zscore (voxel-wise, fit on train), global_zscore, reference or none.")
_AUG = typer.Option(False, "--augment", help="Small affine + intensity + noise augmentation (no L-R flip).")
_WIDTH = typer.Option(None, "--width", help="First-stage channels of the network (default: the arch's).")
_SPLIT = typer.Option(None, "--split", help="Split file from `volkd split` (default: subject-level 60/20/20 hold-out, recorded in DIR).")
_REPEAT = typer.Option(0, "--repeat", help="Which repeat of the split to use.")
_RESUME = typer.Option(False, "--resume", help="Continue an interrupted run in DIR.")
_FORCE = typer.Option(False, "--force", help="Replace a finished (or interrupted) run in DIR.")
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show per-epoch progress bars.")
_DEVICE = typer.Option("auto", "--device", help="Torch device: auto (CUDA when present, else CPU), cpu, cuda or cuda:1.")
_PRECISION = typer.Option("fp32", "--precision", help="fp32, or amp: mixed precision on CUDA (bf16, or fp16 with loss scaling); no-op on CPU.")
_TB = typer.Option(False, "--tensorboard", help="Also log to DIR/tensorboard (if tensorboard is installed).")


def _config(**kw: Any) -> Any:
    from volkd.train.config import TrainConfig

    aug = kw.pop("augment")
    return TrainConfig.from_dict({**kw, "augment": {"enabled": aug}}, where="command-line options")


def _locked(out: Path) -> contextlib.AbstractContextManager[Any]:
    """The run folder's lock, held by the coordinating process only (rank 0 under torchrun)."""
    probe_writable(out)
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return output_lock(out)


def _report(res: Any) -> None:
    console.print(f"{res.kind}: best {res.monitor} {res.best_metric:.4f} at epoch {res.best_epoch} "
                  f"({res.epochs_run} epochs{', stopped early' if res.stopped_early else ''}); checkpoint {res.best_checkpoint}")
    if res.test_metrics:
        m = res.test_metrics
        console.print(f"test: accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}, AUC {m['auc']:.3f}")


def _kd_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--kd-param: expected KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


@app.command("train-teacher")
def train_teacher_cmd(
    cohort: Path = typer.Argument(..., help="Cohort directory."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, history, split)."),
    split: Optional[Path] = _SPLIT, repeat: int = _REPEAT,
    model: str = typer.Option("resnet18", "--model", help="3D backbone: lightcnn, resnet10/18/34 or densenet121."),
    width: Optional[int] = _WIDTH, epochs: int = _EPOCHS, batch_size: int = _BATCH, lr: float = _LR, optimizer: str = _OPT,
    scheduler: str = _SCHED, patience: int = _PATIENCE, monitor: str = _MONITOR, class_weighting: str = _CW, seed: int = _SEED,
    normalizer: str = _NORM, augment: bool = _AUG, resume: bool = _RESUME, force: bool = _FORCE, progress: bool = _PROGRESS,
    device: str = _DEVICE, precision: str = _PRECISION, tensorboard: bool = _TB,
) -> None:
    """Train the 3D teacher on a cohort's volumes."""
    from volkd.data.cohort import Cohort
    from volkd.models import ModelSpec
    from volkd.train.api import resolve_split, train_teacher

    c = Cohort.load(cohort)
    cfg = _config(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, scheduler=scheduler, patience=patience,
                  monitor=monitor, class_weighting=class_weighting, seed=seed, normalizer=normalizer, augment=augment, progress=progress,
                  device=device, precision=precision, tensorboard=tensorboard)
    spec = ModelSpec(arch=model, spatial_dims=3, in_channels=1, num_classes=len(c.class_names), width=width)
    with _locked(out):
        res = train_teacher(c, resolve_split(c, split, repeat), spec, cfg, out, resume=resume, force=force)
    _report(res)


@app.command("train-student")
def train_student_cmd(
    cohort: Path = typer.Argument(..., help="Cohort directory."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, history, split, teacher cache)."),
    projection: str = typer.Option("fuseme", "--projection", help="Projection preset (fuseme, early, joint, mip, ...)."),
    kd: str = typer.Option("graph", "--kd", help="Distillation loss: graph, none, hinton, sp or rkd."),
    kd_param: list[str] = typer.Option([], "--kd-param", help="KD loss parameter KEY=VALUE (repeatable), e.g. affinity=knn."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher checkpoint (best.pt); needed unless --kd none."),
    split: Optional[Path] = _SPLIT, repeat: int = _REPEAT,
    model: str = typer.Option("resnet18", "--model", help="2D backbone: lightcnn, resnet10/18/34 or densenet121."),
    width: Optional[int] = _WIDTH, epochs: int = _EPOCHS, batch_size: int = _BATCH, lr: float = _LR, optimizer: str = _OPT,
    scheduler: str = _SCHED, patience: int = _PATIENCE, monitor: str = _MONITOR, class_weighting: str = _CW, seed: int = _SEED,
    normalizer: str = _NORM, augment: bool = _AUG,
    w_cls: float = typer.Option(1.0, "--w-cls", help="Weight of the classification loss."),
    w_kd: float = typer.Option(5.0, "--w-kd", help="Weight of the KD loss."),
    teacher_cache_dir: Optional[Path] = typer.Option(None, "--teacher-cache-dir", help="Share teacher-output caches between runs here."),
    resume: bool = _RESUME, force: bool = _FORCE, progress: bool = _PROGRESS, device: str = _DEVICE, precision: str = _PRECISION,
    tensorboard: bool = _TB,
) -> None:
    """Train a 2D student on projections, distilled from a frozen 3D teacher."""
    from volkd.data.cohort import Cohort
    from volkd.train.api import resolve_split, student_model_spec, train_student

    c = Cohort.load(cohort)
    cfg = _config(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, scheduler=scheduler, patience=patience,
                  monitor=monitor, class_weighting=class_weighting, seed=seed, normalizer=normalizer, augment=augment,
                  w_cls=w_cls, w_kd=w_kd, teacher_cache_dir=str(teacher_cache_dir) if teacher_cache_dir else None, progress=progress,
                  device=device, precision=precision, tensorboard=tensorboard)
    spec = student_model_spec(model, projection, len(c.class_names), width=width)
    with _locked(out):
        res = train_student(c, resolve_split(c, split, repeat), projection, spec, {"name": kd, **_kd_params(kd_param)},
                            teacher, cfg, out, resume=resume, force=force)
    _report(res)
