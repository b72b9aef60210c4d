"""Subject-level splits, the leakage guard, split files and the `volkd split` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from volkd.data.cohort import Cohort
from volkd.data.splits import (
    Split, SplitError, check_no_leakage, holdout_splits, kfold_splits, load_splits, official_split,
    save_splits, split_counts,
)
from volkd.errors import LeakageError, OutputExistsError
from tests.conftest import make_cohort


def _uneven_cohort(n_subjects: int = 60, seed: int = 0) -> Cohort:
    """Subjects with 1–3 visits, about one control for three PD."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        label = "control" if s % 4 == 0 else "PD"
        for v in range(int(rng.integers(1, 4))):
            rows.append({"scan_id": f"S{s:03d}_V{v}", "subject_id": f"S{s:03d}", "visit": v, "label": label})
    base = make_cohort(n_subjects=1, visits=1, grid=4)
    vols = np.zeros((len(rows), 4, 4, 4), dtype=np.float32)
    return Cohort(vols, pd.DataFrame(rows), base.meta.model_copy(update={"grid_shape": (4, 4, 4)}))


def _subject_sets(cohort, split):
    return {p: set(cohort.subjects[split.partition(p)]) for p in ("train", "val", "test")}


def test_holdout_is_subject_level_stratified_and_complete():
    c = _uneven_cohort()
    splits = holdout_splits(c, n_repeats=5, fractions=(0.6, 0.2, 0.2), seed=3)
    assert [s.repeat for s in splits] == list(range(5))
    n_subj = len(set(c.subjects))
    ctrl_frac = np.mean([lab == 0 for lab in pd.Series(c.y, index=c.subjects).groupby(level=0).first()])
    for s in splits:
        check_no_leakage(c, s)
        sets = _subject_sets(c, s)
        assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
        # every scan assigned exactly once
        allidx = np.concatenate([s.train, s.val, s.test])
        assert sorted(allidx.tolist()) == list(range(len(c)))
        # achieved subject proportions match the request (largest-remainder rounding)
        assert len(sets["test"]) == round(0.2 * n_subj) and len(sets["val"]) == round(0.2 * n_subj)
        assert abs(len(sets["train"]) / n_subj - 0.6) < 0.03
        # stratified: each partition's share of control subjects close to the cohort's
        for p, subj in sets.items():
            ctrl = sum(1 for x in subj if x in {f"S{i:03d}" for i in range(0, 60, 4)})
            assert abs(ctrl / len(subj) - ctrl_frac) < 0.1, p
        assert s.kind == "holdout"
        assert s.scan_ids["test"] == c.scan_ids[s.test].tolist()
        assert s.subject_ids["test"] == sorted(sets["test"])
    # different random partition per repeat, distinct seeds, deterministic for a seed
    assert len({tuple(s.test) for s in splits}) == 5
    assert len({s.seed for s in splits}) == 5
    again = holdout_splits(c, n_repeats=5, seed=3)
    assert all(np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val) for a, b in zip(splits, again))
    other = holdout_splits(c, n_repeats=1, seed=4)[0]
    assert not np.array_equal(other.test, splits[0].test)


def test_holdout_other_fractions():
    c = _uneven_cohort(n_subjects=100)
    s = holdout_splits(c, n_repeats=1, fractions=(0.7, 0.1, 0.2))[0]
    sets = _subject_sets(c, s)
    assert (len(sets["train"]), len(sets["val"]), len(sets["test"])) == (70, 10, 20)
    scans = np.array([len(s.train), len(s.val), len(s.test)]) / len(c)
    assert np.allclose(scans, [0.7, 0.1, 0.2], atol=0.06)


@pytest.mark.parametrize("fractions, msg", [
    ((0.6, 0.3, 0.2), "sum to 1"),
    ((0.8, 0.0, 0.2), "each be > 0"),
    ((0.5, 0.5), "three numbers"),
])
def test_bad_fractions(fractions, msg):
    with pytest.raises(SplitError, match=msg):
        holdout_splits(make_cohort(), n_repeats=1, fractions=fractions)


def test_mixed_label_subject_is_an_error():
    c = make_cohort(n_subjects=6)
    scans = c.scans.copy()
    scans.loc[1, "label"] = "control" if scans.loc[0, "label"] == "PD" else "PD"
    bad = Cohort(c.volumes, scans, c.meta)
    with pytest.raises(SplitError, match=r"S000.*different labels"):
        holdout_splits(bad, n_repeats=1)


