"""Trial execution, shared by every executor: the study context, the datasets, and one trial
(SBR or majority-class baseline, 3D teacher or distilled 2D student) run, scored and stored.

A failing trial is stored as failed with its error (the study goes on); both executors
(volkd.experiment.executors, volkd.experiment.ray_executor) call :func:`run_trial`.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from volkd.data.cohort import Cohort
from volkd.data.splits import Split
from volkd.data.synth import synthesize
from volkd.distill import get_kd_loss
from volkd.errors import ConfigError, VolkdError
from volkd.evaluate import (
    classification_metrics, cohort_sbr, majority_baseline, majority_predict, predict_labels, sbr_baseline, sbr_predict,
)
from volkd.experiment.config import DatasetConfig, KDConfig, StudyConfig
from volkd.experiment.progress import ProgressView
from volkd.experiment.store import StudyStore
from volkd.experiment.trials import Trial, teacher_of
from volkd.projection import preset
from volkd.train import load_checkpoint, predict_proba, train_student, train_teacher

POSITIVE = 1  # class index of the positive class (PD in ["control", "PD"])


@dataclass
class StudyContext:
    """What every trial of a study needs: its config, store, cohorts and splits."""

    cfg: StudyConfig
    store: StudyStore
    cohort: Cohort
    externals: dict[str, Cohort]
    splits: list[Split]


def load_dataset(ds: DatasetConfig, where: str = "dataset", verify: bool = True) -> Cohort:
    """The built-in synthetic cohort (seeded) or a cohort folder (its content verified against
    cohort.json unless ``verify=False``: a changed volumes.npy or scans.csv is an error)."""
    if ds.kind == "cohort":
        return Cohort.load(Path(str(ds.path)).expanduser(), verify=verify)
    g = int(ds.grid)
    try:
        return synthesize(**{"n_subjects": ds.n_subjects, "modality": ds.modality, "seed": ds.seed, "grid": (g, g, g), **ds.options})
    except TypeError as e:  # an unknown option name
        raise ConfigError(f"{where}.options: {e}") from None


def run_trial(t: Trial, ctx: StudyContext, view: ProgressView) -> dict[str, Any]:
    """Run one trial and store its record (status ``ok`` or ``failed`` with the error)."""
    cfg, store = ctx.cfg, ctx.store
    split = ctx.splits[t.repeat]
    start = time.perf_counter()
    role = "teacher" if t.kind == "teacher" else "student"
    epochs = cfg.train_dict(role, t.repeat)["epochs"] if t.kind in ("teacher", "student") else None
    view.trial(t, epochs)
    try:
        if t.kind == "sbr":
            proba_test, ext, train_info = _sbr_trial(ctx, split)
        elif t.kind == "majority":
            proba_test, ext, train_info = _majority_trial(ctx, split)
        else:
            proba_test, ext, train_info = _model_trial(t, ctx, split, view, epochs or 1)
        y = ctx.cohort.y[split.test]
        metrics = classification_metrics(y, proba_test, positive=POSITIVE)
        preds = [_pred_frame(ctx.cohort, split.test, proba_test, "test")]
        ext_metrics = {}
        for name, (c, proba) in ext.items():
            ext_metrics[name] = classification_metrics(c.y, proba, positive=POSITIVE)
            preds.append(_pred_frame(c, np.arange(len(c)), proba, name))
        rec = {"status": "ok", "error": None, "metrics": metrics, "external": ext_metrics, "n_test": int(len(split.test)),
               "seconds": time.perf_counter() - start, "train": train_info}
        store.save_result(t, rec, pd.concat(preds, ignore_index=True))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - recorded, the study goes on
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        rec = {"status": "failed", "error": f"{type(e).__name__}: {msg}",
               "traceback": traceback.format_exc(limit=6) if not isinstance(e, VolkdError) else None,
               "seconds": time.perf_counter() - start}
        store.save_result(t, rec)
    return rec


def _pred_frame(cohort: Cohort, idx: np.ndarray, proba: np.ndarray, where: str) -> pd.DataFrame:
    df = pd.DataFrame({"cohort": where, "scan_id": cohort.scan_ids[idx], "subject_id": cohort.subjects[idx],
                       "y_true": cohort.y[idx], "y_pred": predict_labels(proba, POSITIVE), "p_pos": proba[:, POSITIVE]})
    for j, c in enumerate(cohort.class_names):
        df[f"proba_{c}"] = proba[:, j]
    return df


def _sbr_trial(ctx: StudyContext, split: Split) -> tuple[np.ndarray, dict[str, tuple[Cohort, np.ndarray]], dict[str, Any]]:
    proba, info = sbr_baseline(ctx.cohort, split, seed=ctx.cfg.seed + split.repeat)
    ext = {n: (c, sbr_predict(info, cohort_sbr(c))) for n, c in ctx.externals.items()}
    keep = {k: info[k] for k in ("C", "C_selection", "coef", "intercept") if k in info}
    return proba, ext, {"model": "sbr+logistic_regression", **keep}


def _majority_trial(ctx: StudyContext, split: Split) -> tuple[np.ndarray, dict[str, tuple[Cohort, np.ndarray]], dict[str, Any]]:
    proba, info = majority_baseline(ctx.cohort, split)
    ext = {n: (c, majority_predict(info, len(c))) for n, c in ctx.externals.items() if c.class_names == ctx.cohort.class_names}
    return proba, ext, {"model": "majority_class", **info}


def kd_spec(kd: KDConfig) -> dict[str, Any]:
    """The ``{"name", **params}`` for volkd.distill.get_kd_loss (temperature where the loss takes one)."""
    accepted = get_kd_loss(kd.name).params()
    d: dict[str, Any] = {"name": kd.name, **kd.params}
    if "temperature" in accepted:
        d.setdefault("temperature", kd.temperature)
    return d


def _model_spec(mc: Any, **fields: Any) -> dict[str, Any]:
    return {"arch": mc.arch, "width": mc.width, "stem_stride": mc.stem_stride, "stem_kernel": mc.stem_kernel, **fields}


def _model_trial(t: Trial, ctx: StudyContext, split: Split, view: ProgressView,
                 epochs: int) -> tuple[np.ndarray, dict[str, tuple[Cohort, np.ndarray]], dict[str, Any]]:
    cfg, store, cohort = ctx.cfg, ctx.store, ctx.cohort
    out = store.model_dir(t)
    # resume an interrupted run (last.pt without result.json); otherwise start clean
    resume = (out / "last.pt").is_file() and not (out / "result.json").is_file()
    on_epoch = _epoch_cb(view, t.trial_id, epochs)
    n_classes = len(cohort.class_names)
    t0 = time.perf_counter()
    if t.kind == "teacher":
        tc = {**cfg.train_dict("teacher", t.repeat), "progress": False}
        res = train_teacher(cohort, split, _model_spec(cfg.teacher, spatial_dims=3, num_classes=n_classes), tc, out,
                            resume=resume, force=not resume, on_epoch_end=on_epoch)
    else:
        kd = cfg.kd_config(str(t.kd))
        teacher_ckpt = None
        if kd.name != "none":
            teacher_trial = teacher_of(t)
            if not store.is_finished(teacher_trial):
                raise ConfigError(f"the teacher of repeat {t.repeat} did not finish (see {store.result_path(teacher_trial).name}); "
                                  "a KD student needs it")
            teacher_ckpt = store.model_dir(teacher_trial) / "best.pt"
        spec = preset(str(t.projection))
        tc = {**cfg.train_dict("student", t.repeat, kd), "progress": False}
        mspec = _model_spec(cfg.student, spatial_dims=2, num_classes=n_classes, in_channels=spec.in_channels, n_views=spec.n_views)
        res = train_student(cohort, split, spec, mspec, kd_spec(kd), teacher_ckpt, tc, out, resume=resume, force=not resume,
                            on_epoch_end=on_epoch)
    seconds = time.perf_counter() - t0
    ckpt = load_checkpoint(res.best_checkpoint)
    proba = predict_proba(ckpt, np.asarray(cohort.volumes[split.test]))
    ext = {n: (c, predict_proba(ckpt, np.asarray(c.volumes))) for n, c in ctx.externals.items()}
    history = [{k: (v if not isinstance(v, (np.floating,)) else float(v)) for k, v in row.items()
                if isinstance(v, (int, float, bool, np.floating))} for row in res.history]
    info = {"epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "best_metric": res.best_metric, "monitor": res.monitor,
            "stopped_early": res.stopped_early, "seconds": seconds, "checkpoint": str(Path(res.best_checkpoint).relative_to(store.root)),
            "history": history}
    return proba, ext, info


def _epoch_cb(view: ProgressView, label: str, total: int) -> Callable[[int, dict[str, Any]], None]:
    def cb(epoch: int, row: dict[str, Any]) -> None:
        view.epoch(epoch, total, row, label)
    return cb
