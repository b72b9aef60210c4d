"""The ray executor on a tiny study with a local 2-CPU Ray instance: the same per-trial metrics
as the local executor, resume across executors without retraining, retries then a recorded
failure, KD students after their teacher; and the executor plumbing without Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import volkd.experiment.executors as executors
import volkd.experiment.trial_exec as trial_exec
from volkd.errors import ConfigError
from volkd.experiment.config import ExecutionConfig
from tests.conftest import tiny_study_config as tiny
from volkd.experiment.executors import LocalExecutor, get_executor
from volkd.experiment.trials import Trial
from volkd.study import run_study

CONTROL = "VOLKD_RAY_TEST_DIR"  # folder of the worker hook's control file and call log


# ------------------------------------------------------------ Ray worker instrumentation
def _worker_hook() -> None:
    """Runs in every Ray worker: wraps the training functions to log calls and fail on demand."""
    import volkd.experiment.trial_exec as r

    folder = Path(os.environ[CONTROL])
    real_t, real_s = r.train_teacher, r.train_student

    def log(line: str) -> None:
        with open(folder / "calls.log", "a") as fh:
            fh.write(line + "\n")

    def teacher(*a, **k):
        log("teacher start")
        out = real_t(*a, **k)
        log("teacher end")
        return out

    def student(cohort, split, projection, model_spec, kd, *a, **k):
        ctl = json.loads((folder / "control.json").read_text()) if (folder / "control.json").is_file() else {}
        earlier = _calls(folder).count(f"student {kd['name']}")
        log(f"student {kd['name']}")
        if kd["name"] in ctl.get("fail_always", []) or (kd["name"] in ctl.get("fail_once", []) and earlier == 0):
            raise RuntimeError("simulated crash in training")
        return real_s(cohort, split, projection, model_spec, kd, *a, **k)

    r.train_teacher, r.train_student = teacher, student


def _calls(folder: Path) -> list[str]:
    p = folder / "calls.log"
    return p.read_text().splitlines() if p.is_file() else []


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray import cloudpickle  # Ray's own copy pickles the setup hook

    folder = tmp_path_factory.mktemp("ray-control")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import the tests
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"worker_process_setup_hook": _worker_hook, "env_vars": {CONTROL: str(folder)}})
    yield folder
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _reset(folder: Path, **control) -> None:
    (folder / "calls.log").unlink(missing_ok=True)
    (folder / "control.json").write_text(json.dumps(control))


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the ray workers train with cpus_per_trial = 1 thread
    yield
    torch.set_num_threads(n)


def _records(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / "trials").glob("*.json"))}


def _assert_same_results(a: Path, b: Path) -> None:
    ra, rb = _records(a), _records(b)
    assert sorted(ra) == sorted(rb) == ["r00-majority", "r00-sbr", "r00-student-mip-graph", "r00-student-mip-none", "r00-teacher"]
    for tid in ra:
        assert ra[tid]["status"] == rb[tid]["status"] == "ok", tid
        assert set(ra[tid]) == set(rb[tid]), tid  # the same record format
        assert ra[tid]["metrics"].keys() == rb[tid]["metrics"].keys()
        for m, v in ra[tid]["metrics"].items():
            assert rb[tid]["metrics"][m] == pytest.approx(v, abs=1e-6, nan_ok=True), (tid, m)
        pa = pd.read_csv(a / "trials" / f"{tid}.predictions.csv")
        pb = pd.read_csv(b / "trials" / f"{tid}.predictions.csv")
        pd.testing.assert_frame_equal(pa, pb, atol=1e-6, rtol=0)
    for tid in ("r00-teacher", "r00-student-mip-graph"):  # the same training curves
        for key in ("train_loss", "val_loss"):
            curve = [h[key] for h in ra[tid]["train"]["history"]]
            assert [h[key] for h in rb[tid]["train"]["history"]] == pytest.approx(curve, abs=1e-6), (tid, key)


# ------------------------------------------------------------------------- Ray tests
@pytest.mark.slow
def test_ray_matches_local_and_resumes_across_executors(tmp_path, ray_session, one_thread, monkeypatch) -> None:
    cfg = tiny()
    local, on_ray, mixed = tmp_path / "local", tmp_path / "ray", tmp_path / "mixed"
    assert run_study(cfg, local, progress=False).n_failed == 0

    _reset(ray_session)
    res = run_study(cfg, on_ray, progress=False, executor="ray")
    assert (res.n_trials, res.n_run, res.n_failed) == (5, 5, 0)  # SBR, majority, teacher, 2 students
    calls = _calls(ray_session)
    assert calls.count("teacher start") == 1 and sorted(c for c in calls if c.startswith("student")) == ["student graph", "student none"]
    assert calls.index("teacher end") < calls.index("student graph")  # the KD student waited for its teacher
    assert json.loads((on_ray / "environment.json").read_text())["executor"] == "ray"
    _assert_same_results(local, on_ray)

    # local run that leaves the KD student failed, finished on Ray: only that trial trains
    real = trial_exec.train_student

    def crash(cohort, split, projection, model_spec, kd, *a, **k):
        if kd["name"] == "graph":
            raise RuntimeError("interrupted")
        return real(cohort, split, projection, model_spec, kd, *a, **k)

    monkeypatch.setattr(trial_exec, "train_student", crash)
    assert run_study(cfg, mixed, progress=False).n_failed == 1
    monkeypatch.setattr(trial_exec, "train_student", real)
    kept = {p.name: p.stat().st_mtime_ns for p in (mixed / "trials").glob("*") if "graph" not in p.name}
    _reset(ray_session)
    res = run_study(cfg, mixed, progress=False, executor="ray")
    assert (res.n_run, res.n_skipped, res.n_failed) == (1, 4, 0)
    assert _calls(ray_session) == ["student graph"]  # teacher and finished trials not retrained
    assert {p.name: p.stat().st_mtime_ns for p in (mixed / "trials").glob("*") if "graph" not in p.name} == kept
    _assert_same_results(local, mixed)

    # and the other way round: a trial missing from the Ray study is finished locally
    (on_ray / "trials" / "r00-student-mip-none.json").unlink()
    res = run_study(cfg, on_ray, progress=False)
    assert (res.n_run, res.n_skipped, res.n_failed) == (1, 4, 0)
    _assert_same_results(local, on_ray)


@pytest.mark.slow
def test_ray_failed_trial_is_retried_then_recorded(tmp_path, ray_session) -> None:
    cfg = tiny(execution={"max_retries": 1})
    _reset(ray_session, fail_always=["graph"], fail_once=["none"])
    res = run_study(cfg, tmp_path / "s", progress=False, executor="ray")
    assert (res.n_trials, res.n_run, res.n_failed) == (5, 5, 1)
    calls = _calls(ray_session)
    assert calls.count("student graph") == 2 and calls.count("student none") == 2 and calls.count("teacher start") == 1
    recs = _records(tmp_path / "s")
    assert recs["r00-student-mip-none"]["status"] == "ok"  # failed once, then succeeded on the retry
    bad = recs["r00-student-mip-graph"]
    assert bad["status"] == "failed" and bad["error"] == "RuntimeError: simulated crash in training"
    assert "simulated crash" in bad["traceback"]
    md = (tmp_path / "s" / "report.md").read_text()
    assert "r00-student-mip-graph" in md.split("## Failures")[1]


@pytest.mark.slow
def test_ray_refuses_resources_the_cluster_lacks(tmp_path, ray_session) -> None:
    with pytest.raises(ConfigError, match=r"execution.gpus_per_trial is 1 but the Ray cluster has 0 GPU"):
        run_study(tiny(execution={"gpus_per_trial": 1}), tmp_path / "g", progress=False, executor="ray")
    with pytest.raises(ConfigError, match=r"execution.cpus_per_trial is 3 but the Ray cluster has 2 CPU"):
        run_study(tiny(execution={"cpus_per_trial": 3}), tmp_path / "c", progress=False, executor="ray")


# ---------------------------------------------------------------- without a Ray cluster
def test_execution_is_not_part_of_the_config_hash() -> None:
    a, b = tiny(), tiny(execution={"executor": "ray", "cpus_per_trial": 2, "max_retries": 3, "address": "h:6379"})
    assert a.config_hash() == b.config_hash() and b.execution.executor == "ray"
    with pytest.raises(ConfigError, match=r"execution.executor"):
        tiny(execution={"executor": "slurm"})


def test_get_executor_choice_and_errors() -> None:
    ex = ExecutionConfig(max_retries=2)
    assert isinstance(get_executor(ex), LocalExecutor) and get_executor(ex).max_retries == 2
    ray_ex = get_executor(ex, "ray", "head:6379")
    assert ray_ex.name == "ray" and ray_ex.execution.address == "head:6379" and ray_ex.execution.max_retries == 2
    with pytest.raises(ConfigError, match=r"unknown executor 'dask'.*allowed: local, ray"):
        get_executor(ex, "dask")
    with pytest.raises(ConfigError, match=r"--address h:1 is for the ray executor"):
        get_executor(ex, "local", "h:1")


def test_ray_executor_without_ray_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(ConfigError, match=r"pip install volkd\[cluster\]"):
        get_executor(ExecutionConfig(executor="ray"))
    with pytest.raises(ConfigError, match=r"pip install volkd\[cluster\]"):
        run_study(tiny(), tmp_path / "s", progress=False, executor="ray")
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_volkd_imports_without_ray() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "import volkd.cli.app, volkd.study, volkd.experiment.runner, volkd.experiment.executors, volkd.experiment.ray_executor\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_local_executor_retries_then_keeps_the_last_failure(monkeypatch) -> None:
    outcomes = {"a": ["failed", "ok"], "b": ["failed", "failed", "failed"]}
    calls: list[str] = []

    def fake(t, ctx, view):
        calls.append(t.projection)
        return {"status": outcomes[t.projection].pop(0)}

    monkeypatch.setattr(executors, "run_trial", fake)
    done: list[tuple[str, bool]] = []
    view = SimpleNamespace(done=lambda t, ok: done.append((t.projection, ok)))
    recs = LocalExecutor(max_retries=1).run([Trial(0, "student", "a", "none"), Trial(0, "student", "b", "none")], None, view)
    assert [r["status"] for r in recs] == ["ok", "failed"]
    assert calls == ["a", "a", "b", "b"] and done == [("a", True), ("b", False)]


def test_failure_record_unwraps_the_task_error() -> None:
    from volkd.experiment.ray_executor import failure_record

    wrapped = RuntimeError("ray task failed")
    wrapped.cause = ConfigError("study.json not found on this Ray node")  # what RayTaskError carries
    rec = failure_record(wrapped, 1.5)
    assert rec == {"status": "failed", "error": "ConfigError: study.json not found on this Ray node", "traceback": None,
                   "seconds": 1.5}
    crashed = failure_record(OSError("worker died\nmore"), 0.0)
    assert crashed["error"] == "OSError: worker died" and "OSError" in crashed["traceback"]


def test_schedule_queue_starts_teachers_then_kd_students_and_capacity() -> None:
    from volkd.experiment.ray_executor import ScheduleQueue, capacity

    trials = [Trial(0, "sbr"), Trial(0, "teacher"), Trial(0, "student", "mip", "none"), Trial(0, "student", "mip", "graph"),
              Trial(1, "sbr"), Trial(1, "teacher")]
    q = ScheduleQueue({t: i for i, t in enumerate(trials)})
    for t in trials[::-1]:
        q.push(t)
    popped = [q.pop().trial_id for _ in range(len(trials))]
    assert popped == ["r00-teacher", "r01-teacher", "r00-student-mip-graph", "r00-student-mip-none", "r00-sbr", "r01-sbr"]
    assert len(q) == 0
    ex = ExecutionConfig(cpus_per_trial=2, gpus_per_trial=0.5)
    assert capacity(ex, {"CPU": 16.0, "GPU": 2.0}) == 4  # GPUs bound it
    assert capacity(ExecutionConfig(cpus_per_trial=2), {"CPU": 7.0}) == 3
    assert capacity(ExecutionConfig(cpus_per_trial=4), {"CPU": 2.0}) == 1


@pytest.mark.slow
def test_volkd_run_cli_on_ray_with_cohort_folder_and_external(tmp_path, ray_session, monkeypatch) -> None:
    import yaml
    from typer.testing import CliRunner

    from volkd.cli import app
    from volkd.data.synth import synthesize

    synthesize(n_subjects=16, grid=(16, 16, 16), seed=0, visits=1).save(tmp_path / "cohort")
    monkeypatch.chdir(tmp_path)  # a relative cohort path; the Ray workers started elsewhere read it
    cfg = tiny(dataset={"kind": "cohort", "path": "cohort"},
               external=[{"name": "pet", "modality": "pet", "n_subjects": 8, "grid": 16, "seed": 1, "options": {"visits": 1}}])
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    _reset(ray_session)
    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress",
                                                         "--executor", "ray"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "5 trial(s) run, 0 resumed from earlier runs, 0 failed" in res.output
    recs = _records(tmp_path / "run")
    assert all(r["status"] == "ok" for r in recs.values())
    assert {tid for tid, r in recs.items() if set(r["external"]) == {"pet"}} == set(recs)  # shipped external cohort used
    ext = pd.read_csv(tmp_path / "run" / "external.csv")
    assert sorted(ext["trial_id"]) == sorted(recs) and set(ext["cohort"]) == {"pet"}


def test_volkd_run_cli_rejects_unknown_executor(tmp_path) -> None:
    from typer.testing import CliRunner

    from volkd.cli import app

    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["run", "--out", str(tmp_path / "x"), "--executor", "dask"])
    assert isinstance(res.exception, ConfigError)  # volkd.cli.main prints it as one line, exit code 2
    assert "unknown executor 'dask'" in str(res.exception) and "allowed: local, ray" in str(res.exception)
    assert not (tmp_path / "x").exists()
