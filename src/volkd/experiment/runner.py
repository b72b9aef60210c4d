"""Run a study locally: data → splits → trials (resumable) → study artefacts → report.

Per repeat the SBR baseline, then the 3D teacher (trained once), then every student
(projection × KD) distilled from that repeat's teacher. A failing trial is stored as failed
with its error and the study goes on; the report lists failures.
"""

from __future__ import annotations

import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from volkd.atomic import check_sources, clean_stale_inside, probe_writable, write_json
from volkd.data.cohort import Cohort
from volkd.data.splits import Split, check_no_leakage, make_splits, save_splits
from volkd.errors import ConfigError, VolkdError
from volkd.evaluate import classification_metrics, cohort_sbr, predict_labels, sbr_baseline, sbr_predict
from volkd.experiment.config import DatasetConfig, KDConfig, StudyConfig
from volkd.experiment.store import StudyStore, next_free_path
from volkd.experiment.trials import Trial, plan_trials
from volkd.locks import output_lock
from volkd.paths import safe_name
from volkd.provenance import provenance
from volkd.train import load_checkpoint, predict_proba, train_student, train_teacher

POSITIVE = 1  # class index of the positive class (PD in ["control", "PD"])


@dataclass
class StudyOutcome:
    """What ``run_study`` returns: the folder, the headline table and counts."""

    root: Path
    headline: pd.DataFrame
    report_html: Path
    report_md: Path
    n_trials: int
    n_run: int
    n_skipped: int
    n_failed: int
    wall_seconds: float


# ------------------------------------------------------------------- data
def load_dataset(ds: DatasetConfig, where: str = "dataset", verify: bool = True) -> Cohort:
    """The built-in synthetic cohort (seeded) or a cohort folder (its content verified against
    cohort.json unless ``verify=False``: a changed volumes.npy or scans.csv is an error)."""
    if ds.kind == "cohort":
        return Cohort.load(Path(str(ds.path)).expanduser(), verify=verify)
    from volkd.data.synth import synthesize

    g = int(ds.grid)
    try:
        return synthesize(**{"n_subjects": ds.n_subjects, "modality": ds.modality, "seed": ds.seed, "grid": (g, g, g), **ds.options})
    except TypeError as e:  # an unknown option name
        raise ConfigError(f"{where}.options: {e}") from None


def make_study_splits(cfg: StudyConfig, cohort: Cohort) -> tuple[list[Split], dict[str, Any]]:
    """The study's subject-level splits (checked for leakage)."""
    s = cfg.split
    splits, proto = make_splits(cohort, s.protocol, n_repeats=s.repeats, fractions=s.fractions, k=s.repeats,
                                val_fraction=s.val_fraction, seed=s.seed)
    for sp in splits:
        check_no_leakage(cohort, sp)
    return splits, proto


def default_out(cfg: StudyConfig) -> Path:
    """``volkd-runs/<study name>`` (the name made safe as a folder name, see volkd.paths.safe_name)."""
    return Path("volkd-runs") / safe_name(cfg.name)


# --------------------------------------------------------------- progress
class ProgressView:
    """Live view: the study (ETA weighted by each trial kind's typical cost) and the current
    trial's epochs (validation loss)."""

    def __init__(self, enabled: bool, console: Console | None) -> None:
        self.enabled = enabled
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, transient=False, disable=not enabled,
        )
        self.overall: TaskID | None = None
        self.current: TaskID | None = None
        self.n_done = 0
        self.n_total = 0
        self.name = ""

    def __enter__(self) -> "ProgressView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, name: str, trials: list[Trial], pending: list[Trial]) -> None:
        """One bar for the study: total = summed cost of all trials, finished ones already counted."""
        self.name, self.n_total, self.n_done = name, len(trials), len(trials) - len(pending)
        total = sum(t.cost for t in trials)
        done = total - sum(t.cost for t in pending)
        self.overall = self.progress.add_task(self._label(), total=max(total, 1e-9), completed=done)

    def _label(self) -> str:
        return f"study {self.name}: trial {min(self.n_done + 1, self.n_total)}/{self.n_total}"

    def trial(self, t: Trial, epochs: int | None) -> None:
        """A fresh bar for trial ``t`` (elapsed time and ETA of its own epochs)."""
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.current = self.progress.add_task(f"  {t.trial_id}", total=epochs or 1)

    def epoch(self, epoch: int, total: int, row: dict[str, Any], label: str) -> None:
        assert self.current is not None
        vl = row.get("val_loss")
        extra = f" val_loss {vl:.3f}" if isinstance(vl, float) else ""
        self.progress.update(self.current, completed=epoch + 1, description=f"  {label} epoch {epoch + 1}/{total}{extra}")

    def done(self, t: Trial, ok: bool) -> None:
        assert self.overall is not None
        self.n_done += 1
        self.progress.update(self.overall, advance=t.cost, description=self._label())
        if not ok:
            self.progress.console.print(f"[red]failed:[/] {t.trial_id} (see trials/{t.trial_id}.json)")


