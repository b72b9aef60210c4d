"""Scan readers: NIfTI (nibabel), DICOM series or multi-frame files (pydicom), NPZ/NPY arrays.

Every scan reader returns a :class:`ScanVolume`: a float32 3-D array in canonical RAS+
orientation (axis 0 = x left→right, 1 = y posterior→anterior, 2 = z inferior→superior)
and its 4×4 voxel→world (mm) affine. Errors are :class:`~volkd.errors.ScanImportError`
naming the file or folder and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from volkd.errors import ScanImportError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ARRAY_SUFFIXES = (".npz", ".npy")
MEDMNIST_SPLITS = ("train", "val", "test")
#: DICOM patient coordinates are LPS; volkd's world coordinates are RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class ScanVolume:
    """One scan: float32 RAS+ data, its voxel→mm affine and where it came from."""

    data: np.ndarray
    affine: np.ndarray
    source: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


@dataclass
class ArraySet:
    """Volumes read from an NPZ/NPY file (no affine: orientation unknown)."""

    images: np.ndarray  # N×D×H×W, any numeric dtype
    labels: np.ndarray | None  # N integer/str labels, or None when the file has none
    scan_ids: list[str]
    splits: list[str] | None  # official split per volume (MedMNIST), or None
    source: Path


# ---------------------------------------------------------------------------- helpers
def is_nifti(path: Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` files."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = path.name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def is_dicom_file(path: Path) -> bool:
    """True for ``*.dcm`` files and extension-less files with the DICOM preamble ('DICM' at 128)."""
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (sorted by name)."""
    return sorted(p for p in folder.iterdir() if is_dicom_file(p))


def canonical(data: np.ndarray, affine: np.ndarray, source: Path, info: dict[str, Any] | None = None) -> ScanVolume:
    """Reorient ``data`` with voxel→RAS ``affine`` to the closest canonical RAS+ orientation."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64)))
    out = np.asarray(img.dataobj, dtype=np.float32)
    return ScanVolume(np.ascontiguousarray(out), np.asarray(img.affine, dtype=np.float64), source, dict(info or {}))


# ------------------------------------------------------------------------------ NIfTI
def read_nifti(path: str | Path) -> ScanVolume:
    """Read a 3-D (or 4-D with one volume) NIfTI file, reoriented to canonical RAS+."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(path)
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            img = img.slicer[..., 0]
        elif len(shape) != 3:
            raise ScanImportError(
                f"{path}: NIfTI image has shape {tuple(shape)}; volkd needs one 3-D volume "
                "(a 4-D file must have a single volume: split the time series first)"
            )
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
    except ScanImportError:
        raise
    except Exception as e:  # noqa: BLE001 - nibabel/gzip/zlib raise many kinds
        raise ScanImportError(f"{path}: unreadable NIfTI file ({type(e).__name__}: {e})") from None
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-12:
        raise ScanImportError(f"{path}: NIfTI affine is singular or not finite; fix the header (qform/sform)")
    return ScanVolume(np.ascontiguousarray(data), np.asarray(img.affine, dtype=np.float64), path,
                      {"format": "nifti", "original_shape": list(shape)})


# ------------------------------------------------------------------------------ DICOM
def _f(values: Any, n: int, what: str, where: Path) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.array([])
    if arr.size != n:
        raise ScanImportError(f"{where}: missing or malformed {what}; cannot place the slices in space")
    return arr