def test_too_few_subjects_in_a_class():
    c = make_cohort(n_subjects=6)  # 2 controls: cannot fill three partitions
    with pytest.raises(SplitError, match="class 'control' has only 1 subject"):
        holdout_splits(c, n_repeats=1)


def test_kfold_tests_each_subject_once():
    c = _uneven_cohort()
    folds = kfold_splits(c, k=5, val_fraction=0.2, seed=1)
    assert len(folds) == 5
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(c)))
    subj_tested = [s for f in folds for s in set(c.subjects[f.test])]
    assert sorted(subj_tested) == sorted(set(c.subjects))
    for f in folds:
        check_no_leakage(c, f)
        n_dev = len(set(c.subjects[np.concatenate([f.train, f.val])]))
        assert len(set(c.subjects[f.val])) == round(0.2 * n_dev)
        assert set(c.y[f.test]) == {0, 1}
    no_val = kfold_splits(c, k=3, val_fraction=0.0)
    assert all(len(f.val) == 0 for f in no_val)
    with pytest.raises(SplitError, match="fewer than k=20"):
        kfold_splits(c, k=20)


def test_official_split_and_its_leakage_check():
    c = make_cohort(n_subjects=6, visits=2)
    scans = c.scans.copy()
    scans["split"] = ["train"] * 6 + ["val"] * 2 + ["test"] * 4  # subject by subject
    s = official_split(Cohort(c.volumes, scans, c.meta))
    assert (len(s.train), len(s.val), len(s.test)) == (6, 2, 4)
    assert s.kind == "official"
    scans.loc[5, "split"] = "test"  # S002_V1 in test, S002_V0 in train
    with pytest.raises(LeakageError, match=r"S002.*train and test"):
        official_split(Cohort(c.volumes, scans, c.meta))
    scans.loc[5, "split"] = "holdout"
    with pytest.raises(SplitError, match="'holdout'"):
        official_split(Cohort(c.volumes, scans, c.meta))
    with pytest.raises(SplitError, match="no 'split' column"):
        official_split(c)


def test_check_no_leakage_names_subjects_and_checks_indices():
    c = make_cohort(n_subjects=6, visits=2)
    # S001 has scans 2 and 3: one in train, one in test
    with pytest.raises(LeakageError, match=r"\['S001'\] appear in both train and test"):
        check_no_leakage(c, Split(0, [0, 1, 2], [4, 5], [3, 6, 7], seed=0, kind="x"))
    with pytest.raises(LeakageError, match=r"S000_V0.*both train and val"):
        check_no_leakage(c, Split(0, [0, 1], [0], [6], seed=0, kind="x"))
    with pytest.raises(SplitError, match="out of range"):
        check_no_leakage(c, Split(0, [0, 1], [], [99], seed=0, kind="x"))
    with pytest.raises(SplitError, match="more than once"):
        check_no_leakage(c, Split(0, [0, 0], [], [2], seed=0, kind="x"))
    ok = Split(0, [0, 1], [2, 3], [4, 5], seed=0, kind="x", scan_ids={"train": ["S000_V0", "S000_V1"]})
    check_no_leakage(c, ok)
    ok.scan_ids["train"] = ["S000_V1", "S000_V0"]
    with pytest.raises(SplitError, match="another cohort"):
        check_no_leakage(c, ok)


def test_split_dict_roundtrip():
    c = make_cohort()
    s = holdout_splits(c, n_repeats=1)[0]
    d = json.loads(json.dumps(s.to_dict()))
    t = Split.from_dict(d)
    for p in ("train", "val", "test"):
        assert np.array_equal(getattr(s, p), getattr(t, p))
    assert (t.repeat, t.seed, t.kind, t.scan_ids, t.subject_ids) == (s.repeat, s.seed, s.kind, s.scan_ids, s.subject_ids)
    with pytest.raises(SplitError, match=r"missing field\(s\) \['seed'\]"):
        Split.from_dict({k: v for k, v in d.items() if k != "seed"})


