"""The ``ray`` executor: each pending trial of a study is a Ray task with declared resources.

The driver (``volkd run --executor ray``) keeps a queue of the trials that can start — SBR
baselines, teachers, students without KD, and a repeat's KD students once that repeat's teacher
task has ended — and hands Ray as many as the cluster can run at once, teachers first (they
gate their students), then KD students, then the rest. Synthetic cohorts are shipped to the
workers through the object store; cohort folders are read by each worker from their (absolute)
path. Each worker process builds the study context once (cohorts, ``splits.json``) and writes
every trial's record, predictions and checkpoints straight into the study folder with the same
:class:`~volkd.experiment.store.StudyStore` as the local executor: the study folder must be on a
filesystem shared by the driver and every node, at the same path. A failed attempt (a trial
recorded as failed, a task that raised, a worker that died) is queued again ``max_retries``
times; the last failure stays recorded. Ray is imported lazily: volkd works without it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from volkd.data.splits import load_splits
from volkd.errors import ConfigError, VolkdError
from volkd.experiment.config import ExecutionConfig, StudyConfig
from volkd.experiment.progress import ProgressView
from volkd.experiment.store import STUDY_FILE, StudyStore
from volkd.experiment.trial_exec import StudyContext, load_dataset, run_trial
from volkd.experiment.trials import Trial, prerequisites

INSTALL_HINT = "pip install volkd[cluster]"


def require_ray() -> None:
    """Raise :class:`ConfigError` with the install command when Ray is not importable."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(f"the ray executor needs Ray, which is not installed: {INSTALL_HINT} "
                          "(or run with --executor local)") from None


def connect(execution: ExecutionConfig) -> bool:
    """Join ``execution.address`` or start a local Ray instance; True when this call started Ray
    (the caller then shuts it down). An already initialised Ray session is reused as it is."""
    import ray

    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if execution.address:
        try:
            ray.init(address=execution.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"could not join the Ray cluster at {execution.address} (--address / execution.address): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; check `ray status` on the head "
                              "node and RAY_AUTH_MODE (docs/scaling.md)") from None
    else:
        # Ray 2.60 enables token authentication by default; a private local instance needs none
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=execution.num_cpus, include_dashboard=False, **quiet)
    return True


def check_resources(execution: ExecutionConfig, available: dict[str, float]) -> None:
    """Refuse per-trial demands the cluster can never meet (the tasks would wait forever)."""
    cpus, gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    if execution.cpus_per_trial > cpus:
        raise ConfigError(f"execution.cpus_per_trial is {execution.cpus_per_trial:g} but the Ray cluster has {cpus:g} CPU(s); "
                          "lower it or add nodes")
    if execution.gpus_per_trial > gpus:
        raise ConfigError(f"execution.gpus_per_trial is {execution.gpus_per_trial:g} but the Ray cluster has {gpus:g} GPU(s); "
                          "set it to 0 for CPU training or join a cluster with GPUs (--address)")


# --------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the study context (sent once via the object store)."""

    root: str
    config: dict[str, Any]
    config_hash: str
    threads: int
    device: str | None
    #: Ray object refs of cohorts shipped by the driver ("" = main, else the external's name);
    #: cohorts not listed are loaded from their path by each worker
    cohorts: dict[str, Any] = field(default_factory=dict)


_CONTEXT: dict[tuple[str, str], StudyContext] = {}  # one study context per worker process


