"""Subject-level train/val/test splits and the leakage guard.

Every split is made over *subjects*, never over scans: all scans of a subject land in the
same partition. Stratification is by the subject's label (a subject whose scans carry
different labels is an error). The random partitions come from scikit-learn's group-aware
splitters (:class:`~sklearn.model_selection.GroupShuffleSplit`,
:class:`~sklearn.model_selection.StratifiedGroupKFold`). :func:`check_no_leakage` is the
guard every train/evaluate entry point calls.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from volkd.atomic import check_can_write, write_json
from volkd.data.cohort import Cohort
from volkd.errors import LeakageError, VolkdError
from volkd.provenance import provenance

PARTITIONS = ("train", "val", "test")
PROTOCOLS = ("holdout", "kfold", "official")
SPLITS_FORMAT = "volkd-splits"
SPLITS_VERSION = 1
_OFFICIAL_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class SplitError(VolkdError):
    """A split, a split file or a split protocol's parameters are invalid."""


@dataclass
class Split:
    """One repeat (or fold): scan indices into the cohort for train, val and test.

    ``seed`` is this repeat's own seed (derived from the protocol seed and the repeat), so
    training code can seed the repeat from it. ``scan_ids`` / ``subject_ids`` map each
    partition to its IDs; they let a split file be checked against a cohort.
    """

    repeat: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    kind: str
    scan_ids: dict[str, list[str]] = field(default_factory=dict)
    subject_ids: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in PARTITIONS:
            setattr(self, part, np.asarray(getattr(self, part), dtype=np.int64).reshape(-1))

    def partition(self, name: str) -> np.ndarray:
        """Scan indices of ``name`` (``train``, ``val`` or ``test``)."""
        if name not in PARTITIONS:
            raise SplitError(f"unknown partition {name!r}; expected one of {list(PARTITIONS)}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: indices, scan IDs and subject IDs per partition, seed, kind."""
        return {
            "repeat": int(self.repeat),
            "seed": int(self.seed),
            "kind": self.kind,
            **{p: [int(i) for i in getattr(self, p)] for p in PARTITIONS},
            "scan_ids": {p: list(v) for p, v in self.scan_ids.items()},
            "subject_ids": {p: list(v) for p, v in self.subject_ids.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Split":
        """Inverse of :meth:`to_dict` (raises :class:`SplitError` naming a missing field)."""
        missing = [k for k in ("repeat", "seed", "kind", *PARTITIONS) if k not in d]
        if missing:
            raise SplitError(f"split entry is missing field(s) {missing}; was the file written by `volkd split`?")
        return cls(
            repeat=int(d["repeat"]), train=np.asarray(d["train"], dtype=np.int64),
            val=np.asarray(d["val"], dtype=np.int64), test=np.asarray(d["test"], dtype=np.int64),
            seed=int(d["seed"]), kind=str(d["kind"]),
            scan_ids={k: [str(x) for x in v] for k, v in d.get("scan_ids", {}).items()},
            subject_ids={k: [str(x) for x in v] for k, v in d.get("subject_ids", {}).items()},
        )


# --------------------------------------------------------------------------- helpers
def subject_labels(cohort: Cohort) -> tuple[np.ndarray, np.ndarray]:
    """Unique subject IDs (sorted) and each subject's integer label.

    Raises :class:`SplitError` naming subjects whose scans carry different labels.
    """
    subj, y = cohort.subjects, cohort.y
    uniq, inv = np.unique(subj, return_inverse=True)
    lo = np.full(len(uniq), np.iinfo(np.int64).max)
    hi = np.full(len(uniq), -1)
    np.minimum.at(lo, inv, y)
    np.maximum.at(hi, inv, y)
    mixed = uniq[lo != hi]
    if len(mixed):
        raise SplitError(
            f"{_where(cohort)}: subject(s) {list(mixed[:5])}{' …' if len(mixed) > 5 else ''} have scans with "
            "different labels; stratified subject-level splits need one label per subject (fix scans.csv)"
        )
    return uniq, lo


def _where(cohort: Cohort) -> str:
    return str(cohort.path) if cohort.path else "cohort"


def _repeat_seed(seed: int, repeat: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1)[0])


def _make_split(cohort: Cohort, repeat: int, parts: dict[str, np.ndarray], seed: int, kind: str) -> Split:
    ids, subj = cohort.scan_ids, cohort.subjects
    parts = {p: np.sort(np.asarray(parts[p], dtype=np.int64)) for p in PARTITIONS}
    return Split(
        repeat=repeat, seed=seed, kind=kind, **parts,
        scan_ids={p: ids[parts[p]].tolist() for p in PARTITIONS},
        subject_ids={p: sorted(set(subj[parts[p]].tolist())) for p in PARTITIONS},
    )


def _validate_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3:
        raise SplitError(f"fractions must be three numbers (train, val, test), got {list(fractions)}")
    if any(not np.isfinite(f) or f <= 0 for f in fr):
        raise SplitError(f"fractions must each be > 0, got {list(fr)} (e.g. 0.6,0.2,0.2)")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise SplitError(f"fractions must sum to 1, got {list(fr)} (sum {sum(fr):.4g})")
    return fr  # type: ignore[return-value]


def _group_shuffle(scan_idx: np.ndarray, groups: np.ndarray, n_held: int, rs: int) -> tuple[np.ndarray, np.ndarray]:
    """Split scans ``scan_idx`` by subject with GroupShuffleSplit: (rest, ``n_held`` subjects' scans)."""
    gss = GroupShuffleSplit(n_splits=1, test_size=n_held, random_state=rs)
    try:
        rest, held = next(gss.split(scan_idx, groups=groups[scan_idx]))
    except ValueError as e:
        raise SplitError(f"cannot hold out {n_held} of {len(np.unique(groups[scan_idx]))} subjects ({e}); "
                         "use more subjects or other fractions") from None
    return scan_idx[rest], scan_idx[held]


def _held_counts(n_per_class: np.ndarray, fraction: float) -> np.ndarray:
    """Subjects to hold out per class: proportional, summing to round(fraction × total).

    Largest-remainder apportionment, at least one held and one kept per class.
    """
    ideal = fraction * n_per_class
    held = np.floor(ideal).astype(np.int64)
    extra = int(round(fraction * n_per_class.sum())) - int(held.sum())
    order = np.argsort(-(ideal - held), kind="stable")
    held[order[:max(extra, 0)]] += 1
    return np.clip(held, 1, n_per_class - 1)


def _stratified_group_holdout(cohort: Cohort, candidates: np.ndarray, fraction: float, rs: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the subjects among ``candidates``, per class (stratified)."""
    y, groups = cohort.y, cohort.subjects
    classes = np.unique(y[candidates])
    n_subj = np.array([len(np.unique(groups[candidates[y[candidates] == c]])) for c in classes])
    if n_subj.min() < 2:
        c = classes[int(np.argmin(n_subj))]
        raise SplitError(
            f"{_where(cohort)}: class {cohort.class_names[c]!r} has only {n_subj.min()} subject(s) left to split; "
            "each partition needs subjects of every class (use fewer partitions or more subjects)"
        )
    rest, held = [], []
    for c, n_held in zip(classes, _held_counts(n_subj, fraction)):
        idx = candidates[y[candidates] == c]
        r, h = _group_shuffle(idx, groups, int(n_held), rs + int(c))
        rest.append(r)
        held.append(h)
    return np.concatenate(rest), np.concatenate(held)


# --------------------------------------------------------------------------- protocols
def holdout_splits(cohort: Cohort, n_repeats: int = 20, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> list[Split]:
    """Repeated subject-level stratified hold-out splits (the study's 60/20/20 × 20).

    Each repeat is a different random partition of the subjects, stratified by label;
    fractions are of subjects (so of scans up to visits per subject).
    """
    f_train, f_val, f_test = _validate_fractions(fractions)
    if int(n_repeats) < 1:
        raise SplitError(f"n_repeats must be ≥ 1, got {n_repeats}")
    subject_labels(cohort)
    all_idx = np.arange(len(cohort))
    out = []
    for r in range(int(n_repeats)):
        rs = _repeat_seed(seed, r)
        dev, test = _stratified_group_holdout(cohort, all_idx, f_test, rs % (2**31))
        train, val = _stratified_group_holdout(cohort, dev, f_val / (f_train + f_val), (rs + 7919) % (2**31))
        out.append(_make_split(cohort, r, {"train": train, "val": val, "test": test}, rs, "holdout"))
    return out


def kfold_splits(cohort: Cohort, k: int = 5, val_fraction: float = 0.2, seed: int = 0) -> list[Split]:
    """Subject-level stratified k-fold (StratifiedGroupKFold): each subject is tested exactly once.

    Within each fold, ``val_fraction`` of the non-test subjects (stratified) form the
    validation partition; ``val_fraction=0`` leaves it empty.
    """
    if int(k) < 2:
        raise SplitError(f"k must be ≥ 2, got {k}")
    if not 0 <= float(val_fraction) < 1:
        raise SplitError(f"val_fraction must be in [0, 1), got {val_fraction}")
    subj, labels = subject_labels(cohort)
    if len(subj) < k:
        raise SplitError(f"{_where(cohort)}: {len(subj)} subjects cannot make {k} folds; use --k ≤ {len(subj)}")
    counts = np.bincount(labels)
    if counts[counts > 0].min() < k:
        raise SplitError(
            f"{_where(cohort)}: the smallest class has {counts[counts > 0].min()} subjects, fewer than k={k}; "
            "every test fold needs subjects of every class (lower --k)"
        )
    sgkf = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=int(seed) % (2**31))
    out = []
    for f, (dev, test) in enumerate(sgkf.split(np.zeros(len(cohort)), cohort.y, groups=cohort.subjects)):
        rs = _repeat_seed(seed, f)
        if val_fraction > 0:
            train, val = _stratified_group_holdout(cohort, dev, float(val_fraction), rs % (2**31))
        else:
            train, val = dev, np.array([], dtype=np.int64)
        out.append(_make_split(cohort, f, {"train": train, "val": val, "test": test}, rs, "kfold"))
    return out


def official_split(cohort: Cohort) -> Split:
    """The split given by the cohort's ``split`` column (train/val/test), leakage-checked."""
    if "split" not in cohort.scans.columns:
        raise SplitError(f"{_where(cohort)}/scans.csv has no 'split' column; use --protocol holdout or kfold instead")
    raw = cohort.scans["split"].astype(str).str.strip().str.lower()
    bad = sorted(set(raw) - set(_OFFICIAL_NAMES))
    if bad:
        raise SplitError(f"{_where(cohort)}/scans.csv: column 'split' has value(s) {bad[:5]}; allowed: train, val, test")
    names = raw.map(_OFFICIAL_NAMES).to_numpy()
    parts = {p: np.flatnonzero(names == p) for p in PARTITIONS}
    for p in ("train", "test"):
        if len(parts[p]) == 0:
            raise SplitError(f"{_where(cohort)}/scans.csv: column 'split' has no {p!r} scans")
    split = _make_split(cohort, 0, parts, 0, "official")
    check_no_leakage(cohort, split)
    return split


def make_splits(cohort: Cohort, protocol: str = "holdout", *, n_repeats: int = 20,
                fractions: Sequence[float] = (0.6, 0.2, 0.2), k: int = 5, val_fraction: float = 0.2,
                seed: int = 0) -> tuple[list[Split], dict[str, Any]]:
    """Splits for ``protocol`` (holdout|kfold|official) and the protocol's parameters."""
    if protocol == "holdout":
        fr = _validate_fractions(fractions)
        return holdout_splits(cohort, n_repeats, fr, seed), {"protocol": protocol, "n_repeats": int(n_repeats), "fractions": list(fr), "seed": int(seed)}
    if protocol == "kfold":
        return kfold_splits(cohort, k, val_fraction, seed), {"protocol": protocol, "k": int(k), "val_fraction": float(val_fraction), "seed": int(seed)}
    if protocol == "official":
        return [official_split(cohort)], {"protocol": protocol}
    raise SplitError(f"unknown split protocol {protocol!r}; choose one of {list(PROTOCOLS)}")


# --------------------------------------------------------------------------- guard
def check_no_leakage(cohort: Cohort, split: Split) -> None:
    """Refuse a split where a subject (or scan) sits in two partitions.

    Also checks indices are integers in range, unique, and (when the split carries scan
    IDs) that they point at the same scans in this cohort. Raises :class:`LeakageError`
    naming the subjects, or :class:`SplitError` for malformed indices.
    """
    n = len(cohort)
    where = f"{_where(cohort)} split repeat {split.repeat}"
    for p in PARTITIONS:
        idx = split.partition(p)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise SplitError(f"{where}: {p} indices out of range [0, {n}); the split was made for another cohort")
        if len(np.unique(idx)) != len(idx):
            raise SplitError(f"{where}: {p} lists a scan more than once")
        ids = split.scan_ids.get(p)
        if ids is not None:
            if len(ids) != len(idx) or list(cohort.scan_ids[idx]) != list(ids):
                raise SplitError(f"{where}: {p} indices do not point at the scan IDs stored with the split; "
                                 "the split was made for another cohort (re-run `volkd split`)")
    subj = cohort.subjects
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        ia, ib = split.partition(a), split.partition(b)
        shared_scans = np.intersect1d(ia, ib)
        if len(shared_scans):
            raise LeakageError(f"{where}: scan(s) {list(cohort.scan_ids[shared_scans][:5])} are in both {a} and {b}")
        shared = np.intersect1d(subj[ia], subj[ib])
        if len(shared):
            more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
            raise LeakageError(
                f"{where}: subject(s) {list(shared[:5])}{more} appear in both {a} and {b}; "
                "splits must be by subject (make them with `volkd split`)"
            )


def split_counts(cohort: Cohort, split: Split) -> dict[str, dict[str, Any]]:
    """Per partition: number of scans, subjects and scans per class."""
    y, subj, names = cohort.y, cohort.subjects, cohort.class_names
    out = {}
    for p in PARTITIONS:
        idx = split.partition(p)
        cls = np.bincount(y[idx], minlength=len(names))
        out[p] = {"scans": int(len(idx)), "subjects": int(len(np.unique(subj[idx]))),
                  "per_class": {names[i]: int(cls[i]) for i in range(len(names))}}
    return out


# --------------------------------------------------------------------------- I/O
def _cohort_fingerprint(cohort: Cohort) -> str:
    return cohort.meta.fingerprint or cohort.fingerprint()


def save_splits(path: str | Path, splits: Sequence[Split], cohort: Cohort, protocol: dict[str, Any] | None = None,
                force: bool = False) -> Path:
    """Write ``splits`` as JSON atomically, with the cohort fingerprint, protocol and provenance."""
    path = Path(path)
    check_can_write(path, force)
    if not splits:
        raise SplitError("no splits to save")
    for s in splits:
        check_no_leakage(cohort, s)
    proto = dict(protocol or {"protocol": splits[0].kind})
    doc = {
        "format": SPLITS_FORMAT,
        "version": SPLITS_VERSION,
        "cohort": {"path": str(cohort.path) if cohort.path else None, "fingerprint": _cohort_fingerprint(cohort),
                   "n_scans": len(cohort), "n_subjects": int(len(np.unique(cohort.subjects)))},
        "protocol": proto,
        "provenance": provenance(),
        "splits": [s.to_dict() for s in splits],
    }
    write_json(path, doc, force=True)
    return path


def load_splits(path: str | Path, cohort: Cohort, strict: bool = False) -> list[Split]:
    """Read a split file and validate it against ``cohort``.

    Scan IDs are authoritative: indices are re-derived from them (so a re-ordered cohort
    still works); unknown scan IDs are an error; every split is leakage-checked. A cohort
    fingerprint that differs from the file's warns (``strict=True``: error).
    """
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"{path}: split file not found (make one with `volkd split COHORT --out {path.name}`)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SplitError(f"{path}: not a readable JSON split file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SPLITS_FORMAT or not isinstance(doc.get("splits"), list):
        raise SplitError(f"{path}: not a volkd split file (expected format {SPLITS_FORMAT!r}); make one with `volkd split`")
    lut = {s: i for i, s in enumerate(cohort.scan_ids)}
    out = []
    for j, d in enumerate(doc["splits"]):
        try:
            s = Split.from_dict(d)
        except (TypeError, ValueError) as e:
            raise SplitError(f"{path}: split entry {j} is malformed ({e})") from None
        except SplitError as e:
            raise SplitError(f"{path}: split entry {j}: {e}") from None
        if s.scan_ids:
            for p in PARTITIONS:
                ids = s.scan_ids.get(p, [])
                unknown = [x for x in ids if x not in lut]
                if unknown:
                    raise SplitError(f"{path}: split {s.repeat} {p} has scan ID(s) {unknown[:5]} not in {_where(cohort)}; "
                                     "the split file belongs to another cohort")
                setattr(s, p, np.asarray([lut[x] for x in ids], dtype=np.int64))
        check_no_leakage(cohort, s)
        out.append(s)
    if not out:
        raise SplitError(f"{path}: holds no splits")
    fp = (doc.get("cohort") or {}).get("fingerprint")
    mine = _cohort_fingerprint(cohort)
    if fp and fp != mine:
        msg = (f"{path}: made for a cohort with fingerprint {fp[:12]}…, but {_where(cohort)} has {mine[:12]}…; "
               "the cohort changed since the splits were made")
        if strict:
            raise SplitError(msg + " (re-run `volkd split`)")
        warnings.warn(msg + "; the scan IDs still match, so the splits are used", stacklevel=2)
    return out


__all__ = [
    "PARTITIONS", "PROTOCOLS", "Split", "SplitError", "check_no_leakage", "holdout_splits", "kfold_splits",
    "load_splits", "make_splits", "official_split", "save_splits", "split_counts", "subject_labels",
]
