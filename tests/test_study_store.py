"""Study folder: atomic trial files, config-hash guard (--new / --force), resume with a counted trainer."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from volkd.errors import ConfigError
from volkd.experiment.config import validate_config
from volkd.experiment.store import StudyStore, next_free_path
from volkd.experiment.trials import Trial

T = Trial(0, "student", "mip", "graph")


def _cfg(**kw):
    return validate_config({"name": "s", "projections": ["mip"], "split": {"repeats": 2}, **kw})


def test_open_creates_study_files(tmp_path) -> None:
    cfg = _cfg()
    store = StudyStore.open(tmp_path / "s", cfg)
    rec = json.loads((store.root / "study.json").read_text())
    assert rec["config_hash"] == cfg.config_hash() and rec["name"] == "s"
    assert (store.root / "config.yaml").read_text().count("#") > 20
    assert store.trials_dir.is_dir() and store.models_dir.is_dir()
    # reopening with the same config resumes: nothing is lost
    store.save_result(T, {"status": "ok", "metrics": {"accuracy": 1.0}})
    again = StudyStore.open(tmp_path / "s", cfg)
    assert again.is_finished(T)


def test_save_result_writes_predictions_then_record(tmp_path) -> None:
    store = StudyStore.open(tmp_path / "s", _cfg())
    preds = pd.DataFrame({"cohort": ["test"], "scan_id": ["a"], "y_true": [1], "p_pos": [0.7]})
    path = store.save_result(T, {"status": "ok", "metrics": {"f1_weighted": 0.5}}, preds)
    rec = json.loads(path.read_text())
    assert (rec["trial_id"], rec["method"], rec["kd"], rec["status"]) == ("r00-student-mip-graph", "mip+graph", "graph", "ok")
    assert store.load_predictions(T.trial_id).equals(preds)
    assert store.is_finished(T)
    assert [r["trial_id"] for r in store.load_all()] == ["r00-student-mip-graph"]
    assert not [p for p in store.trials_dir.iterdir() if p.name.startswith(".")]  # no temp files left


def test_interrupted_write_leaves_no_record(tmp_path, monkeypatch) -> None:
    store = StudyStore.open(tmp_path / "s", _cfg())

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        store.save_result(T, {"status": "ok"}, pd.DataFrame({"a": [1]}))
    assert not store.result_path(T).exists() and not store.predictions_path(T).exists()
    assert not store.is_finished(T)
    assert list(store.trials_dir.iterdir()) == []


def test_failed_trials_are_not_finished(tmp_path) -> None:
    store = StudyStore.open(tmp_path / "s", _cfg())
    store.save_result(T, {"status": "failed", "error": "ValueError: x"})
    assert store.load_result(T)["error"] == "ValueError: x"
    assert not store.is_finished(T)


def test_changed_config_is_refused(tmp_path) -> None:
    root = tmp_path / "s"
    StudyStore.open(root, _cfg()).save_result(T, {"status": "ok"})
    changed = _cfg(training={"epochs": 3})
    with pytest.raises(ConfigError) as e:
        StudyStore.open(root, changed)
    msg = str(e.value)
    assert str(root) in msg and "--new" in msg and "--force" in msg and "different study config" in msg
    # the refusal touched nothing
    assert StudyStore(root).stored_hash() == _cfg().config_hash() and StudyStore(root).is_finished(T)


def test_new_makes_a_sibling_folder(tmp_path) -> None:
    root = tmp_path / "s"
    StudyStore.open(root, _cfg()).save_result(T, {"status": "ok"})
    other = StudyStore.open(root, _cfg(training={"epochs": 3}), new=True)
    assert other.root == tmp_path / "s-2"
    assert StudyStore(root).is_finished(T) and not other.is_finished(T)
    assert next_free_path(root) == tmp_path / "s-3"


def test_force_discards_old_results(tmp_path) -> None:
    root = tmp_path / "s"
    old = StudyStore.open(root, _cfg())
    old.save_result(T, {"status": "ok"})
    (root / "keep.txt").write_text("user file")
    changed = _cfg(training={"epochs": 3})
    store = StudyStore.open(root, changed, force=True)
    assert store.stored_hash() == changed.config_hash()
    assert store.load_all() == [] and (root / "keep.txt").read_text() == "user file"


def test_foreign_folder_is_refused(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.txt").write_text("not a study")
    with pytest.raises(ConfigError, match="not a volkd study folder"):
        StudyStore.open(tmp_path / "x", _cfg())


def test_unreadable_study_record(tmp_path) -> None:
    root = tmp_path / "s"
    StudyStore.open(root, _cfg())
    (root / "study.json").write_text("{broken")
    with pytest.raises(ConfigError, match="--force"):
        StudyStore.open(root, _cfg())