def test_save_load_validate(tmp_path):
    c = make_cohort(n_subjects=15)
    c.save(tmp_path / "c")
    c = Cohort.load(tmp_path / "c")
    splits = holdout_splits(c, n_repeats=3)
    out = save_splits(tmp_path / "s.json", splits, c, protocol={"protocol": "holdout", "n_repeats": 3})
    doc = json.loads(out.read_text())
    assert doc["cohort"]["fingerprint"] == c.meta.fingerprint
    assert doc["protocol"]["n_repeats"] == 3 and doc["provenance"]["versions"]["numpy"]
    with pytest.raises(OutputExistsError, match="--force"):
        save_splits(tmp_path / "s.json", splits, c)
    back = load_splits(out, c)
    assert [s.test.tolist() for s in back] == [s.test.tolist() for s in splits]

    # a re-ordered cohort: indices re-derived from scan IDs
    order = np.arange(len(c))[::-1]
    rev = Cohort(np.asarray(c.volumes)[order], c.scans.iloc[order], c.meta)
    back = load_splits(out, rev)
    assert sorted(rev.scan_ids[back[0].test]) == sorted(splits[0].scan_ids["test"])

    # changed content: warning (or error when strict); unknown scan IDs: error
    changed = Cohort(np.asarray(c.volumes) + 1, c.scans, c.meta.model_copy(update={"fingerprint": "f" * 64}))
    with pytest.warns(UserWarning, match="fingerprint"):
        load_splits(out, changed)
    with pytest.raises(SplitError, match="re-run `volkd split`"):
        load_splits(out, changed, strict=True)
    other = make_cohort(n_subjects=15, seed=1)
    renamed = other.scans.assign(scan_id=other.scans["scan_id"] + "x")
    with pytest.raises(SplitError, match="not in"):
        load_splits(out, Cohort(other.volumes, renamed, other.meta))

    # a tampered file that leaks a subject is refused
    doc["splits"][0]["test"].append(doc["splits"][0]["train"][0])
    doc["splits"][0]["scan_ids"]["test"].append(doc["splits"][0]["scan_ids"]["train"][0])
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(LeakageError):
        load_splits(tmp_path / "bad.json", c)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(SplitError, match="junk.json: not a readable JSON"):
        load_splits(tmp_path / "junk.json", c)
    with pytest.raises(SplitError, match="not found"):
        load_splits(tmp_path / "missing.json", c)


def test_split_counts():
    c = make_cohort(n_subjects=6, visits=2)
    s = Split(0, [0, 1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11], seed=0, kind="x")
    counts = split_counts(c, s)
    assert counts["train"] == {"scans": 4, "subjects": 2, "per_class": {"control": 2, "PD": 2}}
    assert counts["test"]["subjects"] == 3


def test_cli_split(tmp_path):
    from typer.testing import CliRunner

    from volkd.cli import app

    c = make_cohort(n_subjects=15)
    c.save(tmp_path / "c")
    runner = CliRunner()
    r = runner.invoke(app, ["split", str(tmp_path / "c"), "--out", str(tmp_path / "s.json"), "--repeats", "2",
                            "--fractions", "0.6,0.2,0.2", "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert "repeat" in r.output and "subjects" in r.output
    doc = json.loads((tmp_path / "s.json").read_text())
    assert len(doc["splits"]) == 2 and doc["protocol"] == {"protocol": "holdout", "n_repeats": 2, "fractions": [0.6, 0.2, 0.2], "seed": 5}
    r = runner.invoke(app, ["split", str(tmp_path / "c"), "--out", str(tmp_path / "s.json")])
    assert r.exit_code != 0 and isinstance(r.exception, OutputExistsError)
    r = runner.invoke(app, ["split", str(tmp_path / "c"), "--out", str(tmp_path / "s.json"), "--protocol", "kfold",
                            "--k", "3", "--force"])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "s.json").read_text())["splits"]) == 3
    r = runner.invoke(app, ["split", str(tmp_path / "c"), "--out", str(tmp_path / "t.json"), "--fractions", "a,b"])
    assert r.exit_code != 0 and "fractions" in str(r.exception)


def test_official_split_of_real_medmnist(medmnist28):
    """AdrenalMNIST3D's official split (1188/98/298 scans) is kept as is and passes the guard."""
    z = np.load(medmnist28)
    rows = []
    for part in ("train", "val", "test"):
        for i, lab in enumerate(z[f"{part}_labels"].reshape(-1)):
            rows.append({"scan_id": f"{part}_{i}", "subject_id": f"{part}_{i}", "visit": 0, "label": str(int(lab)), "split": part})
    base = make_cohort(n_subjects=1, visits=1, grid=1)
    c = Cohort(np.zeros((len(rows), 1, 1, 1), np.float32), pd.DataFrame(rows), base.meta.model_copy(update={"grid_shape": (1, 1, 1), "class_names": ["0", "1"]}))
    s = official_split(c)
    assert (len(s.train), len(s.val), len(s.test)) == (1188, 98, 298)
    assert split_counts(c, s)["test"]["per_class"] == {"0": int((z["test_labels"] == 0).sum()), "1": int((z["test_labels"] == 1).sum())}
