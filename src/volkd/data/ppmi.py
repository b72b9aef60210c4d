"""PPMI downloads: the image-collection CSV and the ``Subject/Description/Date/ImageID`` tree.

A PPMI download unpacks to ``PPMI/<Subject>/<Description>/<YYYY-MM-DD_HH_MM_SS.0>/<Image Data ID>/``
holding DICOM slice files or one NIfTI file; the collection CSV that comes with it has one row
per image (``Image Data ID``, ``Subject``, ``Group``, ``Sex``, ``Age``, ``Visit``, ``Modality``,
``Description``, ``Type``, ``Acq Date``, ``Format``, ``Downloaded``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from volkd.data.readers import dicom_files, is_nifti, read_text_table
from volkd.errors import ScanImportError

REQUIRED = ("Image Data ID", "Subject", "Group", "Visit")
#: Default group → label mapping (PD vs healthy control); other groups are excluded and counted.
DEFAULT_GROUPS = {"PD": "PD", "Control": "control"}
DEFAULT_CLASSES = ["control", "PD"]
_IMAGE_ID = re.compile(r"^I\d+$")
_FIXED_CODES = {"SC": -1, "BL": 0}


def visit_code_order(code: str) -> float:
    """Sort key of a PPMI visit code: SC < BL < V01 < V02 < … ; unknown codes (ST, U01, PW…) sort last."""
    code = str(code).strip().upper()
    if code in _FIXED_CODES:
        return float(_FIXED_CODES[code])
    m = re.fullmatch(r"V(\d+)", code)
    if m:
        return float(m.group(1))
    return float("inf")


def visit_numbers(subjects: pd.Series, dates: pd.Series, codes: pd.Series) -> np.ndarray:
    """Ordered integer visit per scan: 0, 1, 2… within each subject, by acquisition date then visit code."""
    df = pd.DataFrame({"s": subjects.astype(str).to_numpy(), "d": pd.to_datetime(dates).to_numpy(),
                       "c": [visit_code_order(c) for c in codes], "n": codes.astype(str).to_numpy()})
    df = df.sort_values(["s", "d", "c", "n"], na_position="last", kind="stable")
    df["v"] = df.groupby("s").cumcount()
    return df["v"].sort_index().to_numpy(dtype=np.int64)


def read_collection(csv: str | Path) -> pd.DataFrame:
    """Read and check a PPMI image-collection CSV; parse ``Acq Date`` (M/D/YYYY)."""
    csv = Path(csv)
    df = read_text_table(csv, "CSV")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ScanImportError(f"{csv}: not a PPMI image-collection CSV: missing column(s) {missing} "
                              f"(has {list(df.columns)})")
    for col in ("Image Data ID", "Subject", "Group"):
        if (df[col] == "").any():
            row = int(np.flatnonzero(df[col] == "")[0]) + 2
            raise ScanImportError(f"{csv}: empty {col!r} in row {row}; fill it in or drop the row")
    dup = df["Image Data ID"][df["Image Data ID"].duplicated()]
    if len(dup):
        raise ScanImportError(f"{csv}: duplicate Image Data ID(s) {sorted(set(dup))[:5]}; each image needs one row")
    if "Acq Date" in df.columns:
        dates = pd.to_datetime(df["Acq Date"], format="%m/%d/%Y", errors="coerce")
        bad = df["Acq Date"][dates.isna() & (df["Acq Date"] != "")]
        if len(bad):
            raise ScanImportError(f"{csv}: column 'Acq Date' has value {bad.iloc[0]!r} in row {bad.index[0] + 2}; expected M/D/YYYY")
        df["_date"] = dates
    else:
        df["_date"] = pd.NaT
    return df


def find_image_folders(root: str | Path) -> dict[str, Path]:
    """Map ``Image Data ID`` → its folder for every ``<Subject>/<Description>/<Date>/<I…>`` under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise ScanImportError(f"{root}: PPMI folder not found")
    found: dict[str, Path] = {}
    for folder in sorted(p for p in root.glob("*/*/*/*") if p.is_dir() and _IMAGE_ID.match(p.name)):
        if folder.name in found:
            raise ScanImportError(f"{root}: image {folder.name} appears twice ({found[folder.name]} and {folder}); "
                                  "remove the duplicate download")
        found[folder.name] = folder
    return found


def image_path(folder: Path) -> Path:
    """The readable scan inside one image folder: the folder itself (DICOM) or its single NIfTI file."""
    nii = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p))
    if len(nii) > 1:
        raise ScanImportError(f"{folder}: {len(nii)} NIfTI files in one image folder; expected one")
    if nii:
        return nii[0]
    if dicom_files(folder):
        return folder
    raise ScanImportError(f"{folder}: image folder holds neither DICOM files nor a NIfTI file")


def parse_group_map(spec: str | dict[str, str] | list[str] | None) -> dict[str, str]:
    """``"SWEDD=control,Prodromal"`` → ``{"SWEDD": "control", "Prodromal": "Prodromal"}`` (name alone keeps it)."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {str(k).strip(): str(v).strip() for k, v in spec.items()}
    items = spec.split(",") if isinstance(spec, str) else [x for s in spec for x in str(s).split(",")]
    out = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, _, val = item.partition("=")
        out[key.strip()] = (val.strip() or key.strip())
    return out


def group_labels(groups: pd.Series, group_map: dict[str, str]) -> pd.Series:
    """Label per row from its Group (case-insensitive match); ``None`` where the group is excluded."""
    lut = {k.lower(): v for k, v in group_map.items()}
    return groups.map(lambda g: lut.get(str(g).strip().lower()))
