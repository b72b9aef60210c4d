"""volkd predict: NIfTI / DICOM / cohort inputs match predict_proba; skipped scans, leakage warnings, atomic CSV, CLI."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from volkd.errors import OutputExistsError
from volkd.inference.grid import IncompatibleScanError, TrainingGrid, check_compatible, training_grid
from volkd.inference.predict import NoScansError, PredictionWarning, predict_scans, predict_to_csv, skipped_path
from volkd.train import load_checkpoint, predict_proba, save_checkpoint
from volkd.train.checkpoint import REQUIRED


# ------------------------------------------------------------------ shared helpers (also used by the explain/export tests)
def tiny_mni_cohort(grid: int = 16):
    """A small MNI-space cohort (synthetic DaTscan-like when ``volkd.data.synth`` is available)."""
    try:
        from volkd.data.synth import synthesize

        return synthesize(n_subjects=14, grid=(grid,) * 3, visits=2, seed=0)
    except ImportError:  # pragma: no cover - synth not landed yet
        from volkd.data.atlas import mni_grid_affine
        from tests.conftest import make_cohort

        c = make_cohort(grid=grid)
        c.meta.space, c.meta.affine = "MNI", mni_grid_affine((grid,) * 3).tolist()
        return c


def train_pair(cohort, out: Path, projection: str = "fuseme", kd: str = "graph", normalizer: str = "zscore",
               **student_kw) -> tuple[Path, Path]:
    """1-epoch light-CNN teacher and student on ``cohort``; returns their best.pt paths."""
    from volkd.data.splits import holdout_splits
    from volkd.models import ModelSpec
    from volkd.train import TrainConfig, train_student, train_teacher
    from volkd.train.api import student_model_spec

    torch.set_num_threads(1)
    split = holdout_splits(cohort, n_repeats=1)[0]
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, normalizer=normalizer)
    t = train_teacher(cohort, split, ModelSpec(arch="lightcnn", spatial_dims=3, in_channels=1, num_classes=2, width=4), cfg, out / "teacher")
    s = train_student(cohort, split, projection, student_model_spec("lightcnn", projection, 2, width=4, **student_kw), kd,
                      t.best_checkpoint if kd != "none" else None, cfg, out / "student")
    return Path(t.best_checkpoint), Path(s.best_checkpoint)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.asarray(affine, float)), path)
    return path


def flipped_x(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored left-right flipped (LAS): the array reversed along x, the affine compensating."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
    return data[::-1].copy(), np.asarray(affine, float) @ flip


def write_dicom_series(folder: Path, vol: np.ndarray, affine: np.ndarray, patient_id: str, slope: float = 0.01) -> Path:
    """Axial DICOM slices of a RAS volume with a diagonal affine (LPS row/column directions −x/−y)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    sx, sy, sz = np.diag(affine)[:3]
    ox, oy, oz = affine[:3, 3]
    series = generate_uid()
    for k in range(vol.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.20"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.20"
        ds.Modality, ds.PatientID, ds.SeriesInstanceUID, ds.StudyInstanceUID = "NM", patient_id, series, "1.2.3"
        ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
        ds.ImagePositionPatient = [float(-ox), float(-oy), float(oz + k * sz)]
        ds.PixelSpacing = [float(sy), float(sx)]
        ds.RescaleSlope, ds.RescaleIntercept = slope, 0.0
        ds.set_pixel_data(np.rint(vol[:, :, k].T / slope).astype(np.uint16), "MONOCHROME2", 16)
        ds.save_as(folder / f"s{k:03d}.dcm", enforce_file_format=True)
    return folder


def _record(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, PredictionWarning)]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    cohort = tiny_mni_cohort()
    cohort.save(root / "cohort")
    teacher, student = train_pair(cohort, root / "runs")
    return {"root": root, "cohort": cohort, "teacher": teacher, "student": student}


def _test_idx(setup) -> np.ndarray:
    ck = load_checkpoint(setup["student"])
    ids = list(setup["cohort"].scan_ids)
    return np.array([ids.index(s) for s in ck.split["test"]])


