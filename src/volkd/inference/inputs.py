"""What to predict on: NIfTI files, DICOM series folders, NPZ/NPY arrays, folders of them, or cohort directories.

Files are read by the importer's readers (:mod:`volkd.data.readers`), so a scan gets the same ID
and the same voxels here as in ``volkd import``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from volkd.data.atlas import mni_grid_affine
from volkd.data.cohort import META_FILE, SCANS_FILE, VOLUMES_FILE, Cohort
from volkd.data.importer import scan_id_of
from volkd.data.readers import ARRAY_SUFFIXES, ArraySet, dicom_files, is_dicom_file, is_nifti, read_arrays, read_scan
from volkd.errors import CohortChangedError, VolkdError


@dataclass
class ScanInput:
    """One scan to predict on: a file/folder, row ``index`` of a cohort, or volume ``index`` of an array file."""

    source: str  # file/folder path, "<cohort>[scan_id]" or "<file.npz>[index]"
    scan_id: str
    kind: str  # "nifti", "dicom", "cohort" or "array"
    path: Path
    subject_id: str = ""
    cohort: Cohort | None = None
    index: int = -1
    arrays: ArraySet | None = None


@dataclass
class Skipped:
    """An input that was not predicted on, and why."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """Row of ``<out>.skipped.csv``."""
        return {"source": self.source, "reason": self.reason}


@dataclass
class LoadedScan:
    """A scan read into memory: RAS data, its voxel→mm affine, and what the reader learnt."""

    data: np.ndarray
    affine: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def is_cohort_dir(path: Path) -> bool:
    """True for a folder holding a volkd cohort (volumes.npy, scans.csv, cohort.json)."""
    return path.is_dir() and all((path / f).is_file() for f in (VOLUMES_FILE, SCANS_FILE, META_FILE))


def _scan_id(path: Path) -> str:
    return scan_id_of(path)


def _cohort_inputs(path: Path) -> list[ScanInput]:
    # verified: the training-overlap check trusts the cohort's subject IDs, so its content must be what was imported
    cohort = Cohort.load(path, verify=True)
    return [ScanInput(f"{path}[{sid}]", sid, "cohort", path, str(subj), cohort, i)
            for i, (sid, subj) in enumerate(zip(cohort.scan_ids, cohort.subjects))]


def _array_inputs(path: Path) -> list[ScanInput]:
    """Every volume of an NPZ (MedMNIST layout or ``images``) / NPY file, with the IDs ``volkd import`` gives them.

    As on import, an array volume is its own subject (subject ID = scan ID).
    """
    s = read_arrays(path, stack_2d=True)  # predicting, a single D×H×W array is one volume (import asks for --stack-2d)
    return [ScanInput(f"{path}[{k}]", sid, "array", path, sid, arrays=s, index=k) for k, sid in enumerate(s.scan_ids)]


def _walk(folder: Path, scans: list[ScanInput], skipped: list[Skipped]) -> None:
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if is_cohort_dir(here):
            scans.extend(_cohort_inputs(here))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = sorted(f for f in files if not f.startswith("."))
        if any(is_dicom_file(here / f) for f in names):
            scans.append(ScanInput(str(here), _scan_id(here), "dicom", here))
        for f in names:
            p = here / f
            if is_nifti(p):
                scans.append(ScanInput(str(p), _scan_id(p), "nifti", p))
            elif f.lower().endswith(ARRAY_SUFFIXES):
                try:
                    scans.extend(_array_inputs(p))
                except VolkdError as e:
                    skipped.append(Skipped(str(p), str(e).removeprefix(f"{p}: ")))


def collect_inputs(inputs: list[str | Path]) -> tuple[list[ScanInput], list[Skipped]]:
    """Expand ``inputs`` into scans (cohorts scan by scan, folders recursively) and refused entries."""
    scans: list[ScanInput] = []
    skipped: list[Skipped] = []
    for raw in inputs:
        p = Path(raw)
        try:
            if not p.exists():
                skipped.append(Skipped(str(p), "file or folder not found"))
            elif is_cohort_dir(p):
                scans.extend(_cohort_inputs(p))
            elif p.is_file() and is_nifti(p):
                scans.append(ScanInput(str(p), _scan_id(p), "nifti", p))
            elif p.is_file() and p.name.lower().endswith(ARRAY_SUFFIXES):
                scans.extend(_array_inputs(p))
            elif p.is_file() and is_dicom_file(p):
                scans.append(ScanInput(str(p), _scan_id(p), "dicom", p))
            elif p.is_dir() and dicom_files(p):
                scans.append(ScanInput(str(p), _scan_id(p), "dicom", p))
            elif p.is_dir():
                found_before = len(scans) + len(skipped)
                _walk(p, scans, skipped)
                if len(scans) + len(skipped) == found_before:
                    skipped.append(Skipped(str(p), "no NIfTI file, DICOM series, NPZ/NPY array or cohort found in this folder"))
            else:
                skipped.append(Skipped(str(p), "not a NIfTI file (.nii/.nii.gz), DICOM file/series folder, NPZ/NPY array "
                                               "or cohort directory"))
        except CohortChangedError:
            raise
        except VolkdError as e:
            skipped.append(Skipped(str(p), str(e).removeprefix(f"{p}: ")))
    return scans, skipped


def dicom_patient_id(path: Path) -> str:
    """PatientID of a DICOM series folder or file ('' when absent)."""
    import pydicom

    first = path if path.is_file() else next(iter(dicom_files(path)), None)
    if first is None:
        return ""
    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # noqa: BLE001 - the full read reports unreadable files
        return ""
    return str(getattr(ds, "PatientID", "") or "").strip()


def cohort_affine(cohort: Cohort, index: int) -> np.ndarray:
    """Voxel→mm affine of a cohort's volumes (its own, the MNI grid's, or its voxel sizes)."""
    meta = cohort.meta
    if meta.affine is not None:
        return np.asarray(meta.affine, dtype=np.float64)
    if meta.space == "MNI":
        return mni_grid_affine(tuple(meta.grid_shape))
    cols = [f"voxel_{a}_mm" for a in "xyz"]
    if all(c in cohort.scans.columns for c in cols):
        return np.diag([*(float(cohort.scans.at[index, c]) for c in cols), 1.0])
    return np.diag([*(float(v) for v in meta.voxel_size_mm), 1.0])


def load_input(item: ScanInput) -> LoadedScan:
    """Read a scan (NIfTI, DICOM), an array volume or a cohort volume; reader errors propagate as VolkdError.

    An array volume has no affine: it comes with the identity (orientation and voxel size unknown).
    """
    if item.kind == "array":
        assert item.arrays is not None
        vol = np.asarray(item.arrays.images[item.index], dtype=np.float32)
        return LoadedScan(vol, np.eye(4), {"format": "array"})
    if item.kind == "cohort":
        assert item.cohort is not None
        vol = np.asarray(item.cohort.volumes[item.index], dtype=np.float32)
        return LoadedScan(vol, cohort_affine(item.cohort, item.index),
                          {"format": "cohort", "modality": item.cohort.meta.modality, "cohort_grid": tuple(item.cohort.meta.grid_shape)})
    vol = read_scan(item.path)
    if item.kind == "dicom" and not item.subject_id:
        item.subject_id = dicom_patient_id(item.path)
    return LoadedScan(vol.data, vol.affine, dict(vol.info))


def iter_loaded(items: list[ScanInput]) -> Iterator[tuple[ScanInput, LoadedScan | Skipped]]:
    """Each input with its loaded scan, or a :class:`Skipped` naming why it could not be read."""
    for it in items:
        try:
            yield it, load_input(it)
        except VolkdError as e:
            yield it, Skipped(it.source, str(e).removeprefix(f"{it.path}: "))
