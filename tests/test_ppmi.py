"""PPMI downloads: a replica of the collection CSV + Subject/Description/Date/ImageID tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.test_import import MNI_2MM, mni_volume
from tests.test_readers import write_dicom_series, write_nifti
from volkd.cli import app
from volkd.data.cohort import Cohort
from volkd.data.importer import import_scans
from volkd.data.ppmi import find_image_folders, parse_group_map, read_collection, visit_code_order, visit_numbers
from volkd.errors import ScanImportError

COLUMNS = ["Image Data ID", "Subject", "Group", "Sex", "Age", "Visit", "Modality", "Description", "Type",
           "Acq Date", "Format", "Downloaded"]
#: (image id, subject, group, sex, age, visit, acq date, format, volume seed or None = not downloaded)
ROWS = [
    ("I100001", "3001", "PD", "M", "65", "BL", "1/15/2011", "DCM", 0),
    ("I100002", "3001", "PD", "M", "66", "V04", "2/20/2012", "NiFTI", 1),
    ("I100003", "3002", "Control", "F", "58", "BL", "3/1/2011", "NiFTI", 0),
    ("I100004", "3003", "SWEDD", "F", "70", "BL", "4/2/2011", "DCM", 2),
    ("I100005", "3004", "PD", "M", "61", "BL", "5/5/2011", "DCM", None),
    ("I100006", "3005", "Control", "M", "49", "SC", "6/6/2011", "DCM", 3),
]
DESCRIPTION = "Reconstructed DaTSCAN"


def _image_folder(ppmi: Path, subject: str, date: str, image_id: str) -> Path:
    m, d, y = (int(x) for x in date.split("/"))
    return ppmi / subject / DESCRIPTION.replace(" ", "_") / f"{y:04d}-{m:02d}-{d:02d}_10_30_00.0" / image_id


def _mni8(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small scan spanning PPMI's MNI field of view at 8 mm."""
    vol, _ = mni_volume(seed, (23, 28, 23))
    aff = MNI_2MM.copy()
    aff[:3, :3] *= 4
    return vol, aff


def make_ppmi(root: Path) -> tuple[Path, Path]:
    """Write a PPMI download replica (DICOM and NIfTI images) and its collection CSV."""
    ppmi = root / "PPMI"
    records = []
    for iid, subj, group, sex, age, visit, date, fmt, seed in ROWS:
        records.append({"Image Data ID": iid, "Subject": subj, "Group": group, "Sex": sex, "Age": age, "Visit": visit,
                        "Modality": "SPECT", "Description": DESCRIPTION, "Type": "Reconstructed", "Acq Date": date,
                        "Format": fmt, "Downloaded": "" if seed is None else "11/20/2026"})
        if seed is None:
            continue
        folder = _image_folder(ppmi, subj, date, iid)
        vol, aff = _mni8(seed)
        if fmt == "DCM":
            write_dicom_series(folder, vol, aff)
        else:
            folder.mkdir(parents=True)
            write_nifti(folder / f"PPMI_{subj}_NM_{DESCRIPTION.replace(' ', '_')}_S1_{iid}.nii", vol, aff)
    orphan = _image_folder(ppmi, "3006", "7/7/2011", "I100099")  # downloaded, but not in the CSV
    orphan.mkdir(parents=True)
    write_nifti(orphan / "x.nii.gz", *_mni8(5))
    csv = root / "collection.csv"
    pd.DataFrame(records, columns=COLUMNS).to_csv(csv, index=False)
    return ppmi, csv


def test_ppmi_download_imports_with_one_call(tmp_path):
    ppmi, csv = make_ppmi(tmp_path)
    cohort, summary = import_scans(ppmi, tmp_path / "cohort", ppmi_csv=csv, target_grid=16)
    s = cohort.scans.set_index("scan_id")
    assert list(s.index) == ["I100001", "I100002", "I100003", "I100006"]
    assert cohort.class_names == ["control", "PD"] and s["label"].tolist() == ["PD", "PD", "control", "control"]
    assert s["subject_id"].tolist() == ["3001", "3001", "3002", "3005"]
    assert s["visit"].tolist() == [0, 1, 0, 0] and s["visit_code"].tolist() == ["BL", "V04", "BL", "SC"]
    assert s["age"].tolist() == [65, 66, 58, 49] and s["sex"].tolist() == ["M", "M", "F", "M"]
    assert s.loc["I100001", "source_path"] == str(_image_folder(ppmi, "3001", "1/15/2011", "I100001"))
    assert s.loc["I100002", "source_path"].endswith("I100002.nii")
    assert cohort.meta.modality == "spect" and cohort.meta.space == "MNI"
    # the same image as DICOM (I100001) and as NIfTI (I100003) imports identically
    np.testing.assert_allclose(cohort.volumes[0], cohort.volumes[2], atol=1e-5)
    assert not np.allclose(cohort.volumes[0], cohort.volumes[1])
    # excluded groups counted; missing and orphan images reported
    assert summary.excluded == {"SWEDD": 1}
    assert summary.missing_files == [{"scan_id": "I100005", "subject_id": "3004"}]
    assert summary.orphan_files == [str(_image_folder(ppmi, "3006", "7/7/2011", "I100099"))]
    assert summary.scans_per_class == {"control": 2, "PD": 2} and summary.subjects_per_class == {"control": 2, "PD": 1}
    report = json.loads((tmp_path / "cohort" / "import_report.json").read_text())
    assert report["kind"] == "ppmi" and report["excluded"] == {"SWEDD": 1}
    assert Cohort.load(tmp_path / "cohort").meta.extra["import"]["excluded"] == {"SWEDD": 1}


