"""PPMI-layout export (NIfTI / DICOM), the preview PNG, and the `volkd synth` command."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volkd.data.cohort import Cohort
from volkd.data.synth import synthesize
from volkd.data.synth_export import COLLECTION_COLUMNS, write_synthetic


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return synthesize(n_subjects=6, grid=16, seed=7, followup_fraction=1.0)


def _collection(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "ppmi" / "collection.csv", dtype={"Subject": str, "Image Data ID": str})


def _scan_dir(root: Path, row: pd.Series) -> Path:
    desc = row["Description"].replace(" ", "_")
    dirs = list((root / "ppmi" / "PPMI" / row["Subject"] / desc).glob(f"*/{row['Image Data ID']}"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def _check_collection(root: Path, cohort: Cohort, fmt: str) -> pd.DataFrame:
    col = _collection(root)
    assert list(col.columns) == list(COLLECTION_COLUMNS)
    assert len(col) == len(cohort) + 3  # + 2 SWEDD + 1 Prodromal
    assert col["Image Data ID"].is_unique
    assert sorted(col["Group"].value_counts().items()) == sorted(
        {"PD": int((cohort.scans["label"] == "PD").sum()), "Control": int((cohort.scans["label"] == "control").sum()),
         "SWEDD": 2, "Prodromal": 1}.items())
    mine = col.iloc[: len(cohort)]
    s = cohort.scans
    assert mine["Image Data ID"].tolist() == s["scan_id"].tolist()
    assert mine["Subject"].tolist() == s["subject_id"].tolist()
    assert mine["Visit"].tolist() == s["visit_code"].tolist()
    assert mine["Group"].tolist() == ["PD" if x == "PD" else "Control" for x in s["label"]]
    assert mine["Sex"].tolist() == s["sex"].tolist()
    np.testing.assert_allclose(mine["Age"], s["age"])
    assert set(col["Modality"]) == {"SPECT"} and set(col["Type"]) == {"Processed"}
    assert set(col["Format"]) == {"NiFTI" if fmt == "nifti" else "DCM"}
    assert col["Acq Date"].str.fullmatch(r"\d{1,2}/\d{1,2}/20\d\d").all()
    assert not set(col["Subject"].iloc[len(cohort):]) & set(s["subject_id"])  # extra groups: new subjects
    for _, row in col.iterrows():
        folder = _scan_dir(root, row)
        stamp = folder.parent.name
        assert len(stamp) == len("2011-01-01_09_10_11.0") and stamp.endswith(".0")
        m, d, y = (int(x) for x in row["Acq Date"].split("/"))
        assert stamp.startswith(f"{y:04d}-{m:02d}-{d:02d}_")
    return col


def test_nifti_export_roundtrip_and_preview(tmp_path, cohort):
    import nibabel as nib
    from PIL import Image

    out = write_synthetic(cohort, tmp_path / "c", fmt="nifti", seed=7, extra_groups={"SWEDD": 2, "Prodromal": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # atomic: no temp leftovers
    loaded = Cohort.load(out, verify=True)
    np.testing.assert_array_equal(np.asarray(loaded.volumes), cohort.volumes)
    col = _check_collection(out, cohort, "nifti")
    for i in range(len(cohort)):
        files = list(_scan_dir(out, col.iloc[i]).glob("*.nii.gz"))
        assert len(files) == 1 and files[0].name.startswith(f"PPMI_{cohort.subjects[i]}_NM_")
        img = nib.load(files[0])
        np.testing.assert_allclose(img.affine, np.array(cohort.meta.affine), atol=1e-5)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(np.asarray(img.dataobj), cohort.volumes[i], rtol=1e-6)
    with Image.open(out / "preview.png") as im:
        im.verify()
    with Image.open(out / "preview.png") as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 6 * 100  # 6 rows (3 per class)


def _read_dicom_volume(folder: Path):
    import pydicom

    files = sorted(folder.glob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    row = np.array(dss[0].ImageOrientationPatient[:3], dtype=float)
    col = np.array(dss[0].ImageOrientationPatient[3:], dtype=float)
    normal = np.cross(row, col)
    order = np.argsort([np.dot(normal, np.array(d.ImagePositionPatient, dtype=float)) for d in dss])
    return files, dss, order, row, col, normal


def test_dicom_export_positions_rescale_and_order(tmp_path, cohort):
    out = write_synthetic(cohort, tmp_path / "c", fmt="dicom", seed=7, extra_groups={"SWEDD": 2, "Prodromal": 1})
    col = _check_collection(out, cohort, "dicom")
    aff = np.array(cohort.meta.affine)
    lps = np.diag([-1.0, -1.0, 1.0])
    for i in (0, len(cohort) - 1):
        files, dss, order, row, coldir, normal = _read_dicom_volume(_scan_dir(out, col.iloc[i]))
        assert len(files) == cohort.volumes.shape[3]
        assert open(files[0], "rb").read(132)[128:] == b"DICM"  # preamble + file meta
        d0 = dss[0]
        assert d0.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert d0.Modality == "NM" and d0.PatientID == cohort.subjects[i]
        assert len({d.SeriesInstanceUID for d in dss}) == 1 and len({d.SOPInstanceUID for d in dss}) == len(dss)
        # files are shuffled: the name index does not follow the slice position
        assert list(order) != list(range(len(files)))
        np.testing.assert_allclose(row, [1, 0, 0], atol=1e-9)  # toward patient left (LPS +x)
        np.testing.assert_allclose(coldir, [0, 1, 0], atol=1e-9)  # toward posterior
        vol = np.empty(cohort.volumes.shape[1:])
        for k, j in enumerate(order):
            d = dss[j]
            pix = d.pixel_array.astype(float) * float(d.RescaleSlope) + float(d.RescaleIntercept)
            # pixel (r, c) lies at IPP + c·dx·row + r·dy·col; map back to RAS voxel indices
            dy, dx = (float(x) for x in d.PixelSpacing)
            ipp = np.array(d.ImagePositionPatient, dtype=float)
            ras = lps @ ipp
            ijk = np.linalg.solve(aff[:3, :3], ras - aff[:3, 3])
            assert np.allclose(ijk, [vol.shape[0] - 1, vol.shape[1] - 1, k], atol=1e-4)
            assert abs(dx - aff[0, 0]) < 1e-6 and abs(dy - aff[1, 1]) < 1e-6
            vol[:, :, k] = pix.T[::-1, ::-1]
            assert d.InstanceNumber == vol.shape[2] - k  # numbered from the top
        ref = cohort.volumes[i].astype(float)
        tol = float(dss[0].RescaleSlope)
        assert np.abs(vol - ref).max() <= tol
        assert np.abs(vol - ref).max() / ref.max() < 1e-3
        slice_gap = np.diff([np.dot(normal, np.array(dss[j].ImagePositionPatient, dtype=float)) for j in order])
        np.testing.assert_allclose(slice_gap, float(dss[0].SliceThickness), rtol=1e-6)


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from volkd.cli import main

    monkeypatch.setattr(sys, "argv", ["volkd", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_cli_synth_writes_and_refuses_overwrite(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cohort"
    code, text = _run_cli(monkeypatch, capsys, "synth", "--n-subjects", "4", "--grid", "16", "--seed", "3", "--out", str(out))
    assert code == 0, text
    assert "control" in text and "PD" in text and "preview" in text
    c = Cohort.load(out)
    assert c.meta.extra["synth"]["n_subjects"] == 4 and c.meta.extra["synth"]["seed"] == 3
    assert (out / "preview.png").is_file() and not (out / "ppmi").exists()
    assert "volkd" in c.meta.provenance["command"] and "synth" in c.meta.provenance["command"]
    before = (out / "volumes.npy").read_bytes()
    code, text = _run_cli(monkeypatch, capsys, "synth", "--n-subjects", "4", "--grid", "16", "--seed", "4", "--out", str(out))
    assert code == 2 and str(out) in text.replace("\n", "") and "--force" in text
    assert (out / "volumes.npy").read_bytes() == before
    code, text = _run_cli(monkeypatch, capsys, "synth", "--n-subjects", "4", "--grid", "16", "--seed", "4", "--out", str(out), "--force")
    assert code == 0 and (out / "volumes.npy").read_bytes() != before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-subjects", "1"], "n_subjects"),
        (["--modality", "mri"], "modality"),
        (["--pd-fraction", "1.2"], "pd_fraction"),
        (["--format", "png"], "--format"),
    ],
)
def test_cli_synth_bad_options(tmp_path, monkeypatch, capsys, args, message):
    code, text = _run_cli(monkeypatch, capsys, "synth", "--grid", "16", "--out", str(tmp_path / "x"), *args)
    assert code == 2 and message in text
    assert not (tmp_path / "x").exists()


def test_cli_synth_report_prints_measured_vs_target(tmp_path, monkeypatch, capsys):
    code, text = _run_cli(monkeypatch, capsys, "synth", "--report", "--n-subjects", "12", "--grid", "16", "--visits", "1")
    assert code == 0, text
    flat = " ".join(text.split())
    assert "measured on the images" in flat and "putamen" in flat and "asymmetry" in flat
    assert "1.810 ± 0.300" in flat and "3.150 ± 0.540" in flat  # the METHOD.md targets
    assert "METHOD.md" in flat and not list(tmp_path.iterdir())  # nothing written without --out
    code, text = _run_cli(monkeypatch, capsys, "synth", "--grid", "16")
    assert code == 2 and "--out is required" in text
    code, text = _run_cli(monkeypatch, capsys, "synth", "--report", "--grid", "16", "--format", "nifti")
    assert code == 2 and "--format needs --out" in text
