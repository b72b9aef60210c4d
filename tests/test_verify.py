"""Content verification: a cohort's files are re-hashed and compared with cohort.json on
`volkd info --verify`, on study start and resume, and before predict's training-overlap check;
a mismatch is an error naming what changed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from volkd.cli import app
from volkd.data.cohort import REQUIRED_COLUMNS, Cohort
from volkd.errors import CohortChangedError
from volkd.provenance import array_fingerprint
from tests.conftest import make_cohort


@pytest.fixture
def saved(tmp_path):
    c = make_cohort(n_subjects=6, visits=2, grid=8)
    c.save(tmp_path / "c")
    return tmp_path / "c"


def rewrite_volumes_in_place(path, fn=lambda v: v[::-1].copy()):
    v = np.load(path / "volumes.npy", mmap_mode="r+")
    v[:] = fn(np.asarray(v))
    v.flush()


def test_save_records_per_file_hashes_and_the_fingerprint_is_unchanged(saved):
    c = Cohort.load(saved, verify=True)
    meta = json.loads((saved / "cohort.json").read_text())
    assert set(meta["content"]) == {"algorithm", "volumes", "scans_csv"} and meta["content"]["algorithm"] == "sha256"
    table = c.scans[list(REQUIRED_COLUMNS)].astype(str).to_csv(index=False).encode()
    # the same fingerprint as before per-file hashes existed: checkpoints and studies made earlier still match
    assert meta["fingerprint"] == array_fingerprint(np.asarray(c.volumes), 16, table, "|".join(c.class_names).encode())


def test_volumes_changed_in_place_same_shape_is_named(saved):
    rewrite_volumes_in_place(saved)
    Cohort.load(saved)  # the plain load stays cheap and does not look
    with pytest.raises(CohortChangedError, match=r"volumes\.npy \(content hash .* ≠ recorded .*\) changed after the cohort was written"):
        Cohort.load(saved, verify=True)
    rewrite_volumes_in_place(saved, lambda v: np.where(np.arange(v.size).reshape(v.shape) == 5, v + 1e-6, v).astype(np.float32))
    with pytest.raises(CohortChangedError, match="volumes.npy"):  # one voxel, by a rounding error
        Cohort.load(saved, verify=True)


def test_scans_csv_change_is_named_even_in_an_optional_column(saved):
    df = pd.read_csv(saved / "scans.csv", dtype=str)
    df.loc[0, "visit"] = "7"
    df.to_csv(saved / "scans.csv", index=False)
    with pytest.raises(CohortChangedError, match=r"^\S+: scans\.csv \(content hash"):
        Cohort.load(saved, verify=True)
    df = pd.read_csv(saved / "scans.csv", dtype=str)
    df["site"] = "elsewhere"  # not part of the fingerprint, still a change of scans.csv
    df.to_csv(saved / "scans.csv", index=False)
    with pytest.raises(CohortChangedError, match="scans.csv"):
        Cohort.load(saved, verify=True)


def test_both_files_changed_are_both_named(saved):
    rewrite_volumes_in_place(saved)
    (saved / "scans.csv").write_text((saved / "scans.csv").read_text().replace("S000_V0", "S000_VX"))
    with pytest.raises(CohortChangedError, match="volumes.npy .* and scans.csv"):
        Cohort.load(saved, verify=True)


def test_class_names_changed_in_cohort_json_is_named(saved):
    meta = json.loads((saved / "cohort.json").read_text())
    meta["class_names"] = ["PD", "control"]  # swapped: every label index flips
    (saved / "cohort.json").write_text(json.dumps(meta))
    with pytest.raises(CohortChangedError, match="the class names in cohort.json changed"):
        Cohort.load(saved, verify=True)


def test_legacy_cohort_without_per_file_hashes_and_hand_made_cohort(saved):
    meta = json.loads((saved / "cohort.json").read_text())
    meta.pop("content")
    (saved / "cohort.json").write_text(json.dumps(meta))
    Cohort.load(saved, verify=True)  # intact: passes on the fingerprint alone
    rewrite_volumes_in_place(saved)
    with pytest.raises(CohortChangedError, match="volumes.npy or scans.csv .*predates per-file hashes"):
        Cohort.load(saved, verify=True)
    meta["fingerprint"] = ""  # written by hand: nothing recorded to compare with
    (saved / "cohort.json").write_text(json.dumps(meta))
    Cohort.load(saved, verify=True)


def test_cli_info_verify(saved):
    r = CliRunner().invoke(app, ["info", str(saved), "--verify"])
    assert r.exit_code == 0 and "verified: the data match cohort.json" in r.output
    r = CliRunner().invoke(app, ["info", str(saved), "--verify", "--json"])
    assert json.loads(r.output)["verified"] is True
    rewrite_volumes_in_place(saved)
    assert CliRunner().invoke(app, ["info", str(saved)]).exit_code == 0
    r = CliRunner().invoke(app, ["info", str(saved), "--verify"])
    assert isinstance(r.exception, CohortChangedError) and "volumes.npy" in str(r.exception)


def test_cli_info_verify_is_one_line_exit_2(saved, monkeypatch, capsys):
    from volkd.cli import main

    rewrite_volumes_in_place(saved)
    monkeypatch.setattr("sys.argv", ["volkd", "info", str(saved), "--verify"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "volumes.npy" in err and "Traceback" not in err


def test_study_start_verifies_the_cohort_and_creates_nothing(saved, tmp_path):
    from tests.conftest import tiny_study_config
    from volkd.experiment.trial_exec import load_dataset
    from volkd.study import run_study

    cfg = tiny_study_config(dataset={"kind": "cohort", "path": str(saved)}, baselines=["majority"])
    assert len(load_dataset(cfg.dataset)) == 12
    rewrite_volumes_in_place(saved)
    with pytest.raises(CohortChangedError, match="volumes.npy"):
        run_study(cfg, tmp_path / "study", progress=False)
    assert not (tmp_path / "study").exists()


def test_predict_refuses_a_changed_cohort_before_its_overlap_check(saved):
    from volkd.inference.inputs import collect_inputs

    items, skipped = collect_inputs([saved])
    assert len(items) == 12 and not skipped
    rewrite_volumes_in_place(saved)
    with pytest.raises(CohortChangedError, match="volumes.npy"):
        collect_inputs([saved])  # an error, not a skipped input


@pytest.mark.slow
def test_resumed_study_refuses_changed_data_instead_of_mixing(tmp_path):
    from tests.conftest import tiny_study_config
    from volkd.study import run_study

    from tests.test_predict import tiny_mni_cohort

    tiny_mni_cohort().save(tmp_path / "c")
    cfg = tiny_study_config(dataset={"kind": "cohort", "path": str(tmp_path / "c")}, projections=["mip"], kd=[{"name": "none"}])
    res = run_study(cfg, tmp_path / "study", progress=False)
    assert res.n_failed == 0
    finished = sorted(p.name for p in (tmp_path / "study" / "trials").glob("*.json"))
    (tmp_path / "study" / "trials" / finished[-1]).unlink()  # one trial to redo on resume
    rewrite_volumes_in_place(tmp_path / "c")
    before = sorted(p.name for p in (tmp_path / "study").rglob("*"))
    with pytest.raises(CohortChangedError, match="volumes.npy"):
        run_study(cfg, tmp_path / "study", progress=False)
    assert sorted(p.name for p in (tmp_path / "study").rglob("*")) == before  # nothing trained on the new data