# --------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_nifti_predictions_match_predict_proba(setup, kind, tmp_path):
    c, ckpt = setup["cohort"], setup[kind]
    idx = _test_idx(setup)[:3]
    aff = np.asarray(c.meta.affine)
    for n, i in enumerate(idx):
        data, a = (flipped_x(c.volumes[i], aff) if n == 0 else (np.asarray(c.volumes[i]), aff))  # one stored LAS
        write_nifti(tmp_path / f"{c.scan_ids[i]}.nii.gz", data, a)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, skipped = predict_scans(ckpt, [tmp_path])
    assert skipped == []
    assert list(df.columns) == ["scan_id", "subject_id", "source", "proba_control", "proba_PD", "predicted", "training_overlap"]
    order = np.argsort(c.scan_ids[idx])
    want = predict_proba(load_checkpoint(ckpt), np.asarray(c.volumes[idx[order]]))
    assert list(df["scan_id"]) == list(c.scan_ids[idx[order]])
    np.testing.assert_allclose(df[["proba_control", "proba_PD"]].to_numpy(), want, atol=1e-6)
    assert list(df["predicted"]) == [["control", "PD"][k] for k in want.argmax(1)]
    assert (df["training_overlap"] == "").all()  # test-partition scans
    assert _record(caught) == []  # the grid is recorded; no training scan among the inputs


