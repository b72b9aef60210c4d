"""BIDS import (volkd.data.bids, `volkd import --bids`) on small BIDS trees written here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from volkd.cli import app
from volkd.data.bids import entities_of, import_bids, parse_filters, plan_bids
from volkd.data.cohort import Cohort
from volkd.errors import ConfigError, OutputExistsError, ScanImportError

needs_pybids = pytest.mark.skipif(importlib.util.find_spec("bids") is None, reason="pybids not installed (volkd[bids])")

#: A coarse MNI-space grid (16 mm voxels) covering the whole MNI field of view.
MNI_16MM = np.array([[16.0, 0, 0, -90.0], [0, 16, 0, -126], [0, 0, 16, -72], [0, 0, 0, 1]])
NATIVE_3MM = np.array([[3.0, 0, 0, -15.0], [0, 3, 0, -18], [0, 0, 3, -15], [0, 0, 0, 1]])


def _vol(value: float, shape=(10, 12, 10)) -> np.ndarray:
    """A box-shaped 'brain' whose mean intensity encodes which file it came from."""
    v = np.zeros(shape, np.float32)
    v[2:-2, 2:-2, 2:-2] = value
    return v


def _nii(path: Path, value: float, affine: np.ndarray = NATIVE_3MM, shape=(10, 12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(_vol(value, shape), affine), path)
    return path


def _tsv(path: Path, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)


def make_bids(root: Path) -> Path:
    """A small PET study: 5 participants (one without a scan, one with label n/a), sessions with a
    sessions.tsv (dates that contradict alphabetical order, and a per-session label), an anatomical
    T1w per subject, a file with a non-BIDS name and an MNI-space derivatives pipeline."""
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny PET", "BIDSVersion": "1.9.0"}))
    _tsv(root / "participants.tsv", [
        {"participant_id": "sub-01", "group": "PD", "age": 61, "sex": "M"},
        {"participant_id": "sub-02", "group": "HC", "age": 58, "sex": "F"},
        {"participant_id": "sub-03", "group": "n/a", "age": 70, "sex": "n/a"},
        {"participant_id": "sub-04", "group": "HC", "age": "n/a", "sex": "F"},
        {"participant_id": "sub-05", "group": "PD", "age": 66, "sex": "M"},  # no scan at all
    ])
    value = 1.0
    for sub, sessions in (("01", ["screen", "baseline"]), ("02", ["screen", "baseline"]), ("03", ["baseline"]), ("04", [None])):
        for ses in sessions:
            rel = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "")
            stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            _nii(root / rel / "pet" / f"{stem}_trc-DaT_pet.nii.gz", value)
            (root / rel / "pet" / f"{stem}_trc-DaT_pet.json").write_text("{}")
            _nii(root / rel / "anat" / f"{stem}_T1w.nii.gz", 0.5)
            _nii(root / "derivatives" / "spm" / rel / "pet" / f"{stem}_trc-DaT_space-MNI152_pet.nii.gz", value, MNI_16MM, (12, 14, 12))
            value += 1.0
    # screening came before baseline, although "baseline" < "screen" alphabetically
    _tsv(root / "sub-01" / "sub-01_sessions.tsv", [{"session_id": "ses-screen", "acq_time": "2019-12-01"},
                                                   {"session_id": "ses-baseline", "acq_time": "2020-01-15"}])
    # sub-02 converted: a per-session label overrides participants.tsv
    _tsv(root / "sub-02" / "sub-02_sessions.tsv", [{"session_id": "ses-screen", "acq_time": "2019-11-01", "group": "HC"},
                                                   {"session_id": "ses-baseline", "acq_time": "2020-02-01", "group": "PD"}])
    _nii(root / "sub-02" / "ses-baseline" / "pet" / "scan_copy.nii.gz", 9.0)  # not a BIDS name
    (root / "derivatives" / "spm" / "dataset_description.json").write_text(json.dumps(
        {"Name": "spm", "BIDSVersion": "1.9.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "SPM12"}]}))
    return root


@pytest.fixture
def bids_root(tmp_path) -> Path:  # the tree needs no pybids: the not-installed test uses it too
    return make_bids(tmp_path / "ds")


@needs_pybids
def test_sessions_labels_visits_and_what_was_left_out(bids_root, tmp_path):
    cohort, summary = import_bids(bids_root, tmp_path / "c", label_column="group", target_grid=8)
    s = cohort.scans.set_index("scan_id")
    assert list(s.index) == ["sub-01_ses-baseline_trc-DaT_pet", "sub-01_ses-screen_trc-DaT_pet", "sub-02_ses-baseline_trc-DaT_pet",
                             "sub-02_ses-screen_trc-DaT_pet", "sub-04_trc-DaT_pet"]
    assert s["subject_id"].tolist() == ["sub-01", "sub-01", "sub-02", "sub-02", "sub-04"]
    # labels: participants.tsv, except sub-02's baseline session (sessions.tsv says PD); HC stays as written
    assert s["label"].tolist() == ["PD", "PD", "PD", "HC", "HC"]
    assert cohort.class_names == ["HC", "PD"]
    # visits ordered by acq_time (screen before baseline), code kept; no session → visit 0
    assert s["visit"].tolist() == [1, 0, 1, 0, 0]
    assert s.loc["sub-01_ses-screen_trc-DaT_pet", "visit_code"] == "screen" and pd.isna(s.loc["sub-04_trc-DaT_pet", "visit_code"])
    assert s.loc["sub-01_ses-baseline_trc-DaT_pet", "age"] == 61 and pd.isna(s.loc["sub-04_trc-DaT_pet", "age"])
    # the volume is that file's (mean intensity encodes the file), raw native-space scans → fov placement
    src = nib.load(bids_root / "sub-02/ses-screen/pet/sub-02_ses-screen_trc-DaT_pet.nii.gz").get_fdata().max()
    assert cohort.volumes[3].max() == pytest.approx(src, rel=0.05)
    assert cohort.meta.space == "native" and cohort.meta.modality == "pet"
    # what was left out, and why
    assert summary.kind == "bids" and summary.n_candidates == 6 and summary.n_imported == 5
    reasons = {Path(i["path"]).name: i["reason"] for i in summary.ignored}
    assert reasons["scan_copy.nii.gz"].startswith("not a BIDS file name")
    assert reasons["sub-03_ses-baseline_trc-DaT_pet.nii.gz"] == "no label: 'group' is 'n/a' for sub-03 in participants.tsv"
    assert summary.missing_files == [{"scan_id": "", "subject_id": "sub-05"}]  # sub-03 has a scan, only no label
    notes = " ".join(summary.notes)
    assert "other suffixes (T1w 6)" in notes and "derivatives/ not imported: spm 6 'pet' file(s)" in notes
    skipped = pd.read_csv(tmp_path / "c" / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["scan_copy.nii.gz", "sub-03_ses-baseline_trc-DaT_pet.nii.gz"]
    report = json.loads((tmp_path / "c" / "import_report.json").read_text())
    assert report["kind"] == "bids" and len(report["ignored"]) == 2
    assert cohort.meta.provenance["bids"]["suffix"] == "pet"
    lines = "\n".join(summary.lines())
    assert "1 participants.tsv row(s) without a file (not imported): sub-05" in lines and "2 file(s) not imported" in lines


@needs_pybids
def test_label_map_excludes_and_counts(bids_root, tmp_path):
    cohort, summary = import_bids(bids_root, tmp_path / "c", label_map="PD=PD", class_names=["control", "PD"], target_grid=8)
    assert set(cohort.scans["label"]) == {"PD"} and len(cohort) == 3
    assert summary.excluded == {"HC": 2}
    cohort, _ = import_bids(bids_root, tmp_path / "c2", label_map="PD=PD,HC=control", target_grid=8)
    assert cohort.class_names == ["control", "PD"] and (cohort.scans["label"] == "control").sum() == 2


@needs_pybids
def test_derivatives_only_on_request(bids_root, tmp_path):
    cohort, summary = import_bids(bids_root, tmp_path / "c", derivatives="spm", target_grid=8)
    assert all("space-MNI152" in sid for sid in cohort.scan_ids) and len(cohort) == 5
    assert cohort.meta.space == "MNI"  # space-MNI… entities → MNI placement by default
    assert cohort.scans.set_index("subject_id").loc["sub-01", "label"].tolist() == ["PD", "PD"]  # labels from the raw participants.tsv
    assert not any("derivatives/ not imported" in n for n in summary.notes)
    assert len(import_bids(bids_root, tmp_path / "c2", derivatives="all", target_grid=8).cohort) == 5
    with pytest.raises(ConfigError, match=r"--derivatives 'fmriprep': no such pipeline .* found \['spm'\]"):
        import_bids(bids_root, tmp_path / "c3", derivatives="fmriprep")


@needs_pybids
def test_wrong_suffix_names_what_is_there(bids_root, tmp_path):
    with pytest.raises(ScanImportError, match=r"no BIDS scans with suffix 'spect' .* NIfTI suffixes found: T1w \(6\), pet \(6\) "
                                              r"\(choose one with --suffix\)"):
        import_bids(bids_root, tmp_path / "c", suffix="spect")
    assert not (tmp_path / "c").exists()


@needs_pybids
def test_spect_under_its_own_suffix_and_filters(tmp_path):
    root = tmp_path / "spect"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "spect", "BIDSVersion": "1.9.0"}))
    _tsv(root / "participants.tsv", [{"participant_id": f"sub-{i}", "dx": "PD" if i % 2 else "control"} for i in range(1, 5)])
    for i in range(1, 5):
        for trc in ("DaT", "FDG"):
            _nii(root / f"sub-{i}" / "spect" / f"sub-{i}_trc-{trc}_spect.nii", float(i))
    cohort, summary = import_bids(root, tmp_path / "c", label_column="dx", suffix="spect", target_grid=8)
    assert len(cohort) == 8 and cohort.meta.modality == "spect"
    assert any("4 subject session(s) have more than one 'spect' scan" in n and "--bids-filter" in n for n in summary.notes)
    cohort, summary = import_bids(root, tmp_path / "c2", label_column="dx", suffix="spect", filters="trc=DaT", target_grid=8)
    assert len(cohort) == 4 and all(sid.endswith("trc-DaT_spect") for sid in cohort.scan_ids)
    assert any("4 'spect' file(s) outside --bids-filter" in n for n in summary.notes)
    assert cohort.class_names == ["control", "PD"]


@needs_pybids
def test_label_column_and_root_errors(bids_root, tmp_path):
    with pytest.raises(ScanImportError, match=r"participants\.tsv has columns \['participant_id', 'group', 'age', 'sex'\]; "
                                              r"no column 'dx' .*--label-col"):
        import_bids(bids_root, tmp_path / "c", label_column="dx")
    with pytest.raises(ScanImportError, match="BIDS root folder not found"):
        import_bids(tmp_path / "nope", tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanImportError, match=r"empty: not a BIDS dataset: no dataset_description\.json"):
        import_bids(tmp_path / "empty", tmp_path / "c")
    with pytest.raises(ConfigError, match="entity=value"):
        parse_filters("trc")
    assert parse_filters("trc=DaT, rec=acstat") == {"trc": "DaT", "rec": "acstat"}
    assert entities_of("sub-01_ses-bl_trc-DaT_pet.nii.gz") == {"sub": "01", "ses": "bl", "trc": "DaT", "suffix": "pet"}
    assert entities_of("scan.nii.gz") is None
    import_bids(bids_root, tmp_path / "ok", target_grid=8)
    with pytest.raises(OutputExistsError):
        import_bids(bids_root, tmp_path / "ok", target_grid=8)


def test_without_pybids_the_error_says_how_to_install(bids_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bids", None)  # as if pybids were not installed
    with pytest.raises(ScanImportError, match=r"BIDS import needs pybids .*pip install 'volkd\[bids\]'"):
        plan_bids(bids_root)
    res = CliRunner().invoke(app, ["import", str(bids_root), "--bids", "--out", str(tmp_path / "c")])
    assert res.exit_code != 0 and "volkd[bids]" in str(res.exception) and not (tmp_path / "c").exists()


@needs_pybids
def test_cli_bids(bids_root, tmp_path):
    res = CliRunner().invoke(app, ["import", str(bids_root), "--bids", "--label-col", "group", "--map", "PD=PD,HC=control",
                                   "--out", str(tmp_path / "c"), "--grid", "8"])
    assert res.exit_code == 0, res.output
    assert "imported 5 of 6 scans" in res.output and "2 file(s) not imported (skipped.csv says why)" in res.output
    assert Cohort.load(tmp_path / "c").class_names == ["control", "PD"]
    res = CliRunner().invoke(app, ["import", str(bids_root), "--bids", "--labels", "x.csv", "--out", str(tmp_path / "d")])
    assert isinstance(res.exception, ConfigError) and "--labels does not apply to --bids" in str(res.exception)
    res = CliRunner().invoke(app, ["import", str(bids_root), "--suffix", "spect", "--out", str(tmp_path / "d")])
    assert isinstance(res.exception, ConfigError) and "--suffix applies to BIDS datasets only" in str(res.exception)
