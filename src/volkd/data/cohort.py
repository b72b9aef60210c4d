"""The cohort: the on-disk dataset every volkd command reads.

A cohort directory holds ``volumes.npy`` (float32, N×D×H×W, memory-mapped on load),
``scans.csv`` (one row per scan: scan_id, subject_id, visit, label and optional columns)
and ``cohort.json`` (grid, voxel size, orientation, modality, class names, provenance,
content fingerprint and per-file content hashes, see :meth:`Cohort.verify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hashlib

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from volkd.atomic import atomic_dir, write_json
from volkd.errors import CohortChangedError, CohortError, describe_validation_error
from volkd.paths import id_problem
from volkd.provenance import provenance

REQUIRED_COLUMNS = ("scan_id", "subject_id", "visit", "label")
OPTIONAL_COLUMNS = ("age", "sex", "site", "split", "source_path")
VOLUMES_FILE, SCANS_FILE, META_FILE = "volumes.npy", "scans.csv", "cohort.json"
#: Volumes are canonical RAS+: axis 0 = x (L→R), 1 = y (P→A), 2 = z (I→S).
VIEW_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


class CohortMeta(BaseModel):
    """Metadata stored in ``cohort.json``."""

    grid_shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    orientation: str = "RAS"
    modality: str = "unknown"
    class_names: list[str] = Field(min_length=2)
    space: str = "unknown"  # e.g. "MNI" when spatially normalised to MNI space
    affine: list[list[float]] | None = None  # voxel → world (mm) of the stored grid
    provenance: dict[str, Any] = Field(default_factory=dict)
    fingerprint: str = ""
    #: SHA-256 of each file's content: ``{"volumes": …, "scans_csv": …}`` (see :meth:`Cohort.verify`).
    content: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Cohort:
    """Volumes (N×D×H×W float32), a scan table and metadata; validated on construction."""

    volumes: np.ndarray
    scans: pd.DataFrame
    meta: CohortMeta
    path: Path | None = None

    def __post_init__(self) -> None:
        self.scans = self.scans.reset_index(drop=True)
        validate(self.volumes, self.scans, self.meta, where=str(self.path or "cohort"))

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    @property
    def y(self) -> np.ndarray:
        """Integer labels (index into ``class_names``)."""
        lut = {c: i for i, c in enumerate(self.meta.class_names)}
        return self.scans["label"].astype(str).map(lut).to_numpy(dtype=np.int64)

    @property
    def subjects(self) -> np.ndarray:
        return self.scans["subject_id"].astype(str).to_numpy()

    @property
    def scan_ids(self) -> np.ndarray:
        return self.scans["scan_id"].astype(str).to_numpy()

    def subset(self, indices: np.ndarray | list[int]) -> "Cohort":
        """A new in-memory cohort holding only the scans at ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        return Cohort(np.asarray(self.volumes[idx]), self.scans.iloc[idx].copy(), self.meta.model_copy(deep=True))

    def fingerprint(self) -> str:
        """Content fingerprint: volumes, scan table (required columns) and class names."""
        return content_hashes(self.volumes, self.scans, self.meta.class_names)[0]

    def verify(self) -> None:
        """Recompute the content hashes from the data and compare them with ``cohort.json``.

        Raises :class:`CohortError` naming what changed (``volumes.npy``, ``scans.csv`` or the
        class names) since the cohort was written; a cohort without a recorded fingerprint
        (written by hand) has nothing to compare with and passes.
        """
        meta, where = self.meta, self.path or "cohort"
        if not meta.fingerprint:
            return
        fp, vol_hash = content_hashes(self.volumes, self.scans, meta.class_names)
        changed = []
        if meta.content.get("volumes") and meta.content["volumes"] != vol_hash:
            changed.append(f"{VOLUMES_FILE} (content hash {vol_hash[:12]} ≠ recorded {meta.content['volumes'][:12]})")
        if meta.content.get("scans_csv") and self.path is not None and (self.path / SCANS_FILE).is_file():
            csv_hash = file_sha256(self.path / SCANS_FILE)
            if csv_hash != meta.content["scans_csv"]:
                changed.append(f"{SCANS_FILE} (content hash {csv_hash[:12]} ≠ recorded {meta.content['scans_csv'][:12]})")
        if not changed and fp != meta.fingerprint:
            changed.append(f"the class names in {META_FILE}" if meta.content else f"{VOLUMES_FILE} or {SCANS_FILE} (this "
                           "cohort predates per-file hashes, so which one cannot be told)")
        if changed:
            raise CohortChangedError(f"{where}: {' and '.join(changed)} changed after the cohort was written (fingerprint "
                              f"{meta.fingerprint[:12]}); results made from the old content must not be mixed with the new: "
                              "restore the files, or import the scans again into a new cohort")

    # -------------------------------------------------------------------- I/O
    @classmethod
    def load(cls, path: str | Path, mmap: bool = True, verify: bool = False) -> "Cohort":
        """Load and validate a cohort directory (volumes memory-mapped by default).

        ``verify=True`` also recomputes the content fingerprint and compares it.
        """
        path = Path(path)
        if not path.is_dir():
            raise CohortError(f"{path}: not a cohort directory (expected {VOLUMES_FILE}, {SCANS_FILE}, {META_FILE})")
        for name in (VOLUMES_FILE, SCANS_FILE, META_FILE):
            if not (path / name).is_file():
                raise CohortError(f"{path / name}: missing; a cohort directory needs {VOLUMES_FILE}, {SCANS_FILE} and {META_FILE} (make one with `volkd import` or `volkd synth`)")
        meta = read_meta(path)
        try:
            volumes = np.load(path / VOLUMES_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - numpy raises many kinds here
            raise CohortError(f"{path / VOLUMES_FILE}: unreadable .npy file ({e})") from None
        try:
            scans = pd.read_csv(path / SCANS_FILE, dtype={"scan_id": str, "subject_id": str, "label": str, "split": str})
        except Exception as e:  # noqa: BLE001
            raise CohortError(f"{path / SCANS_FILE}: unreadable CSV ({e})") from None
        cohort = cls(volumes, scans, meta, path)
        if verify:
            cohort.verify()
        return cohort

    def save(self, path: str | Path, force: bool = False, **provenance_extra: Any) -> Path:
        """Write the cohort atomically to ``path`` (refuses to overwrite unless ``force``)."""
        path = Path(path)
        meta = self.meta.model_copy(deep=True)
        meta.fingerprint, vol_hash = content_hashes(self.volumes, self.scans, meta.class_names)
        if not meta.provenance:
            meta.provenance = provenance(**provenance_extra)
        with atomic_dir(path, force=force, kind="cohort") as tmp:
            out = np.lib.format.open_memmap(tmp / VOLUMES_FILE, mode="w+", dtype=np.float32, shape=self.volumes.shape)
            for i in range(0, len(self), 32):
                out[i:i + 32] = self.volumes[i:i + 32]
            out.flush()
            del out
            self.scans.to_csv(tmp / SCANS_FILE, index=False)
            meta.content = {"algorithm": "sha256", "volumes": vol_hash, "scans_csv": file_sha256(tmp / SCANS_FILE)}
            write_json(tmp / META_FILE, meta.model_dump(mode="json"))
        self.meta, self.path = meta, path
        return path

    def summary(self) -> dict[str, Any]:
        """Counts per class, subjects, visits, and an intensity summary (sampled)."""
        counts = self.scans["label"].value_counts().reindex(self.meta.class_names, fill_value=0)
        per_subject = self.scans.groupby("subject_id").size()
        take = np.linspace(0, len(self) - 1, num=min(len(self), 64)).astype(int)
        sample = np.asarray(self.volumes[np.unique(take)], dtype=np.float64)
        out: dict[str, Any] = {
            "path": str(self.path) if self.path else None,
            "n_scans": len(self),
            "n_subjects": int(per_subject.size),
            "scans_per_class": {k: int(v) for k, v in counts.items()},
            "subjects_per_class": {
                c: int(self.scans.loc[self.scans["label"] == c, "subject_id"].nunique()) for c in self.meta.class_names
            },
            "visits_per_subject": {"min": int(per_subject.min()), "max": int(per_subject.max()), "mean": float(per_subject.mean())},
            "grid_shape": list(self.meta.grid_shape),
            "voxel_size_mm": list(self.meta.voxel_size_mm),
            "modality": self.meta.modality,
            "intensity": {
                "min": float(sample.min()), "max": float(sample.max()), "mean": float(sample.mean()),
                "std": float(sample.std()), "p1": float(np.percentile(sample, 1)), "p99": float(np.percentile(sample, 99)),
                "scans_sampled": int(len(np.unique(take))),
            },
        }
        if "split" in self.scans.columns:
            out["scans_per_split"] = {str(k): int(v) for k, v in self.scans["split"].value_counts().items()}
        return out


def validate(volumes: np.ndarray, scans: pd.DataFrame, meta: CohortMeta, where: str = "cohort") -> None:
    """Check volumes, table and metadata agree; raise :class:`CohortError` naming the problem."""
    if volumes.ndim != 4:
        raise CohortError(f"{where}: volumes must be N×D×H×W (4-D), got shape {volumes.shape}")
    if volumes.dtype != np.float32:
        raise CohortError(f"{where}: volumes must be float32, got {volumes.dtype}")
    if volumes.shape[0] == 0 or len(scans) == 0:
        raise CohortError(f"{where}: empty cohort (no scans); import or synthesise at least one scan")
    missing = [c for c in REQUIRED_COLUMNS if c not in scans.columns]
    if missing:
        raise CohortError(f"{where}/{SCANS_FILE}: missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}")
    if volumes.shape[0] != len(scans):
        raise CohortError(f"{where}: {VOLUMES_FILE} holds {volumes.shape[0]} volumes but {SCANS_FILE} has {len(scans)} rows; they must match one to one")
    if tuple(volumes.shape[1:]) != tuple(meta.grid_shape):
        raise CohortError(f"{where}: volumes have grid {tuple(volumes.shape[1:])} but {META_FILE} says grid_shape {tuple(meta.grid_shape)}")
    for col in ("scan_id", "subject_id", "label"):
        if scans[col].isna().any():
            row = int(np.flatnonzero(scans[col].isna().to_numpy())[0])
            raise CohortError(f"{where}/{SCANS_FILE}: empty {col!r} in row {row + 2}")
    for col in ("scan_id", "subject_id"):
        bad = scans[col].astype(str).str.contains(_BAD_ID_CHARS, regex=True) | (scans[col].astype(str).str.strip() == "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            value = str(scans[col].iloc[row])
            raise CohortError(f"{where}/{SCANS_FILE}: {col} {value!r} in row {row + 2} cannot be used: {id_problem(value)}; "
                              "fix it in the source table and import again")
    dup = scans["scan_id"].astype(str)
    dups = dup[dup.duplicated()].unique()
    if len(dups):
        raise CohortError(f"{where}/{SCANS_FILE}: duplicate scan_id(s) {list(dups[:5])}; every scan needs a unique ID")
    unknown = sorted(set(scans["label"].astype(str)) - set(meta.class_names))
    if unknown:
        raise CohortError(f"{where}/{SCANS_FILE}: unknown label(s) {unknown[:5]}; class_names in {META_FILE} are {meta.class_names}")
    bad = _first_nonfinite(volumes)
    if bad is not None:
        raise CohortError(f"{where}/{VOLUMES_FILE}: scan {scans['scan_id'].iloc[bad]!r} (row {bad}) contains NaN or Inf voxels; fix or drop it and re-import")


#: Characters :func:`volkd.paths.id_problem` refuses in IDs (control, line breaks, surrogates, bidi controls).
_BAD_ID_CHARS = "[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]"
#: Bytes hashed per update (whole volumes, about 64 MiB).
_HASH_CHUNK_BYTES = 64 << 20


def content_hashes(volumes: np.ndarray, scans: pd.DataFrame, class_names: list[str]) -> tuple[str, str]:
    """(fingerprint, volumes hash) in one pass over the volumes.

    The volumes hash is SHA-256 of shape, dtype and bytes; the fingerprint continues that same
    stream with the scan table's required columns and the class names (so it identifies what a
    model learnt from). Volumes are read in chunks of about 64 MiB, without extra copies.
    """
    h = hashlib.sha256()
    h.update(str(volumes.shape).encode())
    h.update(str(volumes.dtype).encode())
    n = volumes.shape[0]
    per = max(1, _HASH_CHUNK_BYTES // max(1, int(np.prod(volumes.shape[1:], dtype=np.int64)) * volumes.dtype.itemsize))
    for i in range(0, n, per):
        h.update(np.ascontiguousarray(volumes[i:i + per]).data)
    vol_hash = h.hexdigest()
    h.update(scans[list(REQUIRED_COLUMNS)].astype(str).to_csv(index=False).encode())
    h.update("|".join(class_names).encode())
    return h.hexdigest(), vol_hash


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_nonfinite(volumes: np.ndarray, chunk: int = 64) -> int | None:
    for i in range(0, volumes.shape[0], chunk):
        block = np.asarray(volumes[i:i + chunk])
        finite = np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
        if not finite.all():
            return i + int(np.flatnonzero(~finite)[0])
    return None



def read_meta(path: str | Path) -> CohortMeta:
    """Only the metadata (``cohort.json``) of the cohort directory ``path``: no volume is read."""
    path = Path(path)
    if not (path / META_FILE).is_file():
        raise CohortError(f"{path / META_FILE}: missing; {path} is not a cohort directory (make one with `volkd import` or `volkd synth`)")
    try:
        return CohortMeta.model_validate_json((path / META_FILE).read_text())
    except ValidationError as e:
        raise CohortError(f"{path / META_FILE}: invalid metadata: {describe_validation_error(e, CohortMeta)}") from None
    except ValueError as e:
        raise CohortError(f"{path / META_FILE}: not valid JSON ({e})") from None
