"""train_teacher / train_student: resume equivalence, teacher cache computed once, leakage
refusals, run-folder rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import make_cohort
from volkd.data.splits import Split, holdout_splits
from volkd.errors import ConfigError, LeakageError, OutputExistsError
from volkd.models import ModelSpec, VolkdModel
from volkd.train import TrainConfig, load_checkpoint, train_student, train_teacher
from volkd.train.api import resolve_split, student_model_spec

TEACHER = ModelSpec(arch="lightcnn", spatial_dims=3, num_classes=2, width=4)


class Interrupt(Exception):
    pass


def _stop_after(epoch: int):
    def cb(e: int, row: dict) -> None:
        if e == epoch:
            raise Interrupt
    return cb


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    c = make_cohort()
    split = holdout_splits(c, n_repeats=1)[0]
    d = tmp_path_factory.mktemp("api")
    t = train_teacher(c, split, TEACHER, TrainConfig(epochs=1, batch_size=8, progress=False), d / "teacher")
    return c, split, t


def _same_weights(a, b) -> bool:
    sa, sb = load_checkpoint(a).state_dict, load_checkpoint(b).state_dict
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_teacher_resume_equals_uninterrupted(tmp_path, setup):
    c, split, _ = setup
    # restart inside the run (t0=2) and augmentation on: all RNG/scheduler state must survive
    cfg = TrainConfig(epochs=4, batch_size=8, t0=2, t_mult=1, patience=10, progress=False, augment={"enabled": True})
    straight = train_teacher(c, split, TEACHER, cfg, tmp_path / "a")
    with pytest.raises(Interrupt):
        train_teacher(c, split, TEACHER, cfg, tmp_path / "b", on_epoch_end=_stop_after(1))
    assert not (tmp_path / "b" / "result.json").exists()
    assert len(load_checkpoint(tmp_path / "b" / "last.pt").train_state["history"]) == 2
    with pytest.raises(OutputExistsError, match="interrupted training run; pass --resume"):
        train_teacher(c, split, TEACHER, cfg, tmp_path / "b")
    with pytest.raises(ConfigError, match=r"different configuration \(changed: lr\)"):
        train_teacher(c, split, TEACHER, cfg.model_copy(update={"lr": 0.5}), tmp_path / "b", resume=True)
    resumed = train_teacher(c, split, TEACHER, cfg, tmp_path / "b", resume=True)
    assert resumed.history == straight.history and len(resumed.history) == 4
    assert _same_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")
    assert _same_weights(tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt")
    assert resumed.test_metrics == straight.test_metrics
    assert (tmp_path / "a" / "history.jsonl").read_text() == (tmp_path / "b" / "history.jsonl").read_text()


def test_student_resume_equals_uninterrupted_and_cache_once(tmp_path, setup, monkeypatch):
    c, split, t = setup
    calls = {"n": 0}
    orig = VolkdModel.forward

    def counting(self, x):
        if self.spec.spatial_dims == 3:
            calls["n"] += 1
        return orig(self, x)

    monkeypatch.setattr(VolkdModel, "forward", counting)
    cfg = TrainConfig(epochs=3, batch_size=8, progress=False, eval_batch_size=64)
    spec = student_model_spec("lightcnn", "fuseme", 2, width=4)
    straight = train_student(c, split, "fuseme", spec, "graph", t.best_checkpoint, cfg, tmp_path / "a")
    assert calls["n"] == 1  # 24 scans in one eval batch: ONE teacher pass for 3 epochs
    assert straight.teacher_cache_computed is True
    assert all(r["train_kd"] > 0 for r in straight.history)
    with pytest.raises(Interrupt):
        train_student(c, split, "fuseme", spec, "graph", t.best_checkpoint, cfg, tmp_path / "b", on_epoch_end=_stop_after(0))
    calls["n"] = 0
    resumed = train_student(c, split, "fuseme", spec, "graph", t.best_checkpoint, cfg, tmp_path / "b", resume=True)
    assert calls["n"] == 0 and resumed.teacher_cache_computed is False  # reused from the run folder
    assert resumed.history == straight.history
    assert _same_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")
    # a shared cache directory, keyed by teacher hash + cohort fingerprint
    shared = tmp_path / "cache"
    cfg2 = cfg.model_copy(update={"teacher_cache_dir": str(shared), "epochs": 1})
    train_student(c, split, "fuseme", spec, "graph", t.best_checkpoint, cfg2, tmp_path / "c")
    calls["n"] = 0
    again = train_student(c, split, "fuseme", spec, "hinton", t.best_checkpoint, cfg2, tmp_path / "d")
    assert calls["n"] == 0 and again.teacher_cache_computed is False
    assert len(list(shared.glob("*.pt"))) == 1


def test_student_without_kd_needs_no_teacher(tmp_path, setup):
    c, split, _ = setup
    res = train_student(c, split, "mip", student_model_spec("lightcnn", "mip", 2, width=4), "none", None,
                        TrainConfig(epochs=1, batch_size=8, progress=False), tmp_path / "s")
    assert res.teacher_cache_computed is None and not (tmp_path / "s" / "teacher_cache.pt").exists()
    assert all(r["train_kd"] == 0 for r in res.history)
    with pytest.raises(ConfigError, match="needs a teacher checkpoint"):
        train_student(c, split, "mip", student_model_spec("lightcnn", "mip", 2, width=4), "graph", None,
                      TrainConfig(epochs=1, progress=False), tmp_path / "s2")


def test_leaky_split_refused(tmp_path):
    c = make_cohort()
    # S000_V0 in train, S000_V1 in test: the same subject on both sides
    leaky = Split(repeat=0, train=np.array([0, *range(2, 16)]), val=np.arange(16, 20), test=np.array([1, 20, 21]), seed=0, kind="holdout")
    with pytest.raises(LeakageError, match="S000"):
        train_teacher(c, leaky, TEACHER, TrainConfig(epochs=1, progress=False), tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_teacher_from_another_split_refused(tmp_path, setup):
    c, split, t = setup
    other = holdout_splits(c, n_repeats=2)[1]
    with pytest.raises(LeakageError, match="the teacher trained on subject"):
        train_student(c, other, "mip", student_model_spec("lightcnn", "mip", 2, width=4), "graph", t.best_checkpoint,
                      TrainConfig(epochs=1, progress=False), tmp_path / "s")
    with pytest.raises(ConfigError, match="is a student checkpoint"):
        s = train_student(c, split, "mip", student_model_spec("lightcnn", "mip", 2, width=4), "none", None,
                          TrainConfig(epochs=1, batch_size=8, progress=False), tmp_path / "s0")
        train_student(c, split, "mip", student_model_spec("lightcnn", "mip", 2, width=4), "graph", s.best_checkpoint,
                      TrainConfig(epochs=1, progress=False), tmp_path / "s1")


def test_model_spec_must_match_data(tmp_path, setup):
    c, split, _ = setup
    with pytest.raises(ConfigError, match=r"spatial_dims=2 \(expected 3\)"):
        train_teacher(c, split, ModelSpec(arch="lightcnn", spatial_dims=2, num_classes=2), TrainConfig(epochs=1), tmp_path / "x")
    with pytest.raises(ConfigError, match=r"in_channels=1 \(expected 3\)"):
        train_student(c, split, "fuseme", ModelSpec(arch="lightcnn", spatial_dims=2, num_classes=2, n_views=3), "none", None,
                      TrainConfig(epochs=1), tmp_path / "y")


def test_finished_run_refused_then_forced(tmp_path, setup):
    c, split, _ = setup
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False)
    train_teacher(c, split, TEACHER, cfg, tmp_path / "t")
    (tmp_path / "t" / "notes.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(OutputExistsError, match="finished training run.*--force"):
            train_teacher(c, split, TEACHER, cfg, tmp_path / "t", resume=resume)
    res = train_teacher(c, split, TEACHER, cfg, tmp_path / "t", force=True)
    assert res.epochs_run == 1 and (tmp_path / "t" / "notes.txt").read_text() == "mine"  # only run files replaced
    doc = json.loads((tmp_path / "t" / "result.json").read_text())
    assert doc["kind"] == "teacher" and doc["best_epoch"] == res.best_epoch


def test_resolve_split_default_and_file(tmp_path):
    c = make_cohort()
    s0 = resolve_split(c)
    assert s0.repeat == 0 and len(s0.train) + len(s0.val) + len(s0.test) == len(c)
    assert 0.5 < len(s0.train) / len(c) < 0.7
    s2 = resolve_split(c, repeat=2)
    assert s2.repeat == 2 and not np.array_equal(np.sort(s2.test), np.sort(s0.test))
    from volkd.data.splits import SplitError, save_splits

    save_splits(tmp_path / "s.json", holdout_splits(c, n_repeats=2, seed=5), c)
    assert np.array_equal(resolve_split(c, tmp_path / "s.json", 1).test, holdout_splits(c, n_repeats=2, seed=5)[1].test)
    with pytest.raises(SplitError, match="--repeat 2 is out of range"):
        resolve_split(c, tmp_path / "s.json", 2)


def test_graph_metric_weight_follows_w_kd_unless_given():
    from volkd.distill import get_kd_loss
    from volkd.train.api import _kd

    assert _kd("graph", 5.0).w_metric == pytest.approx(0.2)
    assert _kd({"name": "graph", "affinity": "rbf"}, 2.0).w_metric == pytest.approx(0.5)  # w_kd·L_metric/w_kd = L_metric
    assert _kd({"name": "graph", "w_metric": 0.0}, 2.0).w_metric == 0.0  # an explicit value wins
    assert _kd("graph", 0.0).w_metric == get_kd_loss("graph").w_metric  # no KD weight: loss default
    assert _kd("hinton", 2.0).name == "hinton"
