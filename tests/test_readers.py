"""Scan readers on real files written here with nibabel and pydicom."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from volkd.data.readers import read_arrays, read_dicom, read_nifti, read_scan
from volkd.errors import ScanImportError

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
NM_STORAGE = "1.2.840.10008.5.1.4.1.1.20"  # Nuclear Medicine Image Storage


# ------------------------------------------------------------------ file-making helpers
def ras_volume(shape=(12, 14, 10), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric RAS volume (values 0.5·k − 10, exact in float32) and its affine."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(0, 400, size=shape)
    ints[: shape[0] // 3] += 500  # a bright left third: any L/R flip shows
    vol = (0.5 * ints - 10.0).astype(np.float32)
    aff = np.array([[2.0, 0, 0, -11.0], [0, 2.5, 0, -17.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
    return vol, aff


def flip(data: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Same image, stored with ``axis`` reversed (the affine says so)."""
    f = np.eye(4)
    f[axis, axis], f[axis, 3] = -1.0, data.shape[axis] - 1
    return np.flip(data, axis).copy(), affine @ f


def permute(data: np.ndarray, affine: np.ndarray, perm: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Same image, stored with axes permuted (new axis k = old axis perm[k])."""
    p = np.zeros((4, 4))
    p[3, 3] = 1
    for k, old in enumerate(perm):
        p[old, k] = 1
    return np.transpose(data, perm).copy(), affine @ p


def variant(name: str, vol: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image stored as RAS, LAS, LPS or with permuted axes (PSL-like)."""
    if name == "RAS":
        return vol.copy(), aff.copy()
    if name == "LAS":
        return flip(vol, aff, 0)
    if name == "LPS":
        return flip(*flip(vol, aff, 0), 1)
    if name == "permuted":
        return permute(*flip(vol, aff, 1), (2, 1, 0))
    raise ValueError(name)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _dataset(series_uid: str, rows: int, cols: int, modality: str = "NM") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = NM_STORAGE
    ds.SOPClassUID = NM_STORAGE
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.PatientID = "P1"
    return ds


def dicom_geometry(vol: np.ndarray, aff: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """DICOM voxel array (column i, row j, slice k) and its LPS affine for a RAS image in ``layout``."""
    data, a = variant(layout, vol, aff)
    return data, LPS @ a


def write_dicom_series(folder: Path, vol: np.ndarray, aff: np.ndarray, layout: str = "LPS", slope: float = 0.5,
                       intercept: float = -10.0, shuffle: bool = True, suffix: str = ".dcm",
                       series_uid: str | None = None) -> list[Path]:
    """Write a RAS image as single-slice DICOM files (stored values (v − intercept)/slope)."""
    folder.mkdir(parents=True, exist_ok=True)
    data, lps = dicom_geometry(vol, aff, layout)
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    r, c = lps[:3, 0] / sp[0], lps[:3, 1] / sp[1]
    uid = series_uid or generate_uid()
    order = list(range(data.shape[2]))
    if shuffle:
        random.Random(1).shuffle(order)
    paths = []
    for n, k in enumerate(order):
        px = np.rint((data[:, :, k].T - intercept) / slope).astype(np.uint16)
        ds = _dataset(uid, *px.shape)
        ds.ImageOrientationPatient = [float(x) for x in (*r, *c)]
        ds.ImagePositionPatient = [float(x) for x in (lps @ np.array([0, 0, k, 1.0]))[:3]]
        ds.PixelSpacing = [float(sp[1]), float(sp[0])]
        ds.SliceThickness = float(sp[2])
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.InstanceNumber = k + 1
        ds.set_pixel_data(px, "MONOCHROME2", 16)
        p = folder / f"slice_{n:03d}{suffix}"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def write_dicom_multiframe(path: Path, vol: np.ndarray, aff: np.ndarray, layout: str = "LPS", per_frame: bool = True,
                           slope: float = 0.5, intercept: float = -10.0, nm: bool = False) -> Path:
    """Write a RAS image as one multi-frame DICOM file (functional groups, top-level or NM detector geometry)."""
    data, lps = dicom_geometry(vol, aff, layout)
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    r, c = lps[:3, 0] / sp[0], lps[:3, 1] / sp[1]
    frames = np.rint((np.transpose(data, (2, 1, 0)) - intercept) / slope).astype(np.uint16)
    ds = _dataset(generate_uid(), frames.shape[1], frames.shape[2])
    iop = [float(x) for x in (*r, *c)]
    if per_frame:
        orient, measures, tx = Dataset(), Dataset(), Dataset()
        orient.ImageOrientationPatient = iop
        measures.PixelSpacing = [float(sp[1]), float(sp[0])]
        measures.SliceThickness = float(sp[2])
        tx.RescaleSlope, tx.RescaleIntercept = slope, intercept
        shared = Dataset()
        shared.PlaneOrientationSequence = [orient]
        shared.PixelMeasuresSequence = [measures]
        shared.PixelValueTransformationSequence = [tx]
        ds.SharedFunctionalGroupsSequence = [shared]
        items = []
        for k in range(frames.shape[0]):
            pos, item = Dataset(), Dataset()
            pos.ImagePositionPatient = [float(x) for x in (lps @ np.array([0, 0, k, 1.0]))[:3]]
            item.PlanePositionSequence = [pos]
            items.append(item)
        # store frames in reverse order: the reader must sort them by position
        ds.PerFrameFunctionalGroupsSequence = items[::-1]
        frames = frames[::-1]
    elif nm:  # NM tomography: geometry in the DetectorInformationSequence
        det = Dataset()
        det.ImageOrientationPatient = iop
        det.ImagePositionPatient = [float(x) for x in lps[:3, 3]]
        ds.DetectorInformationSequence = [det]
        ds.PixelSpacing = [float(sp[1]), float(sp[0])]
        ds.SpacingBetweenSlices = float(sp[2])
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    else:
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = [float(x) for x in lps[:3, 3]]
        ds.PixelSpacing = [float(sp[1]), float(sp[0])]
        ds.SpacingBetweenSlices = float(sp[2])
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.set_pixel_data(np.ascontiguousarray(frames), "MONOCHROME2", 16)
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------- NIfTI
@pytest.mark.parametrize("layout", ["RAS", "LAS", "LPS", "permuted"])
def test_nifti_any_orientation_reads_as_the_same_ras_volume(tmp_path, layout):
    vol, aff = ras_volume()
    data, a = variant(layout, vol, aff)
    assert not np.array_equal(data, vol) or layout == "RAS"
    img = read_nifti(write_nifti(tmp_path / f"{layout}.nii.gz", data, a))
    np.testing.assert_array_equal(img.data, vol)
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)
    assert img.data.dtype == np.float32 and img.voxel_size == pytest.approx((2.0, 2.5, 3.0))


def test_nifti_4d_single_volume_is_accepted_other_shapes_are_not(tmp_path):
    vol, aff = ras_volume()
    img = read_scan(write_nifti(tmp_path / "one.nii", vol[..., None], aff))
    np.testing.assert_array_equal(img.data, vol)
    with pytest.raises(ScanImportError, match=r"two\.nii.*shape \(12, 14, 10, 2\).*single volume"):
        read_nifti(write_nifti(tmp_path / "two.nii", np.stack([vol, vol], -1), aff))
    with pytest.raises(ScanImportError, match=r"flat\.nii.*3-D"):
        read_nifti(write_nifti(tmp_path / "flat.nii", vol[:, :, 0], aff))


def test_corrupt_nifti_names_the_file(tmp_path):
    vol, aff = ras_volume()
    good = write_nifti(tmp_path / "good.nii.gz", vol, aff)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(good.read_bytes()[: 300])
    with pytest.raises(ScanImportError, match=r"bad\.nii\.gz: unreadable NIfTI"):
        read_nifti(bad)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(b"not a nifti header" * 10))
    with pytest.raises(ScanImportError, match=r"junk\.nii\.gz: unreadable NIfTI"):
        read_scan(junk)


