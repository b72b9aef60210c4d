"""Write a (synthetic) MNI-space cohort as a PPMI download: collection CSV + NIfTI or DICOM tree.

Layout (the contract :mod:`volkd` import reads)::

    DIR/ppmi/collection.csv
    DIR/ppmi/PPMI/<Subject>/<Description_with_underscores>/<YYYY-MM-DD_HH_MM_SS.0>/<Image Data ID>/
        PPMI_<Subject>_<NM|PT>_..._<Image Data ID>.nii.gz        (nifti: one RAS file, affine in mm)
        PPMI_<Subject>_<NM|PT>_..._<n>_<Image Data ID>.dcm       (dicom: one axial slice per file, LPS)

``write_synthetic`` puts the cohort, its preview and (optionally) this tree in one
directory atomically. Subject and image IDs become folder and file names through
:func:`volkd.paths.safe_name` (PPMI's own IDs are plain names and stay as they are);
``collection.csv`` keeps the IDs verbatim.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from volkd.atomic import atomic_dir
from volkd.data.cohort import Cohort
from volkd.data.preview import save_preview
from volkd.data.synth import SynthConfig, synthesize
from volkd.errors import ConfigError
from volkd.paths import safe_name

COLLECTION_COLUMNS = (
    "Image Data ID", "Subject", "Group", "Sex", "Age", "Visit", "Modality",
    "Description", "Type", "Acq Date", "Format", "Downloaded",
)
GROUP_OF_LABEL = {"PD": "PD", "control": "Control"}
#: Fixed download date so that exports are reproducible byte for byte.
DOWNLOADED = dt.date(2025, 3, 14)
_LPS = np.diag([-1.0, -1.0, 1.0])
_SOP_CLASS = {"NM": "1.2.840.10008.5.1.4.1.1.20", "PT": "1.2.840.10008.5.1.4.1.1.128"}
Format = Literal["nifti", "dicom"]


def _mdy(d: dt.date) -> str:
    return f"{d.month}/{d.day}/{d.year}"


def _dicom_modality(cohort: Cohort) -> str:
    return "PT" if cohort.meta.modality.lower() == "pet" else "NM"


def _description(cohort: Cohort) -> str:
    default = "AV133 SUVR" if cohort.meta.modality.lower() == "pet" else "Reconstructed DaTSCAN"
    return str(cohort.meta.extra.get("description", default))


def _extra_groups(cohort: Cohort, groups: dict[str, int], seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Scans of groups outside the study (SWEDD, Prodromal): normal or near-normal uptake."""
    total = sum(groups.values())
    base = cohort.meta.extra.get("synth", {})
    cfg = SynthConfig(**base) if base else SynthConfig(grid=tuple(cohort.meta.grid_shape))
    extra = synthesize(cfg, n_subjects=max(2, total), pd_fraction=0.5, visits=1, seed=seed + 7919, borderline_fraction=1.0)
    order = np.argsort(extra.y, kind="stable")[:total]  # control-like first
    names = [g for g, k in groups.items() for _ in range(k)]
    first = max(int(s) for s in cohort.subjects if s.isdigit()) + 1 if any(s.isdigit() for s in cohort.subjects) else 90001
    last_img = max((int(s[1:]) for s in cohort.scan_ids if s[1:].isdigit()), default=100000)
    rows = []
    for n, (i, grp) in enumerate(zip(order, names)):
        r = extra.scans.iloc[int(i)]
        rows.append({"scan_id": f"I{last_img + 1 + n}", "subject_id": str(first + n), "visit_code": "BL",
                     "years_from_baseline": 0.0, "group": grp, "age": r.get("age", np.nan), "sex": r.get("sex", "")})
    return pd.DataFrame(rows), np.asarray(extra.volumes[order])


