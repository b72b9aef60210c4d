"""Run a whole study and write its report: the layer above the runner and the report.

:func:`run_study` = :func:`volkd.experiment.runner.execute_study` (data, splits, trials,
artefacts) followed by :func:`volkd.report.render.build_report`; ``volkd run`` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console

from volkd.experiment.config import StudyConfig
from volkd.experiment.runner import execute_study
from volkd.report.render import build_report


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


def run_study(cfg: StudyConfig, out: str | Path | None = None, *, force: bool = False, new: bool = False,
              progress: bool = True, console: Console | None = None, executor: str | None = None,
              address: str | None = None) -> StudyOutcome:
    """Run (or resume) the study described by ``cfg`` in ``out`` and render its report.

    ``executor`` (``local`` | ``ray``) and ``address`` override ``cfg.execution`` (see
    volkd.experiment.executors); the results do not depend on them. The report is written while
    the study folder is still locked (volkd.locks).
    """
    run = execute_study(cfg, out, force=force, new=new, progress=progress, console=console, executor=executor,
                        address=address, finish=lambda store: build_report(store, cfg))
    rep = run.finished
    return StudyOutcome(run.store.root, rep["headline"], rep["report_html"], rep["report_md"], run.n_trials, run.n_run,
                        run.n_skipped, run.n_failed, run.wall_seconds)