# ------------------------------------------------------------------ study
def run_study(cfg: StudyConfig, out: str | Path | None = None, *, force: bool = False, new: bool = False,
              progress: bool = True, console: Console | None = None, executor: str | None = None,
              address: str | None = None) -> StudyOutcome:
    """Run (or resume) the study described by ``cfg`` in ``out`` and render its report.

    ``executor`` (``local`` | ``ray``) and ``address`` override ``cfg.execution`` (see
    volkd.experiment.executors); the results do not depend on them. The data are loaded,
    verified and split before the study folder is created or touched; the folder is locked
    (volkd.locks) while the study runs.
    """
    from volkd.experiment.executors import get_executor

    t0 = time.perf_counter()
    runner_ = get_executor(cfg.execution, executor, address)
    root = Path(out) if out is not None else default_out(cfg)
    root = next_free_path(root) if new else root
    check_sources(root, [Path(str(d.path)).expanduser() for d in (cfg.dataset, *cfg.external) if d.kind == "cohort"])
    probe_writable(root)
    cohort = load_dataset(cfg.dataset)
    externals = {e.name: load_dataset(e, where=f"external[{e.name}]") for e in cfg.external}
    splits, proto = make_study_splits(cfg, cohort)
    with output_lock(root):
        store = StudyStore.open(root, cfg, force=force)
        clean_stale_inside(store.root)  # under the lock, before any trial: leftovers of killed runs
        return _run_opened(cfg, store, cohort, externals, splits, proto, runner_, t0, progress, console or Console())


def _run_opened(cfg: StudyConfig, store: StudyStore, cohort: Cohort, externals: dict[str, Cohort], splits: list[Split],
                proto: dict[str, Any], runner_: Any, t0: float, progress: bool, console: Console) -> StudyOutcome:
    from volkd.report.render import build_report

    _check_cohort(store, cohort)
    save_splits(store.root / "splits.json", splits, cohort, proto, force=True)
    env = _environment(cfg, cohort, externals)
    write_json(store.root / "environment.json", env)

    trials = plan_trials(cfg, len(splits))
    pending = [t for t in trials if not store.is_finished(t)]
    ctx = _Context(cfg, store, cohort, externals, splits)
    with ProgressView(progress, console) as view:
        if len(pending) < len(trials):
            console.print(f"resuming {store.root}: {len(trials) - len(pending)} of {len(trials)} trial(s) already finished")
        view.start(cfg.name, trials, pending)
        runner_.run(pending, ctx, view)
    artefact_errors = study_artefacts(ctx)
    wall = time.perf_counter() - t0
    env.update(wall_seconds=wall, peak_rss_mb=peak_rss_mb(), trials_run=len(pending), executor=runner_.name, artefact_errors=artefact_errors)
    write_json(store.root / "environment.json", env)
    rep = build_report(store, cfg)
    n_failed_total = sum(1 for r in store.load_all() if r.get("status") != "ok")
    return StudyOutcome(store.root, rep["headline"], rep["report_html"], rep["report_md"], len(trials), len(pending),
                        len(trials) - len(pending), n_failed_total, wall)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its children, in MB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ch = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(me, ch) / 1024.0


def _check_cohort(store: StudyStore, cohort: Cohort) -> None:
    """Refuse to resume a study whose (regenerated or loaded) cohort changed."""
    import json

    fp = cohort.meta.fingerprint or cohort.fingerprint()
    p = store.root / "study.json"
    rec = json.loads(p.read_text())
    if rec.get("cohort_fingerprint") and rec["cohort_fingerprint"] != fp:
        raise ConfigError(f"{store.root}: the cohort differs from the one this study started with (fingerprint "
                          f"{rec['cohort_fingerprint'][:12]} ≠ {fp[:12]}); pass --new or --force to start over")
    if not rec.get("cohort_fingerprint"):
        rec["cohort_fingerprint"] = fp
        write_json(p, rec)
    cohort.meta.fingerprint = fp


