"""``import_scans``: scans (NIfTI, DICOM, NPZ/NPY, PPMI downloads) + labels → a cohort on disk.

The import is planned first (which file is which scan, with which label), then every scan is
read, reoriented to RAS+, resampled onto the target grid and written into a memory-mapped
array in a temp folder; the cohort directory appears only when everything succeeded
(``volkd.atomic.atomic_dir``). CSV rows without a file and files without a CSV row are
reported in the summary and in ``import_report.json``, never guessed.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from volkd.atomic import atomic_dir, check_output, clean_stale, probe_writable, temp_prefix, write_json, write_text
from volkd.data import ppmi
from volkd.data.atlas import mni_grid_affine
from volkd.data.cohort import Cohort, CohortMeta
from volkd.data.readers import (ARRAY_SUFFIXES, ArraySet, is_dicom_file, is_nifti, nifti_stem, read_text_table,
                                read_arrays, read_scan)
from volkd.data.resample import SPACES, coverage, resample_scan
from volkd.data.scan_checks import placed_problem, value_problem
from volkd.errors import ConfigError, ScanImportError
from volkd.locks import output_lock
from volkd.paths import id_problem
from volkd.provenance import provenance

REPORT_FILE, SKIPPED_FILE = "import_report.json", "skipped.csv"
#: Names of a "negative" class: it becomes class 0 when class names are inferred.
NEGATIVE_NAMES = {"control", "controls", "hc", "healthy", "normal", "negative", "0", "no", "false"}
_MODALITY = {"NM": "spect", "SPECT": "spect", "PT": "pet", "PET": "pet", "MR": "mri", "MRI": "mri", "CT": "ct"}
_EXTRA_COLUMNS = ("age", "sex", "site")
#: An MNI-space scan must cover at least this fraction of the MNI field of view.
MIN_MNI_COVERAGE = 0.5


@dataclass
class ScanEntry:
    """One planned scan: where it is read from and its row in ``scans.csv``."""

    scan_id: str
    subject_id: str
    visit: int
    label: str
    path: Path | None = None  # scan file/folder (None for arrays)
    array: tuple[ArraySet, int] | None = None  # (array file, index) for NPZ/NPY volumes
    extra: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # a known reason this scan cannot be imported

    @property
    def where(self) -> str:
        """The scan's file/folder (or ``array.npz[index]``), for messages and ``source_path``."""
        return str(self.path if self.path is not None else f"{self.array[0].source}[{self.array[1]}]")  # type: ignore[index]


@dataclass
class ImportSummary:
    """What an import did: counts, and everything it left out (with reasons)."""

    source: str
    kind: str  # "scans", "arrays", "ppmi" or "bids"
    n_candidates: int = 0
    n_imported: int = 0
    scans_per_class: dict[str, int] = field(default_factory=dict)
    subjects_per_class: dict[str, int] = field(default_factory=dict)
    scans_per_split: dict[str, int] = field(default_factory=dict)
    missing_files: list[dict[str, str]] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)  # found but left out on purpose (path, reason)
    labels_from: str = "CSV"  # what the labels came from, for the summary's wording
    nonfinite_zeroed: dict[str, int] = field(default_factory=dict)
    grid_shape: list[int] = field(default_factory=list)
    space: str = ""
    voxel_size_mm: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what ``import_report.json`` holds)."""
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [f"imported {self.n_imported} of {self.n_candidates} scans from {self.source} ({self.kind})",
               "per class: " + ", ".join(f"{k} {v} scans / {self.subjects_per_class.get(k, 0)} subjects"
                                         for k, v in self.scans_per_class.items())]
        if self.scans_per_split:
            out.append("per split: " + ", ".join(f"{k} {v}" for k, v in self.scans_per_split.items()))
        if self.excluded:
            out.append("excluded (group/label not mapped): " + ", ".join(f"{k} {v}" for k, v in self.excluded.items()))
        if self.missing_files:
            ids = ", ".join(m["scan_id"] or m["subject_id"] for m in self.missing_files[:5])
            out.append(f"{len(self.missing_files)} {self.labels_from} row(s) without a file (not imported): {ids}"
                       + (" …" if len(self.missing_files) > 5 else ""))
        if self.orphan_files:
            out.append(f"{len(self.orphan_files)} file(s) without a {self.labels_from} row (not imported): {', '.join(self.orphan_files[:3])}"
                       + (" …" if len(self.orphan_files) > 3 else ""))
        if self.ignored:
            out.append(f"{len(self.ignored)} file(s) not imported ({SKIPPED_FILE} says why): {self.ignored[0]['path']}: "
                       f"{self.ignored[0]['reason']}" + (" …" if len(self.ignored) > 1 else ""))
        if self.skipped:
            out.append(f"{len(self.skipped)} bad file(s) skipped: {self.skipped[0]['path']}: {self.skipped[0]['reason']}"
                       + (" …" if len(self.skipped) > 1 else ""))
        if self.nonfinite_zeroed:
            out.append(f"{len(self.nonfinite_zeroed)} scan(s) had NaN/Inf voxels, set to 0")
        out += self.notes
        return out


class ImportResult(NamedTuple):
    """``import_scans``'s result: the cohort written to disk and the import summary."""

    cohort: Cohort
    summary: ImportSummary