def worker_context(spec: WorkerSpec) -> StudyContext:
    """The study context of ``spec`` (cohorts, splits, store), built once per worker process."""
    key = (spec.root, spec.config_hash)
    if key in _CONTEXT:
        return _CONTEXT[key]
    store = StudyStore(spec.root)
    if store.stored_hash() is None:
        raise ConfigError(f"{spec.root}/{STUDY_FILE} not found on this Ray node: the study folder must be on a filesystem "
                          "shared by the driver and every node, at the same path (docs/scaling.md)")
    cfg = StudyConfig.model_validate(spec.config)
    if store.stored_hash() != spec.config_hash:
        raise ConfigError(f"{spec.root}: this Ray node sees a study of another config; is the shared folder the driver's?")
    cohort = _cohort(spec, "", cfg.dataset)
    expected = _cohort_fingerprint(store)
    fp = cohort.meta.fingerprint or cohort.fingerprint()
    if expected and fp != expected:
        raise ConfigError(f"{spec.root}: the cohort loaded on this Ray node differs from the driver's (fingerprint "
                          f"{fp[:12]} ≠ {expected[:12]}); the dataset path must hold the same cohort on every node")
    cohort.meta.fingerprint = fp
    externals = {e.name: _cohort(spec, e.name, e) for e in cfg.external}
    splits = load_splits(store.root / "splits.json", cohort)
    if spec.device is not None:
        extra = {**cfg.training.extra, "device": spec.device}
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"extra": extra})})
    _CONTEXT.clear()
    _CONTEXT[key] = StudyContext(cfg, store, cohort, externals, splits)
    return _CONTEXT[key]


def _cohort(spec: WorkerSpec, name: str, ds: Any) -> Any:
    """A cohort shipped through the object store, else loaded like the driver does."""
    if name in spec.cohorts:
        import ray

        return ray.get(spec.cohorts[name])
    return load_dataset(ds, where=f"external[{name}]" if name else "dataset")


def _ship_synthetic(ctx: StudyContext) -> dict[str, Any]:
    """Put the synthetic cohorts in the object store (regenerating them on every worker costs
    seconds each); cohort folders are read from the shared filesystem by the workers."""
    import ray

    out: dict[str, Any] = {}
    if ctx.cfg.dataset.kind == "synthetic":
        out[""] = ray.put(ctx.cohort)
    for e in ctx.cfg.external:
        if e.kind == "synthetic":
            out[e.name] = ray.put(ctx.externals[e.name])
    return out


def _cohort_fingerprint(store: Any) -> str | None:
    return json.loads((store.root / STUDY_FILE).read_text()).get("cohort_fingerprint")


def run_trial_task(trial: Trial, spec: WorkerSpec) -> dict[str, Any]:
    """Body of a Ray task: one trial with ``spec.threads`` torch threads; stores and returns its record."""
    torch.set_num_threads(spec.threads)
    return run_trial(trial, worker_context(spec), ProgressView(False, None))


# --------------------------------------------------------------------- driver side
def worker_spec(ctx: StudyContext, execution: ExecutionConfig, ship: dict[str, Any] | None = None) -> WorkerSpec:
    """The spec sent to workers: absolute paths (workers may start elsewhere), threads, device,
    and the refs of the cohorts shipped through the object store (``ship``)."""
    cfg = ctx.cfg
    update: dict[str, Any] = {}
    if cfg.dataset.kind == "cohort":
        update["dataset"] = cfg.dataset.model_copy(update={"path": str(Path(str(cfg.dataset.path)).expanduser().resolve())})
    update["external"] = [e.model_copy(update={"path": str(Path(str(e.path)).expanduser().resolve())}) if e.kind == "cohort" else e
                          for e in cfg.external]
    shipped = cfg.model_copy(update=update)
    device = "cuda" if execution.gpus_per_trial > 0 and "device" not in cfg.training.extra else None
    return WorkerSpec(root=str(Path(ctx.store.root).resolve()), config=shipped.model_dump(mode="json"),
                      config_hash=cfg.config_hash(), threads=max(1, int(execution.cpus_per_trial)), device=device,
                      cohorts=dict(ship or {}))


def failure_record(error: BaseException, seconds: float) -> dict[str, Any]:
    """The stored record of an attempt that died outside ``run_trial`` (same fields as its failures)."""
    cause = getattr(error, "cause", None)
    e = cause if isinstance(cause, BaseException) else error
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    tb = None if isinstance(e, VolkdError) else "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=6))
    return {"status": "failed", "error": f"{type(e).__name__}: {msg}", "traceback": tb, "seconds": seconds}