def export_ppmi(cohort: Cohort, root: str | Path, fmt: Format, seed: int = 0,
                extra_groups: dict[str, int] | None = None) -> pd.DataFrame:
    """Write ``root/ppmi`` (collection CSV + scan files) for ``cohort``; return the collection table."""
    if fmt not in ("nifti", "dicom"):
        raise ConfigError(f"export format must be 'nifti' or 'dicom', got {fmt!r}")
    if cohort.meta.affine is None:
        raise ConfigError("export needs the cohort's affine (cohort.json 'affine'); only spatially defined cohorts can be exported")
    affine = np.asarray(cohort.meta.affine, dtype=float)
    ppmi = Path(root) / "ppmi"
    ppmi.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 271828]))
    scans = cohort.scans.copy()
    scans["group"] = scans["label"].map(GROUP_OF_LABEL).fillna(scans["label"])
    if "visit_code" not in scans:
        scans["visit_code"] = ["BL" if v == 0 else f"V{2 * int(v) + 2:02d}" for v in scans["visit"]]
    if "years_from_baseline" not in scans:
        scans["years_from_baseline"] = scans["visit"].astype(float)
    volumes: list[np.ndarray] | np.ndarray = cohort.volumes
    extra_vols = None
    if extra_groups:
        extra_rows, extra_vols = _extra_groups(cohort, extra_groups, seed)
        scans = pd.concat([scans, extra_rows], ignore_index=True)
    modality, desc = _dicom_modality(cohort), _description(cohort)
    baseline: dict[str, dt.datetime] = {}
    rows = []
    for i, r in scans.iterrows():
        subj = str(r["subject_id"])
        if subj not in baseline:
            day = dt.date(2011, 1, 1) + dt.timedelta(days=int(rng.integers(0, 8 * 365)))
            baseline[subj] = dt.datetime.combine(day, dt.time(int(rng.integers(8, 17)), int(rng.integers(60)), int(rng.integers(60))))
        when = baseline[subj] + dt.timedelta(days=int(round(float(r["years_from_baseline"]) * 365.25)), minutes=int(rng.integers(-90, 90)))
        vol = np.asarray(volumes[i]) if i < len(cohort) else extra_vols[i - len(cohort)]  # type: ignore[index]
        subj_dir, image_dir, desc_dir = safe_name(subj), safe_name(str(r["scan_id"])), safe_name(desc.replace(" ", "_"))
        folder = ppmi / "PPMI" / subj_dir / desc_dir / when.strftime("%Y-%m-%d_%H_%M_%S.0") / image_dir
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"PPMI_{subj_dir}_{modality}_{desc_dir}_Br_{when:%Y%m%d%H%M%S}"
        age = r.get("age", np.nan)
        sex = str(r.get("sex", "")) if pd.notna(r.get("sex", np.nan)) else ""
        if fmt == "nifti":
            _write_nifti(folder / f"{stem}_{image_dir}.nii.gz", vol, affine)
        else:
            _write_dicom_series(folder, stem, vol, affine, subj, str(r["scan_id"]), modality, desc, when, age, sex, seed, rng)
        rows.append({
            "Image Data ID": r["scan_id"], "Subject": subj, "Group": r["group"], "Sex": sex,
            "Age": float(age) if pd.notna(age) else np.nan, "Visit": r["visit_code"],
            "Modality": "PET" if modality == "PT" else "SPECT", "Description": desc, "Type": "Processed",
            "Acq Date": _mdy(when.date()), "Format": "NiFTI" if fmt == "nifti" else "DCM", "Downloaded": _mdy(DOWNLOADED),
        })
    table = pd.DataFrame(rows, columns=list(COLLECTION_COLUMNS))
    table.to_csv(ppmi / "collection.csv", index=False)
    return table