# -------------------------------------------------------------------------- discovery
def discover(source: str | Path) -> tuple[list[Path], list[Path]]:
    """Scans (NIfTI files, DICOM series folders, multi-frame files) and array files under ``source``."""
    source = Path(source)
    if not source.exists():
        raise ScanImportError(f"{source}: source not found")
    if source.is_file():
        if source.name.lower().endswith(ARRAY_SUFFIXES):
            return [], [source]
        if is_nifti(source) or is_dicom_file(source):
            return [source], []
        raise ScanImportError(f"{source}: not a NIfTI, DICOM, NPZ or NPY file")
    scans: list[Path] = []
    arrays: list[Path] = []
    for root, dirs, files in os.walk(source):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d / "cohort.json").is_file())  # skip cohorts
        names = sorted(f for f in files if not f.startswith("."))
        scans += [here / f for f in names if is_nifti(here / f)]
        arrays += [here / f for f in names if f.lower().endswith(ARRAY_SUFFIXES)]
        if any(is_dicom_file(here / f) for f in names):
            scans.append(here)
    if scans and arrays:
        raise ScanImportError(f"{source}: holds both scan files and NPZ/NPY arrays ({arrays[0]}); import them separately")
    if not scans and not arrays:
        raise ScanImportError(f"{source}: no NIfTI (.nii/.nii.gz), DICOM, NPZ or NPY files found")
    return scans, arrays


def scan_id_of(path: Path) -> str:
    """Scan ID of a file or folder: NIfTI name without extension, DICOM folder/file name."""
    return nifti_stem(path) if path.is_file() and is_nifti(path) else (path.stem if path.is_file() else path.name)


