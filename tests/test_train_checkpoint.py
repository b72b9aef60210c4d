"""Checkpoint content, round-trip, validation errors and predict_proba."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_cohort
from volkd.data.splits import holdout_splits
from volkd.errors import LeakageError
from volkd.models import ModelSpec
from volkd.train import CheckpointError, TrainConfig, load_checkpoint, predict_proba, save_checkpoint, train_student, train_teacher
from volkd.train.checkpoint import REQUIRED, decode, encode, file_hash


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    c = make_cohort()
    split = holdout_splits(c, n_repeats=1)[0]
    d = tmp_path_factory.mktemp("ck")
    cfg = TrainConfig(epochs=2, batch_size=8, progress=False)
    t = train_teacher(c, split, ModelSpec(arch="lightcnn", spatial_dims=3, num_classes=2, width=4), cfg, d / "teacher")
    s = train_student(c, split, "mip", ModelSpec(arch="lightcnn", spatial_dims=2, num_classes=2, width=4), "graph",
                      t.best_checkpoint, cfg, d / "student")
    return c, split, t, s


def test_teacher_checkpoint_content(runs):
    c, split, t, _ = runs
    ck = load_checkpoint(t.best_checkpoint)
    assert ck.kind == "teacher"
    assert ck.projection_spec is None and ck.teacher_hash is None
    assert ck.class_names == ["control", "PD"]
    assert ck.model_spec["arch"] == "lightcnn" and ck.model_spec["spatial_dims"] == 3
    assert ck.normalizer["name"] == "zscore"
    # fitted on the training partition only
    assert isinstance(ck.normalizer["mean"], np.ndarray) and ck.normalizer["mean"].shape == (16, 16, 16)
    assert np.allclose(ck.normalizer["mean"], np.asarray(c.volumes[split.train]).mean(0), atol=1e-5)
    assert not np.allclose(ck.normalizer["mean"], np.asarray(c.volumes).mean(0), atol=1e-5)
    assert ck.config["epochs"] == 2 and ck.seed == 0
    assert "torch" in ck.versions and "volkd" in ck.versions
    assert ck.cohort_fingerprint == c.fingerprint()
    assert ck.split["train"] == list(c.scan_ids[split.train]) and ck.split["test"] == list(c.scan_ids[split.test])
    assert ck.train_subjects == sorted(set(c.subjects[split.train]))
    assert ck.epoch == t.best_epoch
    assert ck.metrics["val_loss"] == pytest.approx(t.best_metric)
    assert ck.train_state is None  # best.pt is lean
    assert ck.cohort_meta["grid_shape"] == [16, 16, 16] and ck.cohort_meta["class_names"] == ["control", "PD"]
    last = load_checkpoint(t.last_checkpoint)
    assert set(last.train_state) == {"optimizer", "scheduler", "scaler", "rng", "stopper", "history", "next_epoch"}
    assert last.train_state["scaler"] is None  # fp32 (and amp on the CPU): no loss scaling
    assert last.train_state["next_epoch"] == 2 and len(last.train_state["history"]) == 2


def test_student_checkpoint_records_projection_and_teacher(runs):
    _, _, t, s = runs
    ck = load_checkpoint(s.best_checkpoint)
    assert ck.kind == "student"
    assert ck.projection_spec["method"] == "mip" and ck.projection_spec["ref_index"] is not None
    assert ck.teacher_hash == file_hash(t.best_checkpoint)
    assert ck.kd["name"] == "graph"
    assert ck.model_spec["spatial_dims"] == 2


def test_build_model_reproduces_weights_and_predict_proba(runs):
    c, split, t, s = runs
    for res in (t, s):
        ck = load_checkpoint(res.best_checkpoint)
        m = ck.build_model()
        assert not m.training
        for k, v in m.state_dict().items():
            assert torch.equal(v, ck.state_dict[k])
        idx = split.test
        p = predict_proba(ck, np.asarray(c.volumes[idx]))
        assert p.shape == (len(idx), 2) and np.allclose(p.sum(1), 1, atol=1e-5)
        # same numbers as the trainer's own test predictions
        df = res.test_predictions
        assert np.allclose(p[:, 1], df["proba_PD"].to_numpy(), atol=1e-5)


def test_predict_refuses_training_subjects(runs):
    c, split, t, _ = runs
    with pytest.raises(LeakageError, match="trained on subject"):
        predict_proba(t.best_checkpoint, np.asarray(c.volumes[split.train[:2]]), subjects=c.subjects[split.train[:2]])


def test_encode_decode_roundtrip():
    obj = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": [np.int64(3), ("x", np.float32(1.5))], "c": None}
    back = decode(encode(obj))
    assert back["a"].dtype == np.float64 and np.array_equal(back["a"], obj["a"])
    assert back["b"] == [3, ("x", 1.5)] and back["c"] is None


def test_load_errors(tmp_path, runs):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="not a readable volkd checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a volkd checkpoint"):
        load_checkpoint(other)
    raw = torch.load(runs[2].best_checkpoint, weights_only=True)
    del raw["class_names"]
    torch.save(raw, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing field.*class_names"):
        load_checkpoint(tmp_path / "partial.pt")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(runs[2].best_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="without"):
        save_checkpoint(tmp_path / "x.pt", {"kind": "teacher"})
    assert set(REQUIRED) >= {"state_dict", "normalizer", "split", "train_subjects", "teacher_hash"}


class _Payload:
    """Any class pickled into a file: loading it would run code chosen by the file's author."""


@pytest.mark.parametrize("content", ["object", "junk", "empty", "truncated-zip"])
def test_bad_checkpoint_errors_never_advise_unsafe_loading(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "object":
        torch.save({"format": "volkd-checkpoint", "x": _Payload()}, path)
    elif content == "junk":
        path.write_bytes(b"garbage bytes, not a checkpoint")
    elif content == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"w": torch.zeros(3)}, path)
        path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "weights_only" not in msg and "add_safe_globals" not in msg and "trust" not in msg
    assert "\n" not in msg and str(path) in msg
    if content == "object":
        assert "holds Python objects" in msg and "_Payload" in msg
