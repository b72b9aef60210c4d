"""Run a study: data → splits → trials (resumable, on the local or Ray executor) → study artefacts.

Per repeat the baselines (SBR, majority class), then the 3D teacher (trained once), then every student
(projection × KD) distilled from that repeat's teacher. A failing trial is stored as failed
with its error and the study goes on. The report is rendered by the layer above
(:func:`volkd.study.run_study` runs a study and writes its report).

The data are loaded, verified and split before the study folder is created or touched; the
folder is locked (volkd.locks) while the study runs, by the coordinating process only.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from volkd.atomic import check_sources, clean_stale_inside, probe_writable, write_json
from volkd.data.cohort import Cohort
from volkd.data.splits import Split, check_no_leakage, make_splits, save_splits
from volkd.errors import ConfigError
from volkd.experiment import artefacts
from volkd.experiment.config import StudyConfig
from volkd.experiment.executors import get_executor
from volkd.experiment.progress import ProgressView
from volkd.experiment.store import StudyStore, next_free_path
from volkd.experiment.trial_exec import StudyContext, load_dataset
from volkd.experiment.trials import plan_trials
from volkd.locks import output_lock
from volkd.paths import safe_name
from volkd.provenance import provenance


@dataclass
class StudyRun:
    """What :func:`execute_study` returns: the study's store, trial counts and wall time."""

    store: StudyStore
    n_trials: int
    n_run: int
    n_skipped: int
    n_failed: int
    wall_seconds: float
    finished: Any = None  # what ``finish(store)`` returned (volkd.study: the report)


# ------------------------------------------------------------------- data
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


def study_root(cfg: StudyConfig, out: str | Path | None = None, new: bool = False) -> Path:
    """The study folder: ``out`` (default :func:`default_out`), or with ``new`` the next free ``<out>-N``."""
    root = Path(out) if out is not None else default_out(cfg)
    return next_free_path(root) if new else root


# ------------------------------------------------------------------ study
def execute_study(cfg: StudyConfig, out: str | Path | None = None, *, force: bool = False, new: bool = False,
                  progress: bool = True, console: Console | None = None, executor: str | None = None,
                  address: str | None = None, finish: Callable[[StudyStore], Any] | None = None) -> StudyRun:
    """Run (or resume) the study described by ``cfg`` in ``out``: its trials and artefacts, no report.

    ``executor`` (``local`` | ``ray``) and ``address`` override ``cfg.execution`` (see
    volkd.experiment.executors); the results do not depend on them. Nothing is created before
    the data load, verify and split; the folder stays locked until ``finish(store)`` (the layer
    above's report) has run too.
    """
    t0 = time.perf_counter()
    runner_ = get_executor(cfg.execution, executor, address)
    root = study_root(cfg, out, new)
    check_sources(root, [Path(str(d.path)).expanduser() for d in (cfg.dataset, *cfg.external) if d.kind == "cohort"])
    probe_writable(root)
    cohort = load_dataset(cfg.dataset)
    externals = {e.name: load_dataset(e, where=f"external[{e.name}]") for e in cfg.external}
    splits, proto = make_study_splits(cfg, cohort)
    with output_lock(root):
        store = StudyStore.open(root, cfg, force=force)
        clean_stale_inside(store.root)  # under the lock, before any trial: leftovers of killed runs
        run = _execute_opened(cfg, store, cohort, externals, splits, proto, runner_, t0, progress, console or Console())
        run.finished = finish(store) if finish is not None else None
        return run


def _execute_opened(cfg: StudyConfig, store: StudyStore, cohort: Cohort, externals: dict[str, Cohort], splits: list[Split],
                    proto: dict[str, Any], runner_: Any, t0: float, progress: bool, console: Console) -> StudyRun:
    _check_cohort(store, cohort)
    save_splits(store.root / "splits.json", splits, cohort, proto, force=True)
    env = _environment(cfg, cohort, externals)
    write_json(store.root / "environment.json", env)

    trials = plan_trials(cfg, len(splits))
    pending = [t for t in trials if not store.is_finished(t)]
    ctx = StudyContext(cfg, store, cohort, externals, splits)
    with ProgressView(progress, console) as view:
        if len(pending) < len(trials):
            console.print(f"resuming {store.root}: {len(trials) - len(pending)} of {len(trials)} trial(s) already finished")
        view.start(cfg.name, trials, pending)
        runner_.run(pending, ctx, view)
    artefact_errors = study_artefacts(ctx)
    wall = time.perf_counter() - t0
    env.update(wall_seconds=wall, peak_rss_mb=peak_rss_mb(), trials_run=len(pending), executor=runner_.name, artefact_errors=artefact_errors)
    write_json(store.root / "environment.json", env)
    n_failed_total = sum(1 for r in store.load_all() if r.get("status") != "ok")
    return StudyRun(store, len(trials), len(pending), len(trials) - len(pending), n_failed_total, wall)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its children, in MB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ch = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(me, ch) / 1024.0


def _check_cohort(store: StudyStore, cohort: Cohort) -> None:
    """Refuse to resume a study whose (regenerated or loaded) cohort changed."""
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
    def summ(c: Cohort, source: str) -> dict[str, Any]:
        s = c.summary()
        s.pop("intensity", None)
        return {**s, "class_names": c.class_names, "fingerprint": c.meta.fingerprint or c.fingerprint(), "source": source}

    src = "synthetic" if cfg.dataset.kind == "synthetic" else str(cfg.dataset.path)
    return provenance(study=cfg.name, config_hash=cfg.config_hash(), torch_threads=torch.get_num_threads(),
                      cohort=summ(cohort, src),
                      external={n: summ(c, "synthetic" if e.kind == "synthetic" else str(e.path))
                                for (n, c), e in zip(externals.items(), cfg.external)})


# --------------------------------------------------------------- artefacts
def study_artefacts(ctx: StudyContext) -> list[str]:
    """Gallery, cost table and relation graphs for the report; errors are collected, not raised."""
    errors = []
    for name, fn in (("gallery", artefacts.write_galleries), ("cost", artefacts.write_cost_table),
                     ("graphs", artefacts.write_relation_graphs)):
        try:
            fn(ctx.cfg, ctx.store, ctx.cohort, ctx.splits)
        except Exception as e:  # noqa: BLE001 - a missing figure must not lose the study
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return errors