def _orientation(iop: np.ndarray, where: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(r @ c) > 1e-3:
        raise ScanImportError(f"{where}: ImageOrientationPatient {iop.tolist()} is not two orthonormal directions")
    n = np.cross(r, c)
    return r, c, n / np.linalg.norm(n)


def _rescale(ds: Any) -> tuple[float, float]:
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return slope, intercept


def _pixels(ds: Any, where: Path) -> np.ndarray:
    if "PixelData" not in ds:
        raise ScanImportError(f"{where}: DICOM file has no pixel data")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as e:  # noqa: BLE001 - pydicom/handlers raise many kinds
        raise ScanImportError(f"{where}: cannot decode DICOM pixel data ({type(e).__name__}: {e})") from None


def _lps_affine(r: np.ndarray, c: np.ndarray, step: np.ndarray, origin: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Voxel (i=column, j=row, k=slice) → RAS mm, from DICOM's LPS geometry."""
    aff = np.eye(4)
    aff[:3, 0] = r * spacing[1]  # column index moves along the row direction
    aff[:3, 1] = c * spacing[0]  # row index moves along the column direction
    aff[:3, 2] = step
    aff[:3, 3] = origin
    return LPS_TO_RAS @ aff


def read_dicom(path: str | Path) -> ScanVolume:
    """Read a DICOM series folder (one scan) or a single multi-frame DICOM file."""
    path = Path(path)
    if path.is_file():
        return _read_multiframe(path, path)
    if not path.is_dir():
        raise ScanImportError(f"{path}: no such DICOM file or folder")
    files = dicom_files(path)
    if not files:
        raise ScanImportError(f"{path}: no DICOM files (*.dcm or files with the DICM preamble) in this folder")
    if len(files) == 1:
        return _read_multiframe(files[0], path)
    return _read_series(files, path)


def _dcmread(f: Path, folder: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(f)
    except Exception as e:  # noqa: BLE001
        raise ScanImportError(f"{folder}: unreadable DICOM file {f.name} ({type(e).__name__}: {e})") from None


def _read_series(files: list[Path], folder: Path) -> ScanVolume:
    datasets = [_dcmread(f, folder) for f in files]
    if any(int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise ScanImportError(f"{folder}: mixes a multi-frame DICOM file with other files; put one scan per folder")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise ScanImportError(f"{folder}: mixed series ({len(series)} SeriesInstanceUIDs); put each series in its own folder")
    iops = [_f(getattr(ds, "ImageOrientationPatient", None) or [], 6, "ImageOrientationPatient", folder / f.name)
            for ds, f in zip(datasets, files)]
    if any(np.abs(iop - iops[0]).max() > 1e-4 for iop in iops):
        raise ScanImportError(f"{folder}: inconsistent ImageOrientationPatient across slices; not one series")
    r, c, n = _orientation(iops[0], folder)
    ipps = np.stack([_f(getattr(ds, "ImagePositionPatient", None) or [], 3, "ImagePositionPatient", folder / f.name)
                     for ds, f in zip(datasets, files)])
    shapes = {(int(ds.Rows), int(ds.Columns)) if "Rows" in ds and "Columns" in ds else None for ds in datasets}
    if len(shapes) != 1 or None in shapes:
        raise ScanImportError(f"{folder}: slices have different or missing Rows/Columns {sorted(map(str, shapes))}")
    spacing = _f(getattr(datasets[0], "PixelSpacing", None) or [], 2, "PixelSpacing", folder / files[0].name)
    dist = ipps @ n
    order = np.argsort(dist, kind="stable")
    dist, ipps = dist[order], ipps[order]
    gaps = np.diff(dist)
    if (gaps < 1e-3).any():
        raise ScanImportError(f"{folder}: two slices share the same position along the slice normal; duplicate slices or mixed series")
    if gaps.size and (np.abs(gaps - np.median(gaps)) > 0.01 * np.median(gaps) + 1e-3).any():
        raise ScanImportError(
            f"{folder}: irregular slice spacing (gaps {np.round(gaps.min(), 3)}–{np.round(gaps.max(), 3)} mm); "
            "missing slices? re-export the complete series"
        )
    slices = []
    for i in order:
        ds = datasets[i]
        px = _pixels(ds, folder / files[i].name)
        if px.ndim != 2:
            raise ScanImportError(f"{folder / files[i].name}: expected a 2-D slice, got pixel array of shape {px.shape}")
        slope, intercept = _rescale(ds)
        slices.append(px.astype(np.float32).T * np.float32(slope) + np.float32(intercept))
    data = np.stack(slices, axis=2)
    step = (ipps[-1] - ipps[0]) / (len(ipps) - 1)
    affine = _lps_affine(r, c, step, ipps[0], spacing)
    info = {"format": "dicom", "n_files": len(files), "modality": str(getattr(datasets[0], "Modality", "")),
            "series_uid": next(iter(series))}
    return canonical(data, affine, folder, info)


def _seq_item(ds: Any, *names: str) -> Any:
    cur = ds
    for name in names:
        seq = getattr(cur, name, None)
        if not seq:
            return None
        cur = seq[0]
    return cur


def _read_multiframe(f: Path, where: Path) -> ScanVolume:
    ds = _dcmread(f, where.parent if where == f else where)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    px = _pixels(ds, f)
    if frames <= 1 or px.ndim != 3:
        raise ScanImportError(f"{where}: a single DICOM file must be multi-frame (NumberOfFrames > 1) to hold a 3-D scan; "
                              "put the slice files of the series in this folder")
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    iop = _first_present(
        _seq_item(shared, "PlaneOrientationSequence") if shared else None,
        _seq_item(ds, "DetectorInformationSequence"), ds, attr="ImageOrientationPatient")
    if iop is None:
        raise ScanImportError(f"{f}: multi-frame DICOM without ImageOrientationPatient; cannot orient the volume")
    r, c, n = _orientation(_f(iop, 6, "ImageOrientationPatient", f), f)
    measures = _seq_item(shared, "PixelMeasuresSequence") if shared else None
    sp = _first_present(measures, ds, attr="PixelSpacing")
    spacing = _f(sp or [], 2, "PixelSpacing", f)
    slopes = np.full(frames, _rescale(ds)[0])
    intercepts = np.full(frames, _rescale(ds)[1])
    shared_tx = _seq_item(shared, "PixelValueTransformationSequence") if shared else None
    if shared_tx is not None:
        slopes[:], intercepts[:] = _rescale(shared_tx)
    if per_frame is not None and len(per_frame) == frames and _seq_item(per_frame[0], "PlanePositionSequence") is not None:
        ipps = np.stack([_f(_seq_item(fr, "PlanePositionSequence").ImagePositionPatient, 3, "ImagePositionPatient", f)
                         for fr in per_frame])
        for k, fr in enumerate(per_frame):
            tx = _seq_item(fr, "PixelValueTransformationSequence")
            if tx is not None:
                slopes[k], intercepts[k] = _rescale(tx)
    else:
        ipp = _first_present(_seq_item(ds, "DetectorInformationSequence"), ds, attr="ImagePositionPatient")
        gap = getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None)
        if ipp is None or gap is None:
            raise ScanImportError(f"{f}: multi-frame DICOM without per-frame positions or ImagePositionPatient + "
                                  "SpacingBetweenSlices; cannot place the frames in space")
        ipps = _f(ipp, 3, "ImagePositionPatient", f)[None] + np.arange(frames)[:, None] * float(gap) * n[None]
    dist = ipps @ n
    order = np.argsort(dist, kind="stable")
    if (np.diff(dist[order]) < 1e-3).any():
        raise ScanImportError(f"{f}: two frames share the same position along the slice normal")
    vol = px.astype(np.float32) * slopes[:, None, None].astype(np.float32) + intercepts[:, None, None].astype(np.float32)
    data = np.transpose(vol[order], (2, 1, 0))
    ipps = ipps[order]
    step = (ipps[-1] - ipps[0]) / (frames - 1)
    affine = _lps_affine(r, c, step, ipps[0], spacing)
    info = {"format": "dicom-multiframe", "n_files": 1, "modality": str(getattr(ds, "Modality", ""))}
    return canonical(data, affine, where, info)


def _first_present(*items: Any, attr: str) -> Any:
    for it in items:
        if it is not None and getattr(it, attr, None) is not None:
            return getattr(it, attr)
    return None


# ---------------------------------------------------------------------------- dispatch
def read_scan(path: str | Path) -> ScanVolume:
    """Read one scan: a NIfTI file, a DICOM series folder or a multi-frame DICOM file."""
    path = Path(path)
    if not path.exists():
        raise ScanImportError(f"{path}: file or folder not found")
    if path.is_file() and is_nifti(path):
        return read_nifti(path)
    if path.is_dir() or is_dicom_file(path):
        return read_dicom(path)
    raise ScanImportError(f"{path}: not a NIfTI file (.nii/.nii.gz), DICOM file or DICOM series folder")


# ------------------------------------------------------------------------------ arrays
def read_arrays(path: str | Path, stack_2d: bool = False) -> ArraySet:
    """Read volumes from an NPZ (MedMNIST 3D layout or ``images``/``labels``) or NPY file.

    MedMNIST keys ``{train,val,test}_images`` / ``_labels`` keep the official split. A 3-D array
    (N 2-D images, or one volume?) is refused unless ``stack_2d``: then it is ONE volume.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)  # read lazily, volume by volume
            return _array_set(arr, None, None, path, stack_2d)
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if {f"{s}_images" for s in MEDMNIST_SPLITS} & keys:
                imgs, labs, splits = [], [], []
                for s in MEDMNIST_SPLITS:
                    if f"{s}_images" not in keys:
                        continue
                    if f"{s}_labels" not in keys:
                        raise ScanImportError(f"{path}: has {s}_images but no {s}_labels")
                    im, lab = z[f"{s}_images"], z[f"{s}_labels"]
                    imgs.append(im)
                    labs.append(_labels_1d(lab, path, f"{s}_labels", len(im)))
                    splits += [s] * len(im)
                images = np.concatenate(imgs)
                ids = [f"{nifti_stem(path)}_{s}_{i:05d}" for s in MEDMNIST_SPLITS if f"{s}_images" in keys
                       for i in range(len(z[f"{s}_images"]))]
                return ArraySet(_as_4d(images, path), np.concatenate(labs), ids, splits, path)
            if "images" in keys:
                images = z["images"]
                _refuse_2d_stack(images, path, "images", stack_2d)
                n = 1 if images.ndim == 3 else len(images)
                labels = _labels_1d(z["labels"], path, "labels", n) if "labels" in keys else None
                ids = [str(x) for x in z["scan_ids"]] if "scan_ids" in keys else None
                return _array_set(images, labels, ids, path, stack_2d)
            raise ScanImportError(f"{path}: NPZ has keys {sorted(keys)}; expected the MedMNIST layout "
                                  "(train_images, train_labels, val_*, test_*) or images (+ labels, scan_ids)")
    except ScanImportError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy/zipfile raise many kinds
        raise ScanImportError(f"{path}: unreadable array file ({type(e).__name__}: {e})") from None


def _labels_1d(lab: np.ndarray, path: Path, key: str, n: int) -> np.ndarray:
    lab = np.asarray(lab)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1 or len(lab) != n:
        raise ScanImportError(f"{path}: {key} has shape {lab.shape}; expected one label per volume ({n},) or ({n}, 1) "
                              "(multi-label tasks are not supported)")
    return lab


def _refuse_2d_stack(arr: np.ndarray, path: Path, key: str, stack_2d: bool) -> None:
    """A 3-D array is N 2-D images or one volume: volkd does not guess (``--stack-2d`` says: one volume)."""
    if arr.ndim == 3 and not stack_2d:
        raise ScanImportError(
            f"{path}: {key} has shape {tuple(arr.shape)}: {arr.shape[0]} 2-D images, or one 3-D volume? volkd classifies "
            "3-D volumes: store them as N×D×H×W (a single volume as 1×D×H×W), or pass --stack-2d to import this "
            f"array as ONE volume made of its {arr.shape[0]} slices")


def _as_4d(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim == 5 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 4:
        hint = " (2-D images: volkd classifies 3-D volumes)" if images.ndim == 3 else ""
        raise ScanImportError(f"{path}: volumes array has shape {images.shape}; expected N×D×H×W{hint}")
    if not np.issubdtype(images.dtype, np.number):
        raise ScanImportError(f"{path}: volumes array has non-numeric dtype {images.dtype}")
    return images


def _array_set(arr: np.ndarray, labels: np.ndarray | None, ids: list[str] | None, path: Path,
               stack_2d: bool = False) -> ArraySet:
    stem = path.stem
    if arr.ndim == 3:
        _refuse_2d_stack(arr, path, "the array", stack_2d)
        arr = arr[None]
        ids = ids or [stem]
    images = _as_4d(arr, path)
    ids = ids or [f"{stem}_{i:05d}" for i in range(len(images))]
    if len(ids) != len(images):
        raise ScanImportError(f"{path}: {len(ids)} scan_ids for {len(images)} volumes")
    if labels is not None and len(labels) != len(images):
        raise ScanImportError(f"{path}: {len(labels)} labels for {len(images)} volumes; expected one label per volume")
    return ArraySet(images, labels, ids, None, path)


def read_text_table(path: str | Path, what: str = "CSV", sep: str = ",") -> pd.DataFrame:
    """Read a CSV (or, with ``sep="\\t"``, a TSV) as text (no NaN guessing), names and cells stripped of spaces.

    An unreadable file raises :class:`ScanImportError` naming it (``what`` says which table).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
    except Exception as e:  # noqa: BLE001 - pandas raises many kinds here
        raise ScanImportError(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from None
    df.columns = [c.strip() for c in df.columns]
    for col in df.columns:
        df[col] = df[col].str.strip()
    return df