# ---------------------------------------------------------------------------- DICOM
@pytest.mark.parametrize("layout", ["LPS", "RAS", "permuted"])
def test_dicom_series_shuffled_is_sorted_rescaled_and_placed_in_ras(tmp_path, layout):
    vol, aff = ras_volume()
    write_dicom_series(tmp_path / "scan", vol, aff, layout=layout)
    img = read_dicom(tmp_path / "scan")
    np.testing.assert_array_equal(img.data, vol)  # slices sorted back, slope/intercept applied
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)  # LPS → RAS correct
    ref = read_nifti(write_nifti(tmp_path / "same.nii", vol, aff))
    np.testing.assert_array_equal(img.data, ref.data)
    assert img.info["n_files"] == vol.shape[2] if layout != "permuted" else vol.shape[0]


def test_dicom_series_without_extension_and_per_slice_rescale(tmp_path):
    vol, aff = ras_volume(shape=(8, 9, 6))
    files = write_dicom_series(tmp_path / "s", vol, aff, suffix="")
    import pydicom

    # give one slice its own slope/intercept: stored values change, the real values must not
    ds = pydicom.dcmread(files[2])
    k = int(ds.InstanceNumber) - 1
    data, _ = dicom_geometry(vol, aff, "LPS")
    px = np.rint((data[:, :, k].T + 20.0) / 0.25).astype(np.uint16)
    ds.RescaleSlope, ds.RescaleIntercept = 0.25, -20.0
    ds.set_pixel_data(px, "MONOCHROME2", 16)
    ds.save_as(files[2])
    np.testing.assert_array_equal(read_scan(tmp_path / "s").data, vol)


