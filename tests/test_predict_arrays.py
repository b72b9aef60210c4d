"""predict / explain on NPZ (MedMNIST layout, ``images``) and NPY inputs, as `volkd import` reads them."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.test_predict import train_pair, write_nifti
from volkd.cli import app
from volkd.data.importer import import_scans
from volkd.inference.explain import explain_scans
from volkd.inference.grid import IncompatibleScanError, TrainingGrid
from volkd.inference.inputs import LoadedScan, ScanInput, collect_inputs
from volkd.inference.predict import PredictionWarning, predict_scans, prepare_scan
from volkd.train import load_checkpoint, predict_proba

GRID = 12


def _volumes(n: int, labels: np.ndarray, seed: int) -> np.ndarray:
    """N×12³ uint8 volumes (MedMNIST stores uint8) with a class-dependent bright blob."""
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 60, size=(n, GRID, GRID, GRID)).astype(np.float32)
    for i, y in enumerate(labels):
        v[i, 3:9, 3:9, 3:9] += 120 if y else 40
    return v.astype(np.uint8)


def write_medmnist(path: Path, n=(18, 6, 6), seed=0) -> Path:
    """A MedMNIST-3D-layout NPZ: {train,val,test}_images (N×D×H×W uint8) and _labels (N×1)."""
    arrays = {}
    for k, (split, size) in enumerate(zip(("train", "val", "test"), n)):
        y = np.arange(size) % 2
        arrays[f"{split}_images"] = _volumes(size, y, seed + k)
        arrays[f"{split}_labels"] = y[:, None]
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("arrays")
    npz = write_medmnist(root / "organ.npz")
    cohort, _ = import_scans(npz, root / "cohort", target_grid=None, class_names=["normal", "abnormal"])
    teacher, student = train_pair(cohort, root / "runs")
    return {"root": root, "npz": npz, "cohort": cohort, "teacher": teacher, "student": student}


def _warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, PredictionWarning)]


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_npz_predictions_equal_those_on_the_imported_cohort(setup, kind):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, skipped = predict_scans(setup[kind], [setup["npz"]])
        ref, _ = predict_scans(setup[kind], [setup["root"] / "cohort"])
    assert skipped == []
    c = setup["cohort"]
    assert list(df["scan_id"]) == list(c.scan_ids) == list(ref["scan_id"])  # the IDs volkd import gives
    assert df["source"].iloc[0] == f"{setup['npz']}[0]"
    np.testing.assert_allclose(df[["proba_normal", "proba_abnormal"]].to_numpy(), ref[["proba_normal", "proba_abnormal"]].to_numpy(),
                               atol=1e-5)
    want = predict_proba(load_checkpoint(setup[kind]), np.asarray(c.volumes))
    np.testing.assert_allclose(df[["proba_normal", "proba_abnormal"]].to_numpy(), want, atol=1e-5)
    # the same leakage guard as for files and cohorts: training/validation scans are flagged
    ck = load_checkpoint(setup[kind])
    flagged = set(df.loc[df["training_overlap"] != "", "scan_id"])
    assert flagged == set(ck.split["train"]) | set(ck.split["val"]) and not flagged & set(ck.split["test"])
    assert any("may be part of the model's training data" in m for m in _warnings(caught))


def test_npy_files_and_folders(setup, tmp_path):
    c = setup["cohort"]
    ck = load_checkpoint(setup["student"])
    test_ids = list(ck.split["test"])
    idx = [list(c.scan_ids).index(s) for s in test_ids]
    vols = np.asarray(c.volumes[idx])
    folder = tmp_path / "new"
    folder.mkdir()
    np.save(folder / "batch.npy", vols)  # N×D×H×W
    np.save(folder / "one.npy", vols[0])  # a single D×H×W volume
    np.savez(folder / "named.npz", images=vols[:2], scan_ids=np.array(["p1", "p2"]))
    (folder / "broken.npz").write_bytes(b"not a zip")
    df, skipped = predict_scans(setup["student"], [folder])
    got = dict(zip(df["scan_id"], df["proba_abnormal"]))
    assert set(got) == {f"batch_{i:05d}" for i in range(len(idx))} | {"one", "p1", "p2"}
    want = predict_proba(ck, vols)[:, 1]
    np.testing.assert_allclose([got[f"batch_{i:05d}"] for i in range(len(idx))], want, atol=1e-5)
    assert got["one"] == pytest.approx(want[0], abs=1e-5) and got["p2"] == pytest.approx(want[1], abs=1e-5)
    assert (df["training_overlap"] == "").all()  # new IDs: nothing known about them
    assert [Path(s.source).name for s in skipped] == ["broken.npz"] and "unreadable array file" in skipped[0].reason


def test_arrays_are_refused_by_a_model_trained_with_an_affine(tmp_path):
    vol = np.ones((12, 12, 12), np.float32)
    item = ScanInput("x.npz[0]", "x_00000", "array", tmp_path / "x.npz", "x_00000", index=0)
    mni = TrainingGrid((12, 12, 12), np.diag([15.0, 18.0, 15.0, 1.0]), "MNI", "mni")
    with pytest.raises(IncompatibleScanError, match=r"x\.npz\[0\]: NPZ/NPY volumes carry no affine .* MNI scans placed by "
                                                     r"their MNI coordinates; predict on the NIfTI/DICOM files"):
        prepare_scan(item, LoadedScan(vol, np.eye(4)), mni)
    native = TrainingGrid((12, 12, 12), np.diag([2.0, 2.0, 2.0, 1.0]), "native", "fov")
    with pytest.raises(IncompatibleScanError, match="field of view in mm"):
        prepare_scan(item, LoadedScan(vol, np.eye(4)), native)
    arrays = TrainingGrid((48, 48, 48), np.diag([28 / 48] * 3 + [1.0]), "unknown", "fov")
    with pytest.raises(IncompatibleScanError, match="too different from the training grid"):  # 8 voxels for 48: 6× too coarse
        prepare_scan(item, LoadedScan(np.ones((8, 8, 8), np.float32), np.eye(4)), arrays)
    out, _ = prepare_scan(item, LoadedScan(np.pad(vol, 6), np.eye(4)), arrays)  # a 24³ array is stretched onto 48³
    assert out.shape == (48, 48, 48)


def test_explain_arrays(setup, tmp_path):
    c = setup["cohort"]
    npz = tmp_path / "two.npz"
    np.savez(npz, images=np.asarray(c.volumes[-2:]))
    for kind in ("teacher", "student"):
        out = tmp_path / kind
        results, skipped = explain_scans(setup[kind], [npz], out)
        assert skipped == [] and [r.scan_id for r in results] == ["two_00000", "two_00001"]
        index = pd.read_csv(out / "explain.csv")
        assert list(index["source"]) == [f"{npz}[0]", f"{npz}[1]"]
        if kind == "teacher":
            cam = nib.load(out / "two_00000_gradcam.nii.gz")
            assert cam.shape == (GRID,) * 3  # the input array's own grid
            m = np.asarray(cam.dataobj)
            assert m.std() > 1e-3 and m.min() >= 0 and m.max() <= 1 + 1e-6
        else:
            with np.load(out / "two_00000_gradcam.npz") as z:
                assert set(z.files) == set(load_checkpoint(setup[kind]).build_projection().slots)


def test_collect_inputs_mixes_every_kind(setup, tmp_path):
    write_nifti(tmp_path / "a.nii.gz", np.zeros((8, 8, 8)), np.eye(4))
    items, skipped = collect_inputs([setup["npz"], tmp_path / "a.nii.gz", setup["root"] / "cohort", tmp_path / "x.txt"])
    kinds = [i.kind for i in items]
    assert kinds.count("array") == kinds.count("cohort") == len(setup["cohort"]) and kinds.count("nifti") == 1
    assert [s.source for s in skipped] == [str(tmp_path / "x.txt")]


def test_cli_predict_and_explain_npz(setup, tmp_path):
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(app, ["predict", str(setup["student"]), str(setup["npz"]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"predicted {len(setup['cohort'])} scan(s)" in r.output and "may be part of the model's training data" in r.output
    assert len(pd.read_csv(out)) == len(setup["cohort"])
    r = CliRunner().invoke(app, ["explain", str(setup["teacher"]), str(setup["npz"]), "--out", str(tmp_path / "ex")])
    assert r.exit_code == 0, r.output
    assert f"explained {len(setup['cohort'])} scan(s)" in r.output
