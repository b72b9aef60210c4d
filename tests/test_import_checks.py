"""Input shapes and values at import: a stack of 2-D images is not taken for a volume (unless
``--stack-2d``), blank scans (all NaN/Inf, constant, empty brain mask) are refused or skipped,
IDs no table can hold are refused — at import and when a cohort is loaded."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from volkd.cli import app
from volkd.data.cohort import Cohort
from volkd.data.importer import import_scans
from volkd.data.scan_checks import placed_problem, value_problem
from volkd.errors import CohortError, ScanImportError
from tests.conftest import make_cohort


def volumes(n=6, grid=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, grid, grid, grid)).astype(np.float32)


def test_npz_of_2d_images_is_refused_not_turned_into_one_scan(tmp_path):
    imgs = np.random.default_rng(0).normal(size=(20, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "s.npz", images=imgs, labels=np.arange(20) % 2)
    with pytest.raises(ScanImportError, match=r"images has shape \(20, 28, 28\): 20 2-D images, or one 3-D volume\?.*--stack-2d"):
        import_scans(tmp_path / "s.npz", tmp_path / "c", target_grid=8)
    with pytest.raises(ScanImportError, match=r"labels has shape \(20,\); expected one label per volume \(1,\)"):
        import_scans(tmp_path / "s.npz", tmp_path / "c", target_grid=8, stack_2d=True)  # one volume can't have 20 labels
    assert not (tmp_path / "c").exists()


def test_stack_2d_reads_a_3d_array_as_one_volume(tmp_path):
    vol = np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32)
    np.save(tmp_path / "one.npy", vol)
    pd.DataFrame({"scan_id": ["one"], "subject_id": ["p1"], "label": ["PD"]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ScanImportError, match="--stack-2d"):
        import_scans(tmp_path / "one.npy", tmp_path / "c", labels_csv=tmp_path / "l.csv", target_grid=None,
                     class_names=["control", "PD"])
    c, _ = import_scans(tmp_path / "one.npy", tmp_path / "c", labels_csv=tmp_path / "l.csv", target_grid=None,
                        class_names=["control", "PD"], stack_2d=True)
    assert c.volumes.shape == (1, 10, 12, 14) and list(c.scan_ids) == ["one"]
    np.testing.assert_array_equal(c.volumes[0], vol)


def test_labels_must_match_the_volumes_one_to_one(tmp_path):
    np.savez(tmp_path / "v.npz", images=volumes(6), labels=np.arange(5) % 2)
    with pytest.raises(ScanImportError, match=r"labels has shape \(5,\); expected one label per volume \(6,\)"):
        import_scans(tmp_path / "v.npz", tmp_path / "c", target_grid=8)


def test_medmnist_2d_layout_is_named_as_2d(tmp_path):
    np.savez(tmp_path / "pneumonia.npz", train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 1)))
    with pytest.raises(ScanImportError, match="expected N×D×H×W .2-D images"):
        import_scans(tmp_path / "pneumonia.npz", tmp_path / "c", target_grid=8)


@pytest.mark.parametrize("make, why", [
    (lambda v: np.full_like(v, np.nan), "every voxel is NaN or Inf"),
    (lambda v: np.where(np.arange(v.size).reshape(v.shape) % 2 == 0, np.inf, -np.inf).astype(np.float32), "every voxel is NaN or Inf"),
    (lambda v: np.zeros_like(v), "the image is constant"),
    (lambda v: np.full_like(v, 3.5), "the image is constant"),
    (lambda v: np.where(v > 0, np.nan, 2.0).astype(np.float32), "the image is constant"),  # constant where finite
])
def test_blank_scans_are_refused_or_skipped(tmp_path, make, why):
    vols = volumes(6)
    vols[2] = make(vols[2])
    np.savez(tmp_path / "v.npz", images=vols, labels=np.arange(6) % 2)
    with pytest.raises(ScanImportError, match=rf"v\.npz\[2\]: {why}"):
        import_scans(tmp_path / "v.npz", tmp_path / "c", target_grid=8)
    c, summary = import_scans(tmp_path / "v.npz", tmp_path / "c", target_grid=8, skip_bad=True)
    assert len(c) == 5 and "v_00002" not in set(c.scan_ids)
    skipped = pd.read_csv(tmp_path / "c" / "skipped.csv")
    assert skipped["path"].tolist() == [f"{tmp_path / 'v.npz'}[2]"] and why in skipped.loc[0, "reason"]
    assert not (np.asarray(c.volumes).reshape(5, -1).std(axis=1) == 0).any()  # no flat training volume


def test_partly_nonfinite_scan_is_kept_with_a_count(tmp_path):
    vols = volumes(6)
    vols[1, 0, 0, :3] = np.nan
    np.savez(tmp_path / "v.npz", images=vols, labels=np.arange(6) % 2)
    c, summary = import_scans(tmp_path / "v.npz", tmp_path / "c", target_grid=8)
    assert len(c) == 6 and summary.nonfinite_zeroed == {"v_00001": 3}


def test_empty_brain_mask_with_crop(tmp_path):
    vol = -np.abs(volumes(1)[0]) - 1.0  # all negative: the crop's brain mask is empty
    assert "brain mask is empty" in value_problem(vol, crop=True) and value_problem(vol) is None
    vols = volumes(6)
    vols[4] = vol
    np.savez(tmp_path / "v.npz", images=vols, labels=np.arange(6) % 2)
    with pytest.raises(ScanImportError, match=r"v\.npz\[4\]: nothing to crop to"):
        import_scans(tmp_path / "v.npz", tmp_path / "c", target_grid=8, crop=True)
    assert len(import_scans(tmp_path / "v.npz", tmp_path / "c", target_grid=8, crop=True, skip_bad=True).cohort) == 5


def test_scan_that_lands_outside_the_grid_is_empty_after_placement(tmp_path):
    assert "nothing of the scan lies on the target grid" in placed_problem(np.zeros((4, 4, 4), np.float32))
    assert "non-finite" in placed_problem(np.full((4, 4, 4), np.nan, np.float32))
    assert placed_problem(volumes(1)[0]) is None


def test_blank_nifti_scans_via_the_cli(tmp_path):
    src = tmp_path / "scans"
    src.mkdir()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    rows = []
    for i in range(6):
        data = volumes(1, seed=i)[0] + 5 if i != 3 else np.full((8, 8, 8), np.nan, np.float32)
        nib.save(nib.Nifti1Image(data, aff), src / f"s{i}.nii.gz")
        rows.append({"scan_id": f"s{i}", "subject_id": f"p{i}", "label": "PD" if i % 2 else "control"})
    pd.DataFrame(rows).to_csv(tmp_path / "l.csv", index=False)
    args = ["import", str(src), "--labels", str(tmp_path / "l.csv"), "--space", "fov", "--grid", "8", "--out", str(tmp_path / "c")]
    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, ScanImportError) and "s3.nii.gz: every voxel is NaN or Inf" in str(r.exception)
    r = CliRunner().invoke(app, args + ["--skip-bad"])
    assert r.exit_code == 0 and len(Cohort.load(tmp_path / "c")) == 5


@pytest.mark.parametrize("bad", ["a\nb", "tab\there", "\x00nul", "bell\x07", "\u202eevil", "   "])
def test_ids_no_table_can_hold_are_refused_at_import(tmp_path, bad):
    ids = [f"s{i}" for i in range(6)]
    ids[3] = bad
    np.savez(tmp_path / "v.npz", images=volumes(6), labels=np.arange(6) % 2, scan_ids=np.array(ids))
    with pytest.raises(ScanImportError, match=r"scan ID .* \(.*v\.npz\[3\]\) cannot be used"):
        import_scans(tmp_path / "v.npz", tmp_path / "c", target_grid=8)
    assert not (tmp_path / "c").exists()


def test_labels_csv_with_a_control_character_in_a_subject_id(tmp_path):
    np.savez(tmp_path / "v.npz", images=volumes(4))
    pd.DataFrame({"scan_id": [f"v_{i:05d}" for i in range(4)], "subject_id": ["p0", "p1\x1b[31m", "p2", "p3"],
                  "label": ["PD", "control"] * 2}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ScanImportError, match=r"subject ID 'p1\\x1b\[31m' .* control character"):
        import_scans(tmp_path / "v.npz", tmp_path / "c", labels_csv=tmp_path / "l.csv", target_grid=8)


def test_a_hand_edited_cohort_with_a_bad_id_is_refused_on_load(tmp_path):
    make_cohort(n_subjects=4, visits=1, grid=8).save(tmp_path / "c")
    df = pd.read_csv(tmp_path / "c" / "scans.csv", dtype=str)
    df.loc[2, "subject_id"] = "S\u2028x"
    df.to_csv(tmp_path / "c" / "scans.csv", index=False)
    with pytest.raises(CohortError, match=r"subject_id 'S\\u2028x' in row 4 cannot be used: .*control"):
        Cohort.load(tmp_path / "c")