def _environment(cfg: StudyConfig, cohort: Cohort, externals: dict[str, Cohort]) -> dict[str, Any]:
    import torch

    def summ(c: Cohort, source: str) -> dict[str, Any]:
        s = c.summary()
        s.pop("intensity", None)
        return {**s, "class_names": c.class_names, "fingerprint": c.meta.fingerprint or c.fingerprint(), "source": source}

    src = "synthetic" if cfg.dataset.kind == "synthetic" else str(cfg.dataset.path)
    return provenance(study=cfg.name, config_hash=cfg.config_hash(), torch_threads=torch.get_num_threads(),
                      cohort=summ(cohort, src),
                      external={n: summ(c, "synthetic" if e.kind == "synthetic" else str(e.path))
                                for (n, c), e in zip(externals.items(), cfg.external)})


@dataclass
class _Context:
    cfg: StudyConfig
    store: StudyStore
    cohort: Cohort
    externals: dict[str, Cohort]
    splits: list[Split]


# ------------------------------------------------------------------ trials
def run_trial(t: Trial, ctx: _Context, view: ProgressView) -> dict[str, Any]:
    """Run one trial and store its record (status ``ok`` or ``failed`` with the error)."""
    cfg, store = ctx.cfg, ctx.store
    split = ctx.splits[t.repeat]
    start = time.perf_counter()
    role = "teacher" if t.kind == "teacher" else "student"
    epochs = cfg.train_dict(role, t.repeat)["epochs"] if t.kind != "sbr" else None
    view.trial(t, epochs)
    try:
        if t.kind == "sbr":
            proba_test, ext, train_info = _sbr_trial(ctx, split)
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


def _sbr_trial(ctx: _Context, split: Split) -> tuple[np.ndarray, dict[str, tuple[Cohort, np.ndarray]], dict[str, Any]]:
    proba, info = sbr_baseline(ctx.cohort, split, seed=ctx.cfg.seed + split.repeat)
    ext = {n: (c, sbr_predict(info, cohort_sbr(c))) for n, c in ctx.externals.items()}
    keep = {k: info[k] for k in ("C", "C_selection", "coef", "intercept") if k in info}
    return proba, ext, {"model": "sbr+logistic_regression", **keep}


def kd_spec(kd: KDConfig) -> dict[str, Any]:
    """The ``{"name", **params}`` for volkd.distill.get_kd_loss (temperature where the loss takes one)."""
    from volkd.distill import get_kd_loss

    accepted = get_kd_loss(kd.name).params()
    d: dict[str, Any] = {"name": kd.name, **kd.params}
    if "temperature" in accepted:
        d.setdefault("temperature", kd.temperature)
    return d


def _model_spec(mc: Any, **fields: Any) -> dict[str, Any]:
    return {"arch": mc.arch, "width": mc.width, "stem_stride": mc.stem_stride, "stem_kernel": mc.stem_kernel, **fields}


def _model_trial(t: Trial, ctx: _Context, split: Split, view: ProgressView,
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
            teacher_trial = Trial(t.repeat, "teacher")
            if not store.is_finished(teacher_trial):
                raise ConfigError(f"the teacher of repeat {t.repeat} did not finish (see {store.result_path(teacher_trial).name}); "
                                  "a KD student needs it")
            teacher_ckpt = store.model_dir(teacher_trial) / "best.pt"
        from volkd.projection import preset

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


# --------------------------------------------------------------- artefacts
def study_artefacts(ctx: _Context) -> list[str]:
    """Gallery, cost table and relation graphs for the report; errors are collected, not raised."""
    from volkd.experiment import artefacts

    errors = []
    for name, fn in (("gallery", artefacts.write_galleries), ("cost", artefacts.write_cost_table),
                     ("graphs", artefacts.write_relation_graphs)):
        try:
            fn(ctx.cfg, ctx.store, ctx.cohort, ctx.splits)
        except Exception as e:  # noqa: BLE001 - a missing figure must not lose the study
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return errors
