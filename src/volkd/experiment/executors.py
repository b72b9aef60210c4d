"""Trial executors: where a study's pending trials run.

``local`` runs them one after another in this process (the default, no extra dependency);
``ray`` runs them as Ray tasks (see :mod:`volkd.experiment.ray_executor`, ``pip install
volkd[cluster]``). Both store each trial with the same :class:`~volkd.experiment.store.StudyStore`
record, so a study started with one can be resumed with the other. Both retry a failed trial
``execution.max_retries`` times before leaving it recorded as failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from volkd.errors import ConfigError
from volkd.experiment.config import ExecutionConfig
from volkd.experiment.progress import ProgressView
from volkd.experiment.ray_executor import RayExecutor, require_ray
from volkd.experiment.trial_exec import StudyContext, run_trial
from volkd.experiment.trials import Trial

EXECUTORS: tuple[str, ...] = ("local", "ray")


class Executor(Protocol):
    """Runs pending trials and returns their final records (in the order given)."""

    name: str

    def run(self, trials: list[Trial], ctx: StudyContext, view: ProgressView) -> list[dict[str, Any]]: ...


@dataclass
class LocalExecutor:
    """One trial after another in this process, with the live per-epoch progress view."""

    max_retries: int = 0
    name: str = "local"

    def run(self, trials: list[Trial], ctx: StudyContext, view: ProgressView) -> list[dict[str, Any]]:
        """Run ``trials`` in order (a KD student after its repeat's teacher, as planned)."""
        records = []
        for t in trials:
            rec = run_trial(t, ctx, view)
            for _ in range(self.max_retries):
                if rec["status"] == "ok":
                    break
                rec = run_trial(t, ctx, view)
            view.done(t, rec["status"] == "ok")
            records.append(rec)
        return records


def get_executor(execution: ExecutionConfig, executor: str | None = None, address: str | None = None) -> Executor:
    """The executor named by ``executor`` (else ``execution.executor``); ``address`` overrides
    ``execution.address`` (Ray only)."""
    name = executor or execution.executor
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r} (--executor / execution.executor); allowed: {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise ConfigError(f"--address {address} is for the ray executor; add --executor ray (or set execution.executor: ray)")
    if name == "local":
        return LocalExecutor(max_retries=execution.max_retries)
    require_ray()
    return RayExecutor(execution.model_copy(update={"address": address or execution.address}))
