"""import_scans and `volkd import`: NIfTI/DICOM folders with a labels CSV, MedMNIST, reports, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.test_readers import ras_volume, variant, write_dicom_series, write_nifti
from volkd.cli import app
from volkd.data.atlas import mni_grid_affine
from volkd.data.cohort import Cohort
from volkd.data.importer import import_scans, order_classes
from volkd.errors import ConfigError, OutputExistsError, ScanImportError

MNI_2MM = np.array([[2.0, 0, 0, -90.0], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def mni_volume(seed: int = 0, shape=(46, 55, 46)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth MNI-space-like volume at 4 mm with a bright left hemisphere (integer-valued)."""
    rng = np.random.default_rng(seed)
    vol = np.rint(rng.random(shape) * 50).astype(np.float32)
    vol[: shape[0] // 2] += 100.0
    aff = MNI_2MM.copy()
    aff[:3, :3] *= 2
    return vol, aff


def make_nifti_study(root: Path) -> Path:
    """Five NIfTI scans in mixed orientations + a PPMI-style labels CSV with custom column names."""
    src = root / "scans"
    src.mkdir()
    vol, aff = mni_volume()
    write_nifti(src / "A1.nii.gz", vol, aff)
    write_nifti(src / "A1flip.nii.gz", *variant("LAS", vol, aff))  # same image, left-right flipped storage
    write_nifti(src / "B1.nii", *variant("LPS", *mni_volume(1)))
    write_nifti(src / "C1.nii.gz", *variant("permuted", *mni_volume(2)))
    write_nifti(src / "D1.nii.gz", *mni_volume(3))  # orphan: no CSV row
    write_nifti(src / "E1.nii.gz", *mni_volume(4))
    pd.DataFrame({
        "Image ID": ["A1", "A1flip", "B1", "C1", "E1", "Z9", "S1"],
        "Subject ID": ["3001", "3001b", "3002", "3001", "3003", "3009", "3010"],
        "Visit": ["BL", "BL", "BL", "V04", "BL", "BL", "BL"],
        "Dx": ["PD", "PD", "HC", "PD", "HC", "PD", "SWEDD"],
        "Age": ["61.5", "61.5", "70", "62.4", "55", "60", "58"],
        "Sex": ["M", "M", "F", "M", "F", "M", "F"],
    }).to_csv(root / "labels.csv", index=False)
    return src


CSV_KW = dict(id_column="Image ID", subject_column="Subject ID", visit_column="Visit", label_column="Dx",
              label_map="PD=PD,HC=control")


def test_nifti_folder_with_custom_columns_mapping_and_reports(tmp_path):
    src = make_nifti_study(tmp_path)
    cohort, summary = import_scans(src, tmp_path / "out", labels_csv=tmp_path / "labels.csv", target_grid=16, **CSV_KW)
    assert cohort.class_names == ["control", "PD"]
    assert list(cohort.scan_ids) == ["A1", "A1flip", "B1", "C1", "E1"]
    assert cohort.scans["label"].tolist() == ["PD", "PD", "control", "PD", "control"]
    assert cohort.y.tolist() == [1, 1, 0, 1, 0]
    # visits are ordered integers per subject from the codes; the code is kept
    assert cohort.scans.set_index("scan_id").loc[["A1", "C1"], "visit"].tolist() == [0, 1]
    assert cohort.scans["visit_code"].tolist() == ["BL", "BL", "BL", "V04", "BL"]
    assert cohort.scans["age"].tolist() == pytest.approx([61.5, 61.5, 70, 62.4, 55])
    assert cohort.scans["source_path"].iloc[0] == str(src / "A1.nii.gz")
    # left-right flipped storage of the same image imports identically
    np.testing.assert_allclose(cohort.volumes[1], cohort.volumes[0], atol=1e-5)
    assert cohort.volumes[0][:8].mean() > cohort.volumes[0][8:].mean() + 50  # left is still left
    # reported, never guessed
    assert [m["scan_id"] for m in summary.missing_files] == ["Z9"]
    assert summary.orphan_files == [str(src / "D1.nii.gz")]
    assert summary.excluded == {"SWEDD": 1}
    report = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert report["missing_files"] == [{"scan_id": "Z9", "subject_id": "3009"}]
    assert report["orphan_files"] == [str(src / "D1.nii.gz")] and report["n_imported"] == 5
    meta = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert meta["space"] == "MNI" and meta["orientation"] == "RAS" and meta["grid_shape"] == [16, 16, 16]
    np.testing.assert_allclose(meta["affine"], mni_grid_affine((16, 16, 16)))
    assert meta["voxel_size_mm"] == pytest.approx([182 / 16, 218 / 16, 182 / 16])
    assert meta["provenance"]["source"] == str(src.resolve()) and "nibabel" in meta["provenance"]["versions"]
    assert meta["provenance"]["options"]["space"] == "mni"
    assert Cohort.load(tmp_path / "out", verify=True).fingerprint() == meta["fingerprint"]


def test_mni_placement_matches_the_native_grid_when_it_is_the_mni_grid(tmp_path):
    vol, aff = mni_volume()
    src = tmp_path / "s"
    src.mkdir()
    grid_aff = mni_grid_affine((16, 16, 16))
    write_nifti(src / "x.nii.gz", vol[:16, :16, :16], grid_aff)  # a scan already on the cohort grid
    write_nifti(src / "y.nii.gz", vol[:16, :16, :16] + 1, grid_aff)
    pd.DataFrame({"scan_id": ["x", "y"], "subject_id": ["1", "2"], "label": ["a", "b"]}).to_csv(tmp_path / "l.csv", index=False)
    cohort, summary = import_scans(src, tmp_path / "o", labels_csv=tmp_path / "l.csv", target_grid=16)
    np.testing.assert_allclose(cohort.volumes[0], vol[:16, :16, :16], atol=1e-4)
    assert cohort.scans["visit"].tolist() == [0, 0]
    assert any("no visit column" in n for n in summary.notes)
    with pytest.raises(ScanImportError, match=r"l\.csv: no column 'Visit' \(set it with --visit-col\)"):
        import_scans(src, tmp_path / "o2", labels_csv=tmp_path / "l.csv", target_grid=16, visit_column="Visit")


def test_native_space_scan_is_refused_in_mni_space(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    vol, aff = ras_volume()
    aff[:3, 3] = [200.0, 200.0, 200.0]  # a scanner-space affine far from MNI
    write_nifti(src / "far.nii", vol, aff)
    write_nifti(src / "ok.nii", *mni_volume())
    pd.DataFrame({"scan_id": ["far", "ok"], "subject_id": ["1", "2"], "label": ["a", "b"]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ScanImportError, match=r"far\.nii: the scan covers 0% of the MNI field of view.*--space fov"):
        import_scans(src, tmp_path / "o", labels_csv=tmp_path / "l.csv", target_grid=8)
    cohort, _ = import_scans(src, tmp_path / "o", labels_csv=tmp_path / "l.csv", target_grid=8, space="fov")
    assert len(cohort) == 2 and cohort.meta.affine is None  # different fields of view: per-scan voxel sizes
    assert cohort.scans["voxel_x_mm"].tolist() == pytest.approx([12 * 2 / 8, 46 * 4 / 8])


def test_npy_volumes_labelled_by_csv(tmp_path):
    vols = np.random.default_rng(0).random((3, 6, 6, 6)).astype(np.float32)
    np.save(tmp_path / "v.npy", vols)
    pd.DataFrame({"id": ["v_00000", "v_00002", "v_00009"], "subj": ["a", "b", "c"], "dx": ["x", "y", "x"]}).to_csv(tmp_path / "l.csv", index=False)
    cohort, summary = import_scans(tmp_path / "v.npy", tmp_path / "o", labels_csv=tmp_path / "l.csv", id_column="id",
                                   subject_column="subj", label_column="dx", target_grid=None)
    assert list(cohort.scan_ids) == ["v_00000", "v_00002"] and cohort.meta.orientation == "unknown"
    np.testing.assert_array_equal(cohort.volumes[1], vols[2])
    assert [m["scan_id"] for m in summary.missing_files] == ["v_00009"]
    assert summary.orphan_files == [f"{tmp_path / 'v.npy'}[1]"]
    assert cohort.scans["source_path"].tolist() == [f"{tmp_path / 'v.npy'}[0]", f"{tmp_path / 'v.npy'}[2]"]


def test_fov_space_with_crop_records_the_affine(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    vol = np.zeros((30, 30, 30), np.float32)
    vol[5:15, 10:25, 8:20] = 10
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    write_nifti(src / "a.nii", vol, aff)
    write_nifti(src / "b.nii", vol, aff)
    pd.DataFrame({"scan_id": ["a", "b"], "subject_id": ["1", "2"], "label": ["0", "1"]}).to_csv(tmp_path / "l.csv", index=False)
    cohort, _ = import_scans(src, tmp_path / "o", labels_csv=tmp_path / "l.csv", target_grid=(14, 19, 16), space="fov", crop=True)
    assert cohort.meta.space == "native" and cohort.class_names == ["0", "1"]
    np.testing.assert_allclose(np.array(cohort.meta.affine)[:3, 3], [6.0, 16.0, 12.0])  # crop box starts at voxel (3, 8, 6)
    assert cohort.meta.voxel_size_mm == pytest.approx((2.0, 2.0, 2.0))
    assert float(np.asarray(cohort.volumes[0]).min()) == 0.0 and cohort.volumes[0][5, 5, 5] == pytest.approx(10)
    with pytest.raises(ConfigError, match="--crop applies to --space fov"):
        import_scans(src, tmp_path / "o2", labels_csv=tmp_path / "l.csv", target_grid=8, crop=True)


def test_dicom_series_folders_import(tmp_path):
    vol, aff = ras_volume(shape=(10, 12, 8))
    write_dicom_series(tmp_path / "dcm" / "scanA", vol, aff)
    write_dicom_series(tmp_path / "dcm" / "scanB", vol[::-1].copy(), aff, suffix="")
    write_nifti(tmp_path / "ref.nii", vol, aff)
    pd.DataFrame({"scan_id": ["scanA", "scanB"], "subject_id": ["1", "2"], "label": ["control", "PD"]}).to_csv(tmp_path / "l.csv", index=False)
    cohort, _ = import_scans(tmp_path / "dcm", tmp_path / "o", labels_csv=tmp_path / "l.csv", target_grid=(10, 12, 8), space="fov")
    np.testing.assert_array_equal(cohort.volumes[0], vol)  # same grid: the exact values, in RAS
    np.testing.assert_array_equal(cohort.volumes[1], vol[::-1])
    assert cohort.meta.modality == "spect"  # DICOM Modality NM
    np.testing.assert_allclose(cohort.meta.affine, aff, atol=1e-6)


def test_bad_file_stops_the_import_and_names_the_file(tmp_path):
    src = make_nifti_study(tmp_path)
    (src / "B1.nii").write_bytes(b"\x00" * 100)
    with pytest.raises(ScanImportError, match=r"B1\.nii: unreadable NIfTI"):
        import_scans(src, tmp_path / "out", labels_csv=tmp_path / "labels.csv", target_grid=8, **CSV_KW)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp leftovers


def test_skip_bad_imports_the_rest_and_lists_skipped_files(tmp_path):
    src = make_nifti_study(tmp_path)
    (src / "B1.nii").write_bytes(b"\x00" * 100)
    cohort, summary = import_scans(src, tmp_path / "out", labels_csv=tmp_path / "labels.csv", target_grid=8, skip_bad=True, **CSV_KW)
    assert "B1" not in set(cohort.scan_ids) and len(cohort) == 4
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert skipped["path"].tolist() == [str(src / "B1.nii")]
    assert skipped["reason"].iloc[0].startswith("unreadable NIfTI")
    assert summary.skipped[0]["path"] == str(src / "B1.nii")


def test_no_overwrite_without_force(tmp_path):
    src = make_nifti_study(tmp_path)
    kw = dict(labels_csv=tmp_path / "labels.csv", target_grid=8, **CSV_KW)
    import_scans(src, tmp_path / "out", **kw)
    with pytest.raises(OutputExistsError, match="--force"):
        import_scans(src, tmp_path / "out", **kw)
    cohort, _ = import_scans(src, tmp_path / "out", force=True, **{**kw, "target_grid": 10})
    assert cohort.meta.grid_shape == (10, 10, 10)


def test_labels_csv_errors_name_the_column_or_label(tmp_path):
    src = make_nifti_study(tmp_path)
    with pytest.raises(ScanImportError, match=r"labels\.csv: no column 'subject_id' \(set it with --subject-col\)"):
        import_scans(src, tmp_path / "o", labels_csv=tmp_path / "labels.csv", id_column="Image ID", label_column="Dx")
    with pytest.raises(ScanImportError, match=r"label\(s\) \['HC'\] are not among class names \['control', 'PD'\]"):
        import_scans(src, tmp_path / "o", labels_csv=tmp_path / "labels.csv", class_names=["control", "PD"],
                     **{**CSV_KW, "label_map": None})
    with pytest.raises(ScanImportError, match="need labels: pass --labels"):
        import_scans(src, tmp_path / "o")
    assert order_classes(["PD", "control", "SWEDD"]) == ["control", "PD", "SWEDD"]
    df = pd.read_csv(tmp_path / "labels.csv", dtype=str)
    df.loc[2, "Dx"] = ""
    df.to_csv(tmp_path / "blank.csv", index=False)
    with pytest.raises(ScanImportError, match=r"blank\.csv: empty 'Dx' in row 4"):
        import_scans(src, tmp_path / "o", labels_csv=tmp_path / "blank.csv", **CSV_KW)
    df.loc[2, "Dx"] = "PD"
    df.loc[3, "Image ID"] = "A1"
    df.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ScanImportError, match=r"dup\.csv: duplicate 'Image ID' value\(s\) \['A1'\]"):
        import_scans(src, tmp_path / "o", labels_csv=tmp_path / "dup.csv", **CSV_KW)


def test_cli_error_is_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    from volkd.cli import main

    src = make_nifti_study(tmp_path)
    (src / "B1.nii").write_bytes(b"\x00" * 100)
    monkeypatch.setattr("sys.argv", ["volkd", "import", str(src), "--out", str(tmp_path / "c"), "--labels",
                                     str(tmp_path / "labels.csv"), "--id-col", "Image ID", "--subject-col", "Subject ID",
                                     "--visit-col", "Visit", "--label-col", "Dx", "--grid", "8"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "B1.nii: unreadable NIfTI" in err and "Traceback" not in err


def test_medmnist_import_keeps_split_and_labels(tmp_path, medmnist28):
    cohort, summary = import_scans(medmnist28, tmp_path / "mm", target_grid=None)
    assert len(cohort) == 1584 and cohort.meta.grid_shape == (28, 28, 28)
    assert cohort.class_names == ["0", "1"] and cohort.meta.orientation == "unknown"
    s = cohort.scans
    assert s["split"].value_counts().to_dict() == {"train": 1188, "test": 298, "val": 98}
    train = s[s["split"] == "train"]
    assert train["label"].value_counts().to_dict() == {"0": 929, "1": 259}
    assert s[s["split"] == "val"]["label"].value_counts().to_dict() == {"0": 76, "1": 22}
    assert s[s["split"] == "test"]["label"].value_counts().to_dict() == {"0": 229, "1": 69}
    raw = np.load(medmnist28)
    np.testing.assert_array_equal(cohort.volumes[0], raw["train_images"][0].astype(np.float32))
    np.testing.assert_array_equal(cohort.volumes[1188], raw["val_images"][0].astype(np.float32))
    assert summary.scans_per_split == {"train": 1188, "val": 98, "test": 298}
    assert Cohort.load(tmp_path / "mm").scans["split"].tolist()[:2] == ["train", "train"]


def test_medmnist_class_names_resampling_and_space_check(tmp_path, medmnist28):
    cohort, _ = import_scans(medmnist28, tmp_path / "mm", target_grid=12, class_names=["normal", "hyperplasia"])
    assert cohort.class_names == ["normal", "hyperplasia"] and cohort.meta.grid_shape == (12, 12, 12)
    assert (cohort.scans["label"] == "hyperplasia").sum() == 350
    assert cohort.meta.voxel_size_mm == pytest.approx((28 / 12,) * 3)
    with pytest.raises(ConfigError, match="--space mni needs scans with an affine"):
        import_scans(medmnist28, tmp_path / "mm2", space="mni")


def test_cli_import_prints_the_summary_and_refuses_to_overwrite(tmp_path):
    src = make_nifti_study(tmp_path)
    args = ["import", str(src), "--out", str(tmp_path / "c"), "--labels", str(tmp_path / "labels.csv"),
            "--id-col", "Image ID", "--subject-col", "Subject ID", "--visit-col", "Visit", "--label-col", "Dx",
            "--map", "PD=PD,HC=control", "--grid", "8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "imported 5 of 6 scans" in res.output and "1 CSV row(s) without a file" in res.output
    assert "excluded (group/label not mapped): SWEDD 1" in res.output
    assert Cohort.load(tmp_path / "c").meta.grid_shape == (8, 8, 8)
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, OutputExistsError)
    res = CliRunner().invoke(app, args + ["--force", "--grid", "8,8,6"])
    assert res.exit_code == 0 and Cohort.load(tmp_path / "c").meta.grid_shape == (8, 8, 6)