@dataclass
class RayExecutor:
    """Trials as Ray tasks (``cpus_per_trial``/``gpus_per_trial`` each), retried ``max_retries`` times."""

    execution: ExecutionConfig
    name: str = "ray"
    attempts: dict[str, int] = field(default_factory=dict)

    def run(self, trials: list[Trial], ctx: StudyContext, view: ProgressView) -> list[dict[str, Any]]:
        """Run ``trials`` on Ray; a repeat's KD students start when its teacher's task has ended."""
        import ray

        started = connect(self.execution)
        try:
            check_resources(self.execution, ray.cluster_resources())
            return self._schedule(trials, ctx, view)
        finally:
            if started:
                ray.shutdown()

    def _schedule(self, trials: list[Trial], ctx: StudyContext, view: ProgressView) -> list[dict[str, Any]]:
        import ray

        ex = self.execution
        task = ray.remote(run_trial_task)
        spec_ref = ray.put(worker_spec(ctx, ex, ship=_ship_synthetic(ctx)))
        order = {t: i for i, t in enumerate(trials)}
        queue = ScheduleQueue(order)
        running: dict[Any, tuple[Trial, float]] = {}
        final: dict[Trial, dict[str, Any]] = {}
        # a trial waits for its prerequisites that are part of this run (finished ones are on disk)
        in_run = set(trials)
        waiting = {t: {p for p in prerequisites(t, ctx.cfg) if p in in_run} for t in trials}
        for t in trials:
            if not waiting[t]:
                queue.push(t)

        def submit(t: Trial) -> None:
            self.attempts[t.trial_id] = self.attempts.get(t.trial_id, 0) + 1
            ref = task.options(num_cpus=ex.cpus_per_trial, num_gpus=ex.gpus_per_trial, max_retries=0,
                               name=f"volkd:{t.trial_id}").remote(t, spec_ref)
            running[ref] = (t, time.perf_counter())

        try:
            while queue or running:
                slots = capacity(ex, ray.cluster_resources())  # re-read: nodes may join or leave
                while queue and len(running) < slots:
                    submit(queue.pop())
                (ref,), _ = ray.wait(list(running), num_returns=1)
                t, t0 = running.pop(ref)
                try:
                    rec = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - task raised or its worker died: a failed attempt
                    rec = failure_record(e, time.perf_counter() - t0)
                    ctx.store.save_result(t, rec)
                if rec["status"] != "ok" and self.attempts[t.trial_id] <= ex.max_retries:
                    queue.push(t)
                    continue
                final[t] = rec
                view.done(t, rec["status"] == "ok")
                for s, deps in waiting.items():
                    if t in deps:
                        deps.discard(t)
                        if not deps:
                            queue.push(s)
        except KeyboardInterrupt:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
        return [final[t] for t in trials]


def capacity(execution: ExecutionConfig, available: dict[str, float]) -> int:
    """How many trials the cluster can run at once (at least 1)."""
    n = int(available.get("CPU", 0.0) // execution.cpus_per_trial)
    if execution.gpus_per_trial > 0:
        n = min(n, int(available.get("GPU", 0.0) // execution.gpus_per_trial))
    return max(1, n)


class ScheduleQueue:
    """Trials ready to start, longest-gating first: teachers (their KD students wait for them),
    then KD students, then the rest; plan order within a class. Only as many trials as the
    cluster can run are handed to Ray, so this order holds (Ray's own queue is first come,
    first served)."""

    RANK = {"teacher": 0, "student": 2, "sbr": 3, "majority": 3}

    def __init__(self, order: dict[Trial, int]) -> None:
        self.order = order
        self.items: list[Trial] = []

    def push(self, t: Trial) -> None:
        self.items.append(t)

    def pop(self) -> Trial:
        best = min(self.items, key=self._key)
        self.items.remove(best)
        return best

    def _key(self, t: Trial) -> tuple[int, int]:
        rank = self.RANK[t.kind] - (1 if t.kind == "student" and t.kd != "none" else 0)
        return rank, self.order[t]

    def __len__(self) -> int:
        return len(self.items)