@pytest.mark.parametrize("per_frame,nm,layout", [(True, False, "LPS"), (False, False, "permuted"), (False, True, "LPS")])
def test_multiframe_dicom(tmp_path, per_frame, nm, layout):
    vol, aff = ras_volume()
    f = write_dicom_multiframe(tmp_path / "mf.dcm", vol, aff, layout=layout, per_frame=per_frame, nm=nm)
    img = read_scan(f)
    np.testing.assert_array_equal(img.data, vol)
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)
    (tmp_path / "folder").mkdir()
    f.rename(tmp_path / "folder" / "mf.dcm")
    np.testing.assert_array_equal(read_scan(tmp_path / "folder").data, vol)


def test_mixed_series_is_an_error_naming_the_folder(tmp_path):
    vol, aff = ras_volume(shape=(6, 6, 4))
    write_dicom_series(tmp_path / "mix", vol, aff, series_uid="1.2.3.1")
    other = write_dicom_series(tmp_path / "other", vol, aff, series_uid="1.2.3.2")
    other[0].rename(tmp_path / "mix" / "extra.dcm")
    with pytest.raises(ScanImportError, match=r"mix: mixed series \(2 SeriesInstanceUIDs\)"):
        read_dicom(tmp_path / "mix")


def test_inconsistent_orientation_and_missing_pixels_are_errors(tmp_path):
    import pydicom

    vol, aff = ras_volume(shape=(6, 6, 4))
    files = write_dicom_series(tmp_path / "tilt", vol, aff)
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    ds.save_as(files[1])
    with pytest.raises(ScanImportError, match=r"tilt: inconsistent ImageOrientationPatient"):
        read_dicom(tmp_path / "tilt")
    files = write_dicom_series(tmp_path / "nopix", vol, aff)
    ds = pydicom.dcmread(files[0])
    del ds.PixelData
    ds.save_as(files[0])
    with pytest.raises(ScanImportError, match=r"nopix.*no pixel data"):
        read_dicom(tmp_path / "nopix")
    files = write_dicom_series(tmp_path / "gap", vol, aff, shuffle=False)
    files[1].unlink()  # a missing slice in the middle
    with pytest.raises(ScanImportError, match=r"gap: irregular slice spacing"):
        read_dicom(tmp_path / "gap")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanImportError, match=r"empty: no DICOM files"):
        read_dicom(tmp_path / "empty")


# ---------------------------------------------------------------------------- arrays
def test_medmnist_npz_keeps_the_official_split(medmnist28):
    s = read_arrays(medmnist28)
    assert s.images.shape == (1584, 28, 28, 28)
    assert [s.splits.count(k) for k in ("train", "val", "test")] == [1188, 98, 298]
    assert s.scan_ids[0] == "adrenalmnist3d_train_00000" and s.scan_ids[-1] == "adrenalmnist3d_test_00297"
    assert np.bincount(s.labels[:1188]).tolist() == [929, 259]
    assert np.bincount(s.labels).tolist() == [929 + 76 + 229, 259 + 22 + 69]


def test_npy_and_bad_npz(tmp_path):
    np.save(tmp_path / "vols.npy", np.zeros((3, 4, 4, 4), np.float32))
    s = read_arrays(tmp_path / "vols.npy")
    assert s.scan_ids == ["vols_00000", "vols_00001", "vols_00002"] and s.labels is None
    np.savez(tmp_path / "odd.npz", foo=np.zeros(3))
    with pytest.raises(ScanImportError, match=r"odd\.npz: NPZ has keys \['foo'\]"):
        read_arrays(tmp_path / "odd.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ScanImportError, match=r"broken\.npz: unreadable array file"):
        read_arrays(tmp_path / "broken.npz")


def test_read_text_table_strips_and_names_unreadable_file(tmp_path):
    from volkd.data.readers import read_text_table
    from volkd.errors import ScanImportError

    p = tmp_path / "l.csv"
    p.write_text(" id , dx \n a1 , NA \n")
    df = read_text_table(p, "labels CSV")
    assert list(df.columns) == ["id", "dx"] and df.iloc[0].tolist() == ["a1", "NA"]  # no NaN guessing
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x00\n\x00")
    with pytest.raises(ScanImportError, match=r"bad\.csv: unreadable labels CSV"):
        read_text_table(bad, "labels CSV")