def _index_by_id(paths: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        sid = scan_id_of(p)
        if sid in out:
            raise ScanImportError(f"two scans share the ID {sid!r}: {out[sid]} and {p}; rename one (IDs come from file/folder names)")
        out[sid] = p
    return out


# ---------------------------------------------------------------------------- labels
def parse_map(spec: str | dict[str, str] | None) -> dict[str, str]:
    """``"PD=PD,Control=control"`` → ``{"PD": "PD", "Control": "control"}``."""
    return ppmi.parse_group_map(spec)


def order_classes(labels: list[str]) -> list[str]:
    """Class names inferred from labels: the negative class (control/normal/0…) first, then sorted."""
    uniq = sorted(set(labels), key=lambda s: (s.lower() not in NEGATIVE_NAMES, _natural(s)))
    return uniq


def _natural(s: str) -> tuple:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def map_labels(raw: pd.Series, label_map: dict[str, str], excluded: Counter) -> pd.Series:
    """Apply ``label_map`` (exact, then case-insensitive); unmapped values → None and counted."""
    if not label_map:
        return raw.astype(str)
    lower = {k.lower(): v for k, v in label_map.items()}
    out = raw.astype(str).map(lambda v: label_map.get(v, lower.get(v.lower())))
    for v in raw[out.isna()].astype(str):
        excluded[v] += 1
    return out


def _visits(df: pd.DataFrame, subj: pd.Series, col: str | None, where: str, notes: list[str]) -> tuple[np.ndarray, pd.Series | None]:
    if col is not None and col not in df.columns and col != "visit":
        raise ScanImportError(f"{where}: no column {col!r} (set it with --visit-col); columns are {list(df.columns)}")
    if col is None or col not in df.columns:
        notes.append(f"no visit column {col!r} in {where}: visit = 0 for every scan")
        return np.zeros(len(df), dtype=np.int64), None
    raw = df[col].astype(str).str.strip()
    num = pd.to_numeric(raw, errors="coerce")
    if num.notna().all() and (num == num.round()).all():
        return num.to_numpy(dtype=np.int64), None
    dates = df["_date"] if "_date" in df.columns else pd.Series(pd.NaT, index=df.index)
    return ppmi.visit_numbers(subj, dates, raw), raw


def resolve_classes(labels: list[str], class_names: list[str] | None, where: str) -> list[str]:
    """Class names: ``class_names`` (every label must be one) or inferred by :func:`order_classes` (≥ 2 needed)."""
    if class_names:
        unknown = sorted(set(labels) - set(class_names))
        if unknown:
            raise ScanImportError(f"{where}: label(s) {unknown[:5]} are not among class names {class_names}; "
                                  "pass --map to map them or --classes to name them")
        return list(class_names)
    names = order_classes(labels)
    if len(names) < 2:
        raise ScanImportError(f"{where}: only one class ({names}) among the imported scans; a cohort needs at least two")
    return names


def extra_columns(df: pd.DataFrame, i: Any) -> dict[str, Any]:
    """The ``age``/``sex``/``site`` cells (any case) of row ``i`` of a labels table, age as a number."""
    out: dict[str, Any] = {}
    lower = {c.lower(): c for c in df.columns}
    for name in _EXTRA_COLUMNS:
        if name in lower:
            v = df.at[i, lower[name]]
            if name == "age":
                v = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
            out[name] = v
    return out


def plan_from_csv(found: dict[str, Path], labels_csv: str | Path, id_column: str, subject_column: str,
                  visit_column: str | None, label_column: str, label_map: dict[str, str],
                  class_names: list[str] | None, summary: ImportSummary) -> tuple[list[ScanEntry], list[str]]:
    """Match found scans to labels CSV rows by scan ID; report rows without files and files without rows."""
    labels_csv = Path(labels_csv)
    df = read_text_table(labels_csv, "labels CSV")
    for opt, col in (("--id-col", id_column), ("--subject-col", subject_column), ("--label-col", label_column)):
        if col not in df.columns:
            raise ScanImportError(f"{labels_csv}: no column {col!r} (set it with {opt}); columns are {list(df.columns)}")
    ids = df[id_column]
    for col in (id_column, subject_column, label_column):
        if (df[col] == "").any():
            raise ScanImportError(f"{labels_csv}: empty {col!r} in row {int(np.flatnonzero(df[col] == '')[0]) + 2}; "
                                  "fill it in or drop the row")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ScanImportError(f"{labels_csv}: duplicate {id_column!r} value(s) {sorted(set(dup))[:5]}; each scan needs one row")
    excluded: Counter = Counter()
    labels = map_labels(df[label_column], label_map, excluded)
    visits, codes = _visits(df, df[subject_column], visit_column, str(labels_csv), summary.notes)
    keep = labels.notna().to_numpy()
    summary.excluded = dict(excluded)
    in_csv = set(ids)
    summary.orphan_files = [str(p) for sid, p in sorted(found.items()) if sid not in in_csv]
    entries = []
    for i in np.flatnonzero(keep):
        idx = df.index[i]
        sid = ids.iloc[i]
        if sid not in found:
            summary.missing_files.append({"scan_id": sid, "subject_id": df[subject_column].iloc[i]})
            continue
        extra = extra_columns(df, idx)
        if codes is not None:
            extra["visit_code"] = codes.iloc[i]
        entries.append(ScanEntry(sid, df[subject_column].iloc[i], int(visits[i]), str(labels.iloc[i]), path=found[sid], extra=extra))
    names = resolve_classes([e.label for e in entries] or list(labels.dropna()), class_names, str(labels_csv))
    return entries, names


def plan_ppmi(root: str | Path, collection_csv: str | Path, group_map: dict[str, str] | None,
              include_groups: dict[str, str] | None, class_names: list[str] | None,
              summary: ImportSummary) -> tuple[list[ScanEntry], list[str], str | None]:
    """Plan a PPMI download: rows of the collection CSV ↔ ``Subject/Description/Date/ImageID`` folders."""
    root = Path(root)
    df = ppmi.read_collection(collection_csv)
    folders = ppmi.find_image_folders(root)
    if not folders and (root / "PPMI").is_dir():
        root = root / "PPMI"
        folders = ppmi.find_image_folders(root)
    gmap = dict(group_map or ppmi.DEFAULT_GROUPS)
    gmap.update(include_groups or {})
    labels = ppmi.group_labels(df["Group"], gmap)
    excluded = df["Group"][labels.isna()].value_counts()
    summary.excluded = {str(k): int(v) for k, v in excluded.items()}
    summary.orphan_files = [str(p) for iid, p in sorted(folders.items()) if iid not in set(df["Image Data ID"])]
    visits = ppmi.visit_numbers(df["Subject"], df["_date"], df["Visit"])
    entries = []
    for i in np.flatnonzero(labels.notna().to_numpy()):
        row = df.iloc[i]
        iid = row["Image Data ID"]
        folder = folders.get(iid)
        if folder is None:
            summary.missing_files.append({"scan_id": iid, "subject_id": row["Subject"]})
            continue
        extra = extra_columns(df, df.index[i])
        extra["visit_code"] = row["Visit"]
        entry = ScanEntry(iid, row["Subject"], int(visits[i]), str(labels.iloc[i]), path=folder, extra=extra)
        subj_folder = folder.relative_to(root).parts[0]
        if subj_folder != row["Subject"]:
            entry.problem = f"image folder is under subject {subj_folder} but the collection CSV says subject {row['Subject']}"
        else:
            try:
                entry.path = ppmi.image_path(folder)  # the folder (DICOM) or its NIfTI file
            except ScanImportError as e:
                entry.problem = str(e).removeprefix(f"{folder}: ")
        entries.append(entry)
    default = [c for c in ppmi.DEFAULT_CLASSES if c in set(gmap.values())] if group_map is None else []
    default += [v for v in dict.fromkeys(gmap.values()) if v not in default]
    names = list(class_names) if class_names else default
    resolve_classes([e.label for e in entries], names, str(collection_csv))
    mods = {ppmi_modality(m) for m in df.loc[labels.notna(), "Modality"]} if "Modality" in df.columns else set()
    return entries, names, (mods.pop() if len(mods) == 1 else None)


def ppmi_modality(value: str) -> str:
    """PPMI/DICOM modality string → volkd's (``SPECT``/``NM`` → ``spect``, ``PET``/``PT`` → ``pet``…)."""
    return _MODALITY.get(str(value).strip().upper(), str(value).strip().lower() or "unknown")


def plan_arrays(arrays: list[Path], label_map: dict[str, str], class_names: list[str] | None,
                summary: ImportSummary, stack_2d: bool = False) -> tuple[list[ScanEntry], list[str]]:
    """Plan NPZ/NPY volumes whose labels are in the file (MedMNIST layout or ``images``/``labels``)."""
    entries: list[ScanEntry] = []
    raw_labels: list[int | str] = []
    sets = [read_arrays(p, stack_2d) for p in arrays]
    for s in sets:
        if s.labels is None:
            raise ScanImportError(f"{s.source}: array file has no labels; store them as 'labels' in an NPZ "
                                  "or pass --labels CSV with scan IDs "
                                  f"({s.scan_ids[0]!r}, …)")
        raw_labels += list(s.labels)
    is_int = all(np.issubdtype(type(v), np.integer) or isinstance(v, int) for v in raw_labels)
    n_cls = int(max(raw_labels)) + 1 if is_int else 0
    if label_map:
        names = None
    elif class_names and is_int:
        if len(class_names) < n_cls:
            raise ScanImportError(f"{arrays[0]}: labels go up to {n_cls - 1} but only {len(class_names)} class names were given")
        names = list(class_names)
    elif is_int:
        names = [str(i) for i in range(max(n_cls, 2))]
    else:
        names = None
    excluded: Counter = Counter()
    for s in sets:
        for k, (sid, lab) in enumerate(zip(s.scan_ids, s.labels)):  # type: ignore[arg-type]
            raw = str(int(lab)) if is_int else str(lab)
            if label_map:
                label = label_map.get(raw)
                if label is None:
                    excluded[raw] += 1
                    continue
            else:
                label = names[int(lab)] if names else raw  # type: ignore[index]
            extra = {"split": s.splits[k]} if s.splits else {}
            entries.append(ScanEntry(sid, sid, 0, label, array=(s, k), extra=extra))
    summary.excluded = dict(excluded)
    if any(s.splits for s in sets):
        summary.notes.append("MedMNIST layout: official split kept in the 'split' column; one volume per subject "
                             "(subject_id = scan_id); orientation unknown")
    final = names if names and not label_map else resolve_classes([e.label for e in entries], class_names, str(arrays[0]))
    return entries, final


def plan_arrays_with_csv(arrays: list[Path], stack_2d: bool = False, **kw: Any) -> tuple[list[ScanEntry], list[str]]:
    """Plan NPY/NPZ volumes labelled by a CSV keyed on their scan IDs (``<file>_<index>``)."""
    sets = [read_arrays(p, stack_2d) for p in arrays]
    by_id: dict[str, tuple[ArraySet, int]] = {}
    for s in sets:
        for k, sid in enumerate(s.scan_ids):
            if sid in by_id:
                raise ScanImportError(f"two volumes share the ID {sid!r} ({by_id[sid][0].source}, {s.source})")
            by_id[sid] = (s, k)
    fake = {sid: Path(f"{s.source}[{k}]") for sid, (s, k) in by_id.items()}
    entries, names = plan_from_csv(fake, **kw)
    for e in entries:
        e.array, e.path = by_id[e.scan_id], None
        if by_id[e.scan_id][0].splits:
            e.extra["split"] = by_id[e.scan_id][0].splits[by_id[e.scan_id][1]]  # type: ignore[index]
    return entries, names


# ------------------------------------------------------------------------------ import
def import_scans(
    source: str | Path,
    out: str | Path,
    labels_csv: str | Path | None = None,
    id_column: str = "scan_id",
    subject_column: str = "subject_id",
    visit_column: str | None = "visit",
    label_column: str = "label",
    label_map: dict[str, str] | str | None = None,
    class_names: list[str] | None = None,
    target_grid: tuple[int, int, int] | int | None = (64, 64, 64),
    space: str | None = None,
    crop: bool = False,
    skip_bad: bool = False,
    force: bool = False,
    modality: str | None = None,
    ppmi_csv: str | Path | None = None,
    include_groups: dict[str, str] | str | None = None,
    order: int = 1,
    stack_2d: bool = False,
) -> ImportResult:
    """Import scans from ``source`` into a new cohort at ``out``; returns the cohort and a summary.

    ``space`` is ``mni`` (default for NIfTI/DICOM) or ``fov`` (the only choice for arrays);
    ``target_grid=None`` keeps the inputs' own grid (they must all agree). ``force`` replaces only
    an existing cohort (never the source, a folder holding it, or a folder of other files);
    ``stack_2d`` reads a 3-D array as one volume (else refused: N 2-D images?).
    """
    out = Path(out)
    sources = [p for p in (source, labels_csv, ppmi_csv) if p is not None]
    check_output(out, force, "cohort", sources)
    probe_writable(out)
    label_map = parse_map(label_map)
    include = parse_map(include_groups)
    _grid(target_grid)  # a bad grid fails before any planning
    summary = ImportSummary(source=str(source), kind="scans")
    ppmi_mod = None
    if ppmi_csv is not None:
        summary.kind = "ppmi"
        entries, names, ppmi_mod = plan_ppmi(source, ppmi_csv, label_map or None, include, class_names, summary)
        summary.n_candidates = len(entries) + len(summary.orphan_files)
    else:
        if include:
            raise ConfigError("--include-groups applies to PPMI imports only (with --ppmi-csv); use --map for a labels CSV")
        scans, arrays = discover(source)
        csv_kw = dict(labels_csv=labels_csv, id_column=id_column, subject_column=subject_column, visit_column=visit_column,
                      label_column=label_column, label_map=label_map, class_names=class_names, summary=summary)
        if arrays:
            summary.kind = "arrays"
            entries, names = (plan_arrays_with_csv(arrays, stack_2d=stack_2d, **csv_kw) if labels_csv
                              else plan_arrays(arrays, label_map, class_names, summary, stack_2d))
        else:
            if labels_csv is None:
                raise ScanImportError(f"{source}: scan files need labels: pass --labels CSV (columns set by --id-col, "
                                      "--subject-col, --visit-col, --label-col) or --ppmi-csv for a PPMI download")
            entries, names = plan_from_csv(_index_by_id(scans), **csv_kw)  # type: ignore[arg-type]
        summary.n_candidates = len(entries) + len(summary.orphan_files)
    return import_planned(entries, names, summary, out, target_grid=target_grid, space=space, crop=crop, skip_bad=skip_bad, force=force,
                          modality=modality or ppmi_mod, order=order,
                          inputs={"labels_csv": _resolved(labels_csv), "ppmi_csv": _resolved(ppmi_csv)}, sources=sources)


def _resolved(path: str | Path | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def import_planned(entries: list[ScanEntry], names: list[str], summary: ImportSummary, out: str | Path,
                   target_grid: tuple[int, int, int] | int | None = (64, 64, 64), space: str | None = None, crop: bool = False, skip_bad: bool = False,
                   force: bool = False, modality: str | None = None, order: int = 1,
                   inputs: dict[str, Any] | None = None, sources: list[Any] | tuple[Any, ...] = ()) -> ImportResult:
    """Read, place and write planned scans as a cohort at ``out`` (the shared second half of every import).

    ``summary.source``/``summary.kind`` say where the plan came from; ``inputs`` (label files, options
    of the planner) go into the cohort's provenance. ``space`` defaults to ``fov`` for arrays, else ``mni``.
    ``sources`` (the files and folders read) are never replaced, whatever ``force``; IDs no table can
    hold are refused; ``out`` is locked while the scans are read and written (:mod:`volkd.locks`).
    """
    out = Path(out)
    sources = [summary.source, *sources]
    check_output(out, force, "cohort", sources)
    grid = _grid(target_grid)
    source = summary.source
    is_arrays = summary.kind == "arrays"
    space = space or ("fov" if is_arrays else "mni")
    if space not in SPACES:
        raise ConfigError(f"--space {space!r} unknown; choose one of {list(SPACES)}")
    if crop and space == "mni":
        raise ConfigError("--crop applies to --space fov only: in MNI space the grid is the fixed MNI field of view")
    if is_arrays and space == "mni":
        raise ConfigError("--space mni needs scans with an affine (NIfTI/DICOM); NPZ/NPY arrays are resampled with --space fov")
    if not entries:
        raise ScanImportError(f"{source}: nothing to import. " + " ".join(summary.lines()[2:]))
    _check_ids(entries, source)
    probe_writable(out)
    with output_lock(out):
        check_output(out, force, "cohort", sources)  # again under the lock: the folder may have changed
        clean_stale(out, held=True)
        return _write_planned(entries, names, summary, out, grid, space, crop, skip_bad, force, modality, order,
                              inputs or {}, sources)


def _check_ids(entries: list[ScanEntry], source: Any) -> None:
    """Refuse IDs no table can hold faithfully (control characters, …); see :mod:`volkd.paths`."""
    for e in entries:
        for what, value in (("scan ID", e.scan_id), ("subject ID", e.subject_id)):
            problem = id_problem(str(value))
            if problem:
                raise ScanImportError(f"{source}: {what} {value!r} ({e.where}) cannot be used: {problem}; "
                                      "fix it in the source table and import again")


def _write_planned(entries: list[ScanEntry], names: list[str], summary: ImportSummary, out: Path,
                   grid: tuple[int, int, int] | None, space: str, crop: bool, skip_bad: bool, force: bool,
                   modality: str | None, order: int, inputs: dict[str, Any], sources: list[Any]) -> ImportResult:
    source = summary.source
    is_arrays = summary.kind == "arrays"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temp_prefix(out, "import"), dir=out.parent) as work:
        volumes, rows, affines, modalities = _load_all(entries, grid, space, crop, skip_bad, order, Path(work), summary)
        if not rows:
            raise ScanImportError(f"{source}: every scan was skipped as bad; see the reasons: "
                                  + "; ".join(f"{s['path']}: {s['reason']}" for s in summary.skipped[:3]))
        scans_df = pd.DataFrame(rows)
        meta = _meta(scans_df, names, affines, volumes.shape[1:], space, is_arrays, modality,
                     modalities, summary, source, inputs, crop, order, volumes, grid)
        cohort = Cohort(volumes, scans_df, meta)
        _fill_counts(summary, cohort)
        with atomic_dir(out, force=force, kind="cohort", sources=sources) as tmp:
            cohort.save(tmp, force=True)
            write_json(tmp / REPORT_FILE, summary.to_dict())
            if skip_bad or summary.ignored:
                write_text(tmp / SKIPPED_FILE, _skipped_csv(summary.skipped + summary.ignored))
        del cohort, volumes
    return ImportResult(Cohort.load(out), summary)


def _grid(target: tuple[int, int, int] | int | None) -> tuple[int, int, int] | None:
    if target is None:
        return None
    g = (int(target),) * 3 if isinstance(target, (int, np.integer)) else tuple(int(x) for x in target)
    if len(g) != 3 or min(g) < 2:
        raise ConfigError(f"target grid {target!r} must be three sizes ≥ 2 (e.g. 64 or 64,64,64)")
    return g  # type: ignore[return-value]


def _read(entry: ScanEntry) -> tuple[np.ndarray, np.ndarray, str]:
    if entry.problem:
        raise ScanImportError(f"{entry.where}: {entry.problem}")
    if entry.array is not None:
        s, k = entry.array
        return np.asarray(s.images[k], dtype=np.float32), np.eye(4), ""
    assert entry.path is not None
    vol = read_scan(entry.path)
    return vol.data, vol.affine, str(vol.info.get("modality", ""))


def _load_all(entries: list[ScanEntry], grid: tuple[int, int, int] | None, space: str, crop: bool, skip_bad: bool,
              order: int, work: Path, summary: ImportSummary) -> tuple[np.ndarray, list[dict], list[np.ndarray], set[str]]:
    volumes: np.ndarray | None = None
    rows: list[dict[str, Any]] = []
    affines: list[np.ndarray] = []
    modalities: set[str] = set()
    for entry in entries:
        try:
            data, affine, mod = _read(entry)
            shape = grid or data.shape
            if volumes is not None and tuple(shape) != volumes.shape[1:]:
                raise ScanImportError(f"{entry.where}: grid {tuple(data.shape)} differs from the first scan's "
                                      f"{volumes.shape[1:]}; pass a target grid (--grid 64) to resample all scans")
            problem = value_problem(data, crop)
            if problem:
                raise ScanImportError(f"{entry.where}: {problem}")
            bad = ~np.isfinite(data)
            if bad.any():
                summary.nonfinite_zeroed[entry.scan_id] = int(bad.sum())
                data = np.where(bad, 0.0, data).astype(np.float32)
            if space == "mni":
                covered = coverage(data.shape, affine, shape, mni_grid_affine(shape))
                if covered < MIN_MNI_COVERAGE:
                    raise ScanImportError(
                        f"{entry.where}: the scan covers {covered:.0%} of the MNI field of view; it does not look "
                        "spatially normalised to MNI space (check its affine, or import native-space scans with --space fov)")
            vol, where = resample_scan(data, affine, shape, space, crop, order)  # type: ignore[arg-type]
            problem = placed_problem(vol)
            if problem:
                raise ScanImportError(f"{entry.where}: {problem}")
        except ScanImportError as e:
            if not skip_bad:
                raise
            summary.skipped.append({"path": entry.where, "reason": str(e).removeprefix(f"{entry.where}: ")})
            continue
        if volumes is None:
            volumes = np.lib.format.open_memmap(work / "volumes.npy", mode="w+", dtype=np.float32, shape=(len(entries), *shape))
        volumes[len(rows)] = vol
        affines.append(where.affine)
        if mod:
            modalities.add(mod)
        row = {"scan_id": entry.scan_id, "subject_id": entry.subject_id, "visit": entry.visit, "label": entry.label}
        row.update(entry.extra)
        row["source_path"] = entry.where
        rows.append(row)
    if volumes is None:
        return np.zeros((0, 1, 1, 1), np.float32), rows, affines, modalities
    return volumes[: len(rows)], rows, affines, modalities


def _meta(scans: pd.DataFrame, names: list[str], affines: list[np.ndarray], shape: tuple[int, ...], space: str,
          is_arrays: bool, modality: str | None, modalities: set[str], summary: ImportSummary, source: Any,
          inputs: dict[str, Any], crop: bool, order: int, volumes: np.ndarray,
          grid: tuple[int, int, int] | None) -> CohortMeta:
    same = all(np.allclose(a, affines[0], atol=1e-4) for a in affines)
    vox = np.mean([np.linalg.norm(a[:3, :3], axis=0) for a in affines], axis=0)
    if not same:
        v = np.array([np.linalg.norm(a[:3, :3], axis=0) for a in affines])
        for ax, name in enumerate("xyz"):
            scans[f"voxel_{name}_mm"] = np.round(v[:, ax], 4)
        summary.notes.append("scans have different fields of view: per-scan voxel sizes are in scans.csv "
                             "(voxel_x/y/z_mm); cohort.json's affine is empty and voxel_size_mm is their mean")
    mods = {_MODALITY.get(m.upper(), m.lower()) for m in modalities}
    mod = modality or (mods.pop() if len(mods) == 1 else "unknown")
    cohort_space = "unknown" if is_arrays else ("MNI" if space == "mni" else "native")
    summary.grid_shape, summary.space, summary.voxel_size_mm = [int(s) for s in shape], cohort_space, [float(v) for v in vox]
    prov = provenance(
        source=str(Path(source).resolve()), **inputs,
        options={"target_grid": list(grid) if grid else None, "space": space, "crop": crop, "interpolation_order": order,
                 "antialias": "gaussian, sigma = (zoom - 1) / 2 source voxels"},
        source_paths=f"scans.csv column source_path ({len(scans)} scans)",
    )
    return CohortMeta(
        grid_shape=tuple(int(s) for s in shape), voxel_size_mm=tuple(float(v) for v in vox),
        orientation="unknown" if is_arrays else "RAS", modality=mod, class_names=list(names), space=cohort_space,
        affine=None if (is_arrays or not same) else np.asarray(affines[0]).tolist(), provenance=prov,
        extra={"import": {"kind": summary.kind, "n_candidates": summary.n_candidates, "excluded": summary.excluded,
                          "n_missing_files": len(summary.missing_files), "n_orphan_files": len(summary.orphan_files),
                          "n_skipped": len(summary.skipped), "report": REPORT_FILE}},
    )


def _fill_counts(summary: ImportSummary, cohort: Cohort) -> None:
    s = cohort.scans
    summary.n_imported = len(cohort)
    summary.scans_per_class = {c: int((s["label"] == c).sum()) for c in cohort.class_names}
    summary.subjects_per_class = {c: int(s.loc[s["label"] == c, "subject_id"].nunique()) for c in cohort.class_names}
    if "split" in s.columns:
        summary.scans_per_split = {k: int(v) for k, v in s["split"].value_counts().reindex(["train", "val", "test"]).dropna().items()}


def _skipped_csv(skipped: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["path", "reason"], lineterminator="\n")
    w.writeheader()
    w.writerows(skipped)
    return buf.getvalue()
