"""Cohort load/save/validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from volkd.data.cohort import Cohort, CohortMeta
from volkd.errors import CohortError, OutputExistsError
from tests.conftest import make_cohort


def test_roundtrip_memmap_and_fingerprint(tmp_path):
    c = make_cohort()
    c.save(tmp_path / "c")
    d = Cohort.load(tmp_path / "c", verify=True)
    assert isinstance(d.volumes, np.memmap)
    np.testing.assert_array_equal(np.asarray(d.volumes), c.volumes)
    assert list(d.scan_ids) == list(c.scan_ids)
    assert d.meta.fingerprint == c.fingerprint()
    assert d.meta.provenance["versions"]["numpy"]
    assert d.y.tolist() == c.y.tolist()


def test_never_overwrites_without_force(tmp_path):
    c = make_cohort()
    c.save(tmp_path / "c")
    with pytest.raises(OutputExistsError, match="--force"):
        make_cohort(seed=1).save(tmp_path / "c")
    make_cohort(seed=1).save(tmp_path / "c", force=True)
    assert not np.allclose(Cohort.load(tmp_path / "c").volumes, c.volumes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp leftovers


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    c = make_cohort()
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        c.save(tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def _corrupt(tmp_path, fn):
    make_cohort().save(tmp_path / "c")
    fn(tmp_path / "c")
    return tmp_path / "c"


def test_shape_mismatch(tmp_path):
    p = _corrupt(tmp_path, lambda d: pd.read_csv(d / "scans.csv").iloc[:-1].to_csv(d / "scans.csv", index=False))
    with pytest.raises(CohortError, match=r"holds 24 volumes but scans.csv has 23 rows"):
        Cohort.load(p)


def test_nan_voxels(tmp_path):
    def f(d):
        v = np.load(d / "volumes.npy")
        v[5, 1, 2, 3] = np.nan
        np.save(d / "volumes.npy", v)
    with pytest.raises(CohortError, match=r"S002_V1.*NaN or Inf"):
        Cohort.load(_corrupt(tmp_path, f))


def test_duplicate_ids(tmp_path):
    def f(d):
        t = pd.read_csv(d / "scans.csv")
        t.loc[3, "scan_id"] = t.loc[2, "scan_id"]
        t.to_csv(d / "scans.csv", index=False)
    with pytest.raises(CohortError, match="duplicate scan_id.*S001_V0"):
        Cohort.load(_corrupt(tmp_path, f))


def test_unknown_label(tmp_path):
    def f(d):
        t = pd.read_csv(d / "scans.csv")
        t.loc[0, "label"] = "SWEDD"
        t.to_csv(d / "scans.csv", index=False)
    with pytest.raises(CohortError, match=r"unknown label.*SWEDD.*\['control', 'PD'\]"):
        Cohort.load(_corrupt(tmp_path, f))


def test_empty_and_missing_files(tmp_path):
    meta = CohortMeta(grid_shape=(4, 4, 4), class_names=["a", "b"])
    with pytest.raises(CohortError, match="empty cohort"):
        Cohort(np.zeros((0, 4, 4, 4), np.float32), pd.DataFrame(columns=["scan_id", "subject_id", "visit", "label"]), meta)
    (tmp_path / "x").mkdir()
    with pytest.raises(CohortError, match="volumes.npy: missing"):
        Cohort.load(tmp_path / "x")


def test_grid_mismatch_in_meta(tmp_path):
    def f(d):
        m = json.loads((d / "cohort.json").read_text())
        m["grid_shape"] = [8, 8, 8]
        (d / "cohort.json").write_text(json.dumps(m))
    with pytest.raises(CohortError, match=r"grid \(16, 16, 16\).*grid_shape \(8, 8, 8\)"):
        Cohort.load(_corrupt(tmp_path, f))


def test_summary_counts():
    s = make_cohort().summary()
    assert s["n_scans"] == 24 and s["n_subjects"] == 12
    assert s["scans_per_class"] == {"control": 8, "PD": 16}
    assert s["subjects_per_class"] == {"control": 4, "PD": 8}
    assert s["visits_per_subject"] == {"min": 2, "max": 2, "mean": 2.0}


def test_outputs_get_usual_permissions(tmp_path):
    import os
    import stat

    from volkd.atomic import write_text

    old = os.umask(0o022)
    try:
        make_cohort().save(tmp_path / "c")
        write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