def test_dicom_series_and_leakage_warning(setup, tmp_path):
    c = setup["cohort"]
    ck = load_checkpoint(setup["student"])
    i = list(c.scan_ids).index(ck.split["test"][0])
    folder = write_dicom_series(tmp_path / "series", np.asarray(c.volumes[i]), np.asarray(c.meta.affine), ck.train_subjects[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, skipped = predict_scans(ck, [folder])
    assert skipped == [] and len(df) == 1
    assert df.loc[0, "subject_id"] == ck.train_subjects[0]
    assert df.loc[0, "training_overlap"] == f"subject {ck.train_subjects[0]} is among the training subjects"
    np.testing.assert_allclose(df[["proba_control", "proba_PD"]].to_numpy(), predict_proba(ck, np.asarray(c.volumes[[i]])), atol=2e-3)
    assert any("may be part of the model's training data" in m and ck.train_subjects[0] in m for m in _record(caught))


def test_cohort_input_and_overlap_column(setup):
    c = setup["cohort"]
    ck = load_checkpoint(setup["teacher"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, skipped = predict_scans(ck, [setup["root"] / "cohort"])
    assert skipped == [] and len(df) == len(c)
    np.testing.assert_allclose(df[["proba_control", "proba_PD"]].to_numpy(), predict_proba(ck, np.asarray(c.volumes)), atol=1e-6)
    seen = np.isin(c.subjects, ck.train_subjects) | np.isin(c.scan_ids, ck.split["val"])  # val steered early stopping
    assert list(df["training_overlap"] != "") == list(seen) and seen.any() and not seen.all()
    assert set(df.loc[np.isin(c.scan_ids, ck.split["test"]), "training_overlap"]) == {""}
    val = np.flatnonzero(np.isin(c.scan_ids, ck.split["val"]))[0]
    assert df.loc[val, "training_overlap"] == f"scan {c.scan_ids[val]} was in the val partition"
    assert df["source"].iloc[0] == f"{setup['root'] / 'cohort'}[{c.scan_ids[0]}]"
    assert any(f"{seen.sum()} scan(s) may be part" in m for m in _record(caught))


def _bad_inputs(setup, folder: Path) -> dict[str, str]:
    """Write one good and several incompatible scans; returns file name → expected reason fragment."""
    c = setup["cohort"]
    aff = np.asarray(c.meta.affine)
    i = _test_idx(setup)[0]
    vol = np.asarray(c.volumes[i])
    folder.mkdir()
    write_nifti(folder / "good.nii.gz", vol, aff)
    write_nifti(folder / "slice2d.nii", vol[:, :, 8], aff)
    write_nifti(folder / "series4d.nii.gz", np.stack([vol] * 3, axis=-1), aff)
    write_nifti(folder / "thin.nii.gz", vol[:, :, 6:8], aff)
    coarse = aff.copy()
    coarse[:3, :3] *= 5.0
    write_nifti(folder / "coarse.nii.gz", vol, coarse)
    moved = aff.copy()
    moved[:3, 3] += 400.0
    write_nifti(folder / "elsewhere.nii.gz", vol, moved)
    (folder / "corrupt.nii.gz").write_bytes(b"not a nifti file at all")
    np.save(folder / "arrays.npy", vol)
    return {"slice2d.nii": "3-D", "series4d.nii.gz": "3-D", "thin.nii.gz": "not a 3-D volume",
            "coarse.nii.gz": "voxel size", "elsewhere.nii.gz": "covers 0% of the training field of view",
            "corrupt.nii.gz": "unreadable NIfTI", "arrays.npy[0]": "carry no affine"}  # MNI model: arrays refused


def test_incompatible_scans_are_skipped_with_reasons(setup, tmp_path):
    expected = _bad_inputs(setup, tmp_path / "in")
    out = tmp_path / "pred.csv"
    df, skipped = predict_to_csv(setup["student"], [tmp_path / "in"], out)
    table = pd.read_csv(out)
    assert list(table["scan_id"]) == ["good"] and list(df["scan_id"]) == ["good"]
    listed = pd.read_csv(skipped_path(out))
    assert skipped_path(out).name == "pred.skipped.csv"
    reasons = {Path(s).name: r for s, r in zip(listed["source"], listed["reason"])}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])


def test_all_bad_raises_and_writes_nothing(setup, tmp_path):
    expected = _bad_inputs(setup, tmp_path / "in")
    (tmp_path / "in" / "good.nii.gz").unlink()
    out = tmp_path / "pred.csv"
    with pytest.raises(NoScansError, match=f"no scan could be predicted on \\({len(expected)} skipped\\)"):
        predict_to_csv(setup["student"], [tmp_path / "in"], out)
    assert not out.exists() and not skipped_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no temp files left behind


def test_scan_rejected_by_the_normaliser_is_skipped(setup, tmp_path):
    """Reference (SBR-style) normalisation refuses an empty occipital region: that scan alone is skipped."""
    c = setup["cohort"]
    teacher, _ = train_pair(c, tmp_path / "runs", projection="mip", kd="none", normalizer="reference")
    aff = np.asarray(c.meta.affine)
    idx = _test_idx(setup)[:2]
    for i in idx:
        write_nifti(tmp_path / f"{c.scan_ids[i]}.nii.gz", c.volumes[i], aff)
    empty = np.zeros((16, 16, 16), np.float32)
    empty[:, -3:] = 1.0  # an image, but nothing in the (posterior) occipital reference region
    write_nifti(tmp_path / "empty.nii.gz", empty, aff)
    df, skipped = predict_scans(teacher, [tmp_path / f"{c.scan_ids[i]}.nii.gz" for i in idx] + [tmp_path / "empty.nii.gz"], batch_size=8)
    assert list(df["scan_id"]) == list(c.scan_ids[idx])
    np.testing.assert_allclose(df[["proba_control", "proba_PD"]].to_numpy(), predict_proba(teacher, np.asarray(c.volumes[idx])), atol=1e-6)
    assert [s.source for s in skipped] == [str(tmp_path / "empty.nii.gz")]
    assert "reference-region mean 0 ≤ 0" in skipped[0].reason


def test_no_overwrite_without_force(setup, tmp_path):
    c = setup["cohort"]
    i = _test_idx(setup)[0]
    scan = write_nifti(tmp_path / "a.nii.gz", c.volumes[i], np.asarray(c.meta.affine))
    out = tmp_path / "pred.csv"
    out.write_text("keep me")
    with pytest.raises(OutputExistsError, match="pass --force"):
        predict_to_csv(setup["teacher"], [scan], out)
    assert out.read_text() == "keep me"
    predict_to_csv(setup["teacher"], [scan], out, force=True)
    assert list(pd.read_csv(out)["scan_id"]) == ["a"]


def _resave(src: Path, dst: Path, cohort_meta) -> Path:
    """``src`` saved again with ``cohort_meta`` replaced (None: removed, as in older checkpoints)."""
    ck = load_checkpoint(src)
    payload = {k: getattr(ck, k) for k in REQUIRED}
    if cohort_meta is not None:
        payload["cohort_meta"] = cohort_meta
    return save_checkpoint(dst, payload)


def test_grid_from_checkpoint_and_fallback(setup, tmp_path):
    """The recorded cohort metadata drives placement; an older checkpoint without it falls back with a warning."""
    c = setup["cohort"]
    grid = training_grid(load_checkpoint(setup["teacher"]))
    assert grid.recorded and grid.placement == "mni" and grid.space == "MNI" and grid.shape == (16, 16, 16)
    assert grid.modality == "spect"
    np.testing.assert_allclose(grid.affine, np.asarray(c.meta.affine))
    old = _resave(setup["teacher"], tmp_path / "old.pt", None)
    assert "cohort_meta" not in load_checkpoint(old).extra
    fallback = training_grid(load_checkpoint(old))
    assert not fallback.recorded and fallback.shape == (16, 16, 16) and fallback.placement == "mni"
    np.testing.assert_allclose(fallback.affine, np.asarray(c.meta.affine))  # synth cohorts use the default MNI grid
    i = _test_idx(setup)[0]
    scan = write_nifti(tmp_path / "a.nii.gz", c.volumes[i], np.asarray(c.meta.affine))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, _ = predict_scans(old, [scan])
    assert any("does not record its cohort's grid and space; assuming scans were placed in MNI space" in m for m in _record(caught))
    np.testing.assert_allclose(df[["proba_control", "proba_PD"]].to_numpy(),
                               predict_proba(load_checkpoint(setup["teacher"]), np.asarray(c.volumes[[i]])), atol=1e-6)
    # a native-space cohort imported with --space fov --crop: field-of-view placement
    meta = {**c.meta.model_dump(mode="json"), "space": "native", "affine": None,
            "provenance": {"options": {"space": "fov", "crop": True, "interpolation_order": 1}}}
    fov = training_grid(load_checkpoint(_resave(setup["teacher"], tmp_path / "fov.pt", meta)))
    assert (fov.placement, fov.space, fov.crop, fov.recorded) == ("fov", "native", True, True)
    # modality recorded: a DICOM series of another modality is refused
    folder = write_dicom_series(tmp_path / "mr", np.asarray(c.volumes[i]), np.asarray(c.meta.affine), "X")
    import pydicom

    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    with pytest.raises(NoScansError, match="modality 'mri' but the model was trained on 'spect' scans"):
        predict_scans(setup["teacher"], [folder])


def test_compatibility_thresholds():
    grid = TrainingGrid((16, 16, 16), np.diag([2.0, 2.0, 2.0, 1.0]), "native", "fov")
    vol = np.ones((16, 16, 16), np.float32)
    check_compatible(vol, np.diag([20.0, 2.0, 2.0, 1.0]), grid, "a", native_grid=True)  # already on the grid: no checks
    with pytest.raises(IncompatibleScanError, match=r"a: field of view \[96.0, 32.0, 32.0\] mm differs"):
        check_compatible(vol, np.diag([6.0, 2.0, 2.0, 1.0]), grid, "a")  # 3× the FOV along x (voxels 3×: allowed)
    check_compatible(np.ones((24, 16, 16), np.float32), np.diag([2.5, 2.0, 2.0, 1.0]), grid, "b")  # 1.9× FOV: fine
    with pytest.raises(IncompatibleScanError, match=r"voxel size \[0.1, 2.0, 2.0\] mm .* 0.0625× to 4×"):
        check_compatible(vol, np.diag([0.1, 2.0, 2.0, 1.0]), grid, "c")
    with pytest.raises(IncompatibleScanError, match="every voxel is NaN"):
        check_compatible(np.full((16, 16, 16), np.nan, np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), grid, "d")


def test_cli_predict(setup, tmp_path):
    from typer.testing import CliRunner

    import volkd.cli.use_cmds  # noqa: F401 - registers the commands
    from volkd.cli.app import app

    c = setup["cohort"]
    i = _test_idx(setup)[0]
    write_nifti(tmp_path / "scan1.nii.gz", c.volumes[i], np.asarray(c.meta.affine))
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(app, ["predict", str(setup["student"]), str(tmp_path / "scan1.nii.gz"), str(tmp_path / "missing.nii"),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "missing.nii: file or folder not found" in r.output
    assert "predicted 1 scan(s)" in r.output
    assert list(pd.read_csv(out)["scan_id"]) == ["scan1"]
    r = CliRunner().invoke(app, ["predict", str(setup["student"]), str(tmp_path / "missing.nii"), "--out", str(tmp_path / "q.csv")])
    assert isinstance(r.exception, NoScansError) and not (tmp_path / "q.csv").exists()
