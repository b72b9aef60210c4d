"""The study runner on a tiny real study: resume skips finished trials (training calls counted),
a failing trial is recorded and retried, the teacher is trained once per repeat and shared."""

from __future__ import annotations

import json

import pytest

import volkd.experiment.trial_exec as trial_exec
from volkd.experiment.config import validate_config
from volkd.study import run_study
from tests.conftest import tiny_study_config as tiny


@pytest.fixture
def counted(monkeypatch):
    calls = {"teacher": 0, "student": [], "fail": set()}
    real_t, real_s = trial_exec.train_teacher, trial_exec.train_student

    def teacher(*a, **k):
        calls["teacher"] += 1
        return real_t(*a, **k)

    def student(cohort, split, projection, model_spec, kd, teacher_ckpt, *a, **k):
        calls["student"].append((kd["name"], str(teacher_ckpt) if teacher_ckpt else None))
        if kd["name"] in calls["fail"]:
            raise RuntimeError("simulated crash in training")
        return real_s(cohort, split, projection, model_spec, kd, teacher_ckpt, *a, **k)

    monkeypatch.setattr(trial_exec, "train_teacher", teacher)
    monkeypatch.setattr(trial_exec, "train_student", student)
    return calls


@pytest.mark.slow
def test_resume_failures_and_teacher_sharing(tmp_path, counted) -> None:
    cfg = tiny()
    out = tmp_path / "study"
    counted["fail"] = {"graph"}
    first = run_study(cfg, out, progress=False)
    assert (first.n_trials, first.n_run, first.n_failed) == (5, 5, 1)  # SBR, majority, teacher, 2 students
    assert counted["teacher"] == 1
    # the KD student got the repeat's teacher checkpoint; the no-KD student none
    assert sorted(counted["student"]) == [("graph", str(out / "models" / "r00-teacher" / "best.pt")), ("none", None)]
    rec = json.loads((out / "trials" / "r00-student-mip-graph.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "RuntimeError: simulated crash in training" and rec["traceback"]
    md = (out / "report.md").read_text()
    assert "r00-student-mip-graph" in md.split("## Failures")[1]
    ok = json.loads((out / "trials" / "r00-teacher.json").read_text())
    assert ok["status"] == "ok" and set(ok["external"]) == set() and ok["train"]["epochs_run"] == 1
    assert 0.0 <= ok["metrics"]["f1_weighted"] <= 1.0
    maj = json.loads((out / "trials" / "r00-majority.json").read_text())
    assert maj["status"] == "ok" and maj["metrics"]["roc_auc"] == pytest.approx(0.5) and maj["train"]["model"] == "majority_class"

    # rerun: only the failed trial runs again (finished trials are skipped, teacher reused)
    counted["fail"] = set()
    counted["student"].clear()
    second = run_study(cfg, out, progress=False)
    assert (second.n_run, second.n_skipped, second.n_failed) == (1, 4, 0)
    assert counted["teacher"] == 1 and [c[0] for c in counted["student"]] == ["graph"]

    # a third run trains nothing at all
    third = run_study(cfg, out, progress=False)
    assert third.n_run == 0 and counted["teacher"] == 1 and len(counted["student"]) == 1
    assert list(third.headline["method"]) == ["mip", "3D teacher", "SBR + logistic regression", "majority class (constant)"]

    # a changed config refuses to mix; --new starts next to it
    from volkd.errors import ConfigError

    changed = tiny(training={"epochs": 2, "patience": 1, "batch_size": 8})
    with pytest.raises(ConfigError, match="different study config"):
        run_study(changed, out, progress=False)
    assert counted["teacher"] == 1


def test_kd_spec_passes_temperature_only_where_accepted() -> None:
    cfg = validate_config({"kd": [{"name": "none"}, {"name": "graph", "temperature": 3, "params": {"affinity": "rbf"}},
                                  {"name": "sp"}]})
    assert trial_exec.kd_spec(cfg.kd_config("none")) == {"name": "none"}
    assert trial_exec.kd_spec(cfg.kd_config("graph")) == {"name": "graph", "affinity": "rbf", "temperature": 3.0}
    assert trial_exec.kd_spec(cfg.kd_config("sp")) == {"name": "sp"}