def _write_nifti(path: Path, vol: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(vol, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def dicom_geometry(affine: np.ndarray, shape: tuple[int, int, int]) -> dict[str, object]:
    """Radiological axial geometry of a RAS volume: pixel[r, c] = vol[I-1-c, J-1-r, k].

    Returns the (LPS) row/column directions, pixel spacing, slice spacing and a function
    giving ImagePositionPatient of slice ``k``.
    """
    a = np.asarray(affine, dtype=float)
    row_dir = -_LPS @ a[:3, 0]  # direction of increasing column index c
    col_dir = -_LPS @ a[:3, 1]  # direction of increasing row index r
    dx, dy, dz = (float(np.linalg.norm(a[:3, i])) for i in range(3))
    ni, nj, _ = shape

    def position(k: int) -> list[float]:
        return (_LPS @ (a[:3, :3] @ np.array([ni - 1, nj - 1, k], dtype=float) + a[:3, 3])).tolist()

    return {"row_dir": (row_dir / dx).tolist(), "col_dir": (col_dir / dy).tolist(), "pixel_spacing": [dy, dx],
            "slice_spacing": dz, "position": position}


def _ds(x: float) -> str:
    """A DICOM decimal string (≤ 16 characters) for ``x``."""
    for digits in (10, 9, 8, 7):
        s = f"{x:.{digits}g}"
        if len(s) <= 16:
            return s
    raise ValueError(x)  # pragma: no cover


def _write_dicom_series(folder: Path, stem: str, vol: np.ndarray, affine: np.ndarray, subject: str, image_id: str,
                        modality: str, desc: str, when: dt.datetime, age: float, sex: str, seed: int,
                        rng: np.random.Generator) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    vol = np.asarray(vol, dtype=np.float64)
    geo = dicom_geometry(affine, vol.shape)  # type: ignore[arg-type]
    lo, hi = float(vol.min()), float(vol.max())
    intercept = _ds(lo)
    slope = _ds((hi - float(intercept)) / 65535.0 if hi > float(intercept) else 1.0)
    s, b = float(slope), float(intercept)
    q = np.clip(np.round((vol - b) / s), 0, 65535).astype(np.uint16)
    uid = lambda *parts: generate_uid(entropy_srcs=[str(seed), image_id, *map(str, parts)])  # noqa: E731
    study, series, frame = uid("study"), uid("series"), uid("frame")
    nk = vol.shape[2]
    for n, k in enumerate(rng.permutation(nk)):  # shuffled file order: readers must sort by position
        k = int(k)
        sop = uid("slice", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = _SOP_CLASS[modality], sop
        ds.Modality = modality
        ds.PatientID, ds.PatientName = subject, f"PPMI^{subject}"
        ds.PatientSex = sex if sex in ("M", "F") else "O"
        if np.isfinite(age):
            ds.PatientAge = f"{int(age):03d}Y"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = when.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = when.strftime("%H%M%S")
        ds.SeriesDescription, ds.StudyDescription = desc, "PPMI"
        ds.SeriesNumber = 1
        ds.InstanceNumber = nk - k  # numbered from the top slice down, as many scanners do
        ds.ImageOrientationPatient = [_ds(v) for v in (*geo["row_dir"], *geo["col_dir"])]  # type: ignore[misc]
        pos = geo["position"](k)  # type: ignore[operator]
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.SliceLocation = _ds(pos[2])
        ds.PixelSpacing = [_ds(v) for v in geo["pixel_spacing"]]  # type: ignore[union-attr]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(geo["slice_spacing"])  # type: ignore[arg-type]
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.Units = "CNTS" if modality == "PT" else None
        if ds.Units is None:
            del ds.Units
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pix = q[::-1, ::-1, k].T  # rows: posterior→…; columns: patient right → left
        ds.Rows, ds.Columns = int(pix.shape[0]), int(pix.shape[1])
        ds.PixelData = np.ascontiguousarray(pix).tobytes()
        ds.save_as(folder / f"{stem}_{n + 1}_{safe_name(image_id)}.dcm", enforce_file_format=True)


def write_synthetic(cohort: Cohort, out: str | Path, force: bool = False, fmt: Format | None = None,
                    preview: bool = True, seed: int = 0, extra_groups: dict[str, int] | None = None) -> Path:
    """Save ``cohort`` to ``out`` with ``preview.png`` and optional PPMI export, all in one atomic rename."""
    out = Path(out)
    with atomic_dir(out, force=force, kind="cohort") as tmp:
        cohort.save(tmp, force=True)
        if preview:
            save_preview(cohort, tmp / "preview.png")
        if fmt is not None:
            export_ppmi(cohort, tmp, fmt, seed=seed, extra_groups=extra_groups)
    cohort.path = out
    return out
