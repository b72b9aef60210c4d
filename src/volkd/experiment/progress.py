"""The live progress view of a study: one bar for the study, one for the current trial's epochs."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from volkd.experiment.trials import Trial


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