def test_other_groups_only_when_asked(tmp_path):
    ppmi, csv = make_ppmi(tmp_path)
    cohort, summary = import_scans(tmp_path, tmp_path / "c", ppmi_csv=csv, target_grid=8, include_groups="SWEDD")
    assert cohort.class_names == ["control", "PD", "SWEDD"] and summary.excluded == {}
    assert cohort.scans.set_index("scan_id").loc["I100004", "label"] == "SWEDD"
    cohort, _ = import_scans(ppmi, tmp_path / "c2", ppmi_csv=csv, target_grid=8, include_groups={"SWEDD": "control"})
    assert cohort.class_names == ["control", "PD"] and (cohort.scans["label"] == "control").sum() == 3


def test_subject_folder_mismatch_and_bad_image_are_named(tmp_path):
    ppmi, csv = make_ppmi(tmp_path)
    src = _image_folder(ppmi, "3002", "3/1/2011", "I100003")
    dst = _image_folder(ppmi, "3009", "3/1/2011", "I100003")
    dst.parent.mkdir(parents=True)
    shutil.move(src, dst)
    with pytest.raises(ScanImportError, match=r"I100003: image folder is under subject 3009 but the collection CSV says subject 3002"):
        import_scans(ppmi, tmp_path / "c", ppmi_csv=csv, target_grid=8)
    shutil.move(dst, src)
    empty = _image_folder(ppmi, "3004", "5/5/2011", "I100005")
    empty.mkdir(parents=True)
    with pytest.raises(ScanImportError, match=r"I100005: image folder holds neither DICOM files nor a NIfTI file"):
        import_scans(ppmi, tmp_path / "c", ppmi_csv=csv, target_grid=8)
    empty.rmdir()
    bad = _image_folder(ppmi, "3005", "6/6/2011", "I100006")
    for f in bad.iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(ScanImportError, match=r"I100006: unreadable DICOM file"):
        import_scans(ppmi, tmp_path / "c", ppmi_csv=csv, target_grid=8)
    cohort, summary = import_scans(ppmi, tmp_path / "c", ppmi_csv=csv, target_grid=8, skip_bad=True)
    assert "I100006" not in set(cohort.scan_ids) and summary.skipped[0]["path"] == str(bad)
    assert pd.read_csv(tmp_path / "c" / "skipped.csv")["path"].tolist() == [str(bad)]


def test_collection_csv_checks(tmp_path):
    pd.DataFrame({"Subject": ["1"], "Group": ["PD"]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ScanImportError, match=r"a\.csv: not a PPMI image-collection CSV: missing column\(s\) \['Image Data ID', 'Visit'\]"):
        read_collection(tmp_path / "a.csv")
    rows = {"Image Data ID": ["I1", "I1"], "Subject": ["1", "2"], "Group": ["PD", "PD"], "Visit": ["BL", "BL"]}
    pd.DataFrame(rows).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ScanImportError, match=r"b\.csv: duplicate Image Data ID\(s\) \['I1'\]"):
        read_collection(tmp_path / "b.csv")
    rows = {**rows, "Image Data ID": ["I1", "I2"], "Acq Date": ["1/2/2011", "2011-02-03"]}
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ScanImportError, match=r"c\.csv: column 'Acq Date' has value '2011-02-03' in row 3; expected M/D/YYYY"):
        read_collection(tmp_path / "c.csv")


def test_visit_order_and_group_options():
    assert sorted(["V10", "BL", "V02", "SC", "U01"], key=visit_code_order) == ["SC", "BL", "V02", "V10", "U01"]
    subj = pd.Series(["a", "a", "a", "b", "b"])
    dates = pd.Series(pd.to_datetime(["2012-01-01", "2011-01-01", "2011-01-01", None, None]))
    codes = pd.Series(["V04", "BL", "SC", "V06", "BL"])
    # by acquisition date within subject; same date → by visit code; no dates → by code
    assert visit_numbers(subj, dates, codes).tolist() == [2, 1, 0, 1, 0]
    assert parse_group_map("SWEDD=control, Prodromal") == {"SWEDD": "control", "Prodromal": "Prodromal"}
    assert find_image_folders(Path(__file__).parent) == {}


def test_cli_one_command(tmp_path):
    ppmi, csv = make_ppmi(tmp_path)
    res = CliRunner().invoke(app, ["import", str(ppmi), "--ppmi-csv", str(csv), "--out", str(tmp_path / "cohort"), "--grid", "12"])
    assert res.exit_code == 0, res.output
    assert "imported 4 of 5 scans" in res.output and "SWEDD 1" in res.output
    assert "1 file(s) without a CSV row" in res.output and "I100005" in res.output
    c = Cohort.load(tmp_path / "cohort")
    assert len(c) == 4 and c.meta.grid_shape == (12, 12, 12)
    assert "--ppmi-csv" in c.meta.provenance["command"] or c.meta.provenance["ppmi_csv"] == str(csv.resolve())
