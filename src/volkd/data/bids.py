"""BIDS datasets → a cohort: scans found with pybids, labels from ``participants.tsv`` / ``sessions.tsv``.

A BIDS dataset keeps each scan as ``sub-<label>/[ses-<label>/]<datatype>/sub-<label>[_ses-<label>][_<key>-<value>…]_<suffix>.nii[.gz]``
(e.g. ``sub-01/ses-bl/pet/sub-01_ses-bl_trc-DaT_pet.nii.gz``). :func:`plan_bids` selects the files
of one suffix (``pet``; SPECT, which BIDS does not name yet, under the suffix the dataset chose),
takes subject and session from the entities and the label from a column of ``participants.tsv``
(or of ``sub-<label>/sub-<label>_sessions.tsv``, which wins for its sessions); :func:`import_bids`
then reads and writes them through the shared import path (:func:`volkd.data.importer.import_planned`).
Everything found but left out (other suffixes, ``derivatives/``, names that are not BIDS, scans
without a label) is counted in the summary or listed with its reason in ``skipped.csv``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from volkd.atomic import check_output
from volkd.data.importer import (ImportResult, ImportSummary, ScanEntry, extra_columns, map_labels, resolve_classes,
                                 import_planned, parse_map)
from volkd.data.ppmi import visit_numbers
from volkd.data.readers import NIFTI_SUFFIXES, nifti_stem, read_text_table
from volkd.errors import ConfigError, ScanImportError

#: A BIDS file name: ``sub-<label>``, then ``_<key>-<value>`` entities, then ``_<suffix>.nii[.gz]``.
BIDS_NAME = re.compile(r"^sub-(?P<sub>[A-Za-z0-9]+)(?P<ents>(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*)_(?P<suffix>[A-Za-z0-9]+)\.nii(?:\.gz)?$")
#: Cells BIDS (and spreadsheets) use for "no value".
MISSING = {"", "n/a", "na", "nan", "none"}
#: Suffix → volkd modality (``--modality`` overrides); other suffixes give their own name.
SUFFIX_MODALITY = {"pet": "pet", "spect": "spect", "nm": "spect", "spect-ct": "spect", "t1w": "mri", "t2w": "mri",
                   "flair": "mri", "pdw": "mri", "t2starw": "mri", "dwi": "mri", "bold": "mri", "ct": "ct"}
PARTICIPANTS = "participants.tsv"
INSTALL_HINT = "pip install 'volkd[bids]'"


def _layout(root: Path, derivatives: bool) -> Any:
    """pybids' index of ``root`` (non-validating, so SPECT and other non-standard suffixes are kept)."""
    try:
        # optional extra, imported here only: pybids pulls in sqlalchemy, formulaic and the BIDS schema
        from bids import BIDSLayout
    except ImportError as e:
        raise ScanImportError(f"BIDS import needs pybids ({e.name or 'bids'} is missing): {INSTALL_HINT}") from None
    try:
        return BIDSLayout(root, validate=False, derivatives=derivatives)
    except Exception as e:  # noqa: BLE001 - pybids raises its own errors and ValueError for a bad root
        raise ScanImportError(f"{root}: not a readable BIDS dataset ({type(e).__name__}: {str(e).splitlines()[0]}); "
                              "a BIDS root holds dataset_description.json and sub-<label>/ folders") from None


def entities_of(name: str) -> dict[str, str] | None:
    """``sub-01_ses-bl_trc-DaT_pet.nii.gz`` → ``{"sub": "01", "ses": "bl", "trc": "DaT", "suffix": "pet"}`` (None: not BIDS)."""
    m = BIDS_NAME.match(name)
    if m is None:
        return None
    out = {"sub": m.group("sub")}
    for pair in m.group("ents").split("_")[1:]:
        key, _, value = pair.partition("-")
        out[key] = value
    out["suffix"] = m.group("suffix")
    return out


def parse_filters(spec: str | dict[str, str] | None) -> dict[str, str]:
    """``"trc=DaT,rec=acstat"`` → ``{"trc": "DaT", "rec": "acstat"}``: BIDS name entities a scan must carry."""
    if spec is None:
        return {}
    items = spec.items() if isinstance(spec, dict) else [i.partition("=")[::2] for i in spec.split(",") if i.strip()]
    out = {}
    for key, value in items:
        key, value = str(key).strip(), str(value).strip()
        if not re.fullmatch(r"[A-Za-z0-9]+", key) or not re.fullmatch(r"[A-Za-z0-9]+", value):
            raise ConfigError(f"--bids-filter {spec!r}: expected entity=value pairs as in BIDS file names, e.g. 'trc=DaT,rec=acstat'")
        out[key] = value
    return out


def _missing(value: Any) -> bool:
    return value is None or str(value).strip().lower() in MISSING


def read_participants(root: Path) -> pd.DataFrame | None:
    """``participants.tsv`` as text, indexed by ``participant_id`` (None when the dataset has none)."""
    path = root / PARTICIPANTS
    if not path.is_file():
        return None
    df = read_text_table(path, "participants.tsv", sep="\t")
    if "participant_id" not in df.columns:
        raise ScanImportError(f"{path}: no 'participant_id' column (BIDS requires it); columns are {list(df.columns)}")
    dup = df["participant_id"][df["participant_id"].duplicated()]
    if len(dup):
        raise ScanImportError(f"{path}: participant(s) {sorted(set(dup))[:5]} listed twice; each subject needs one row")
    return df.set_index("participant_id", drop=False)


def read_sessions(layout: Any) -> dict[str, pd.DataFrame]:
    """Every ``sub-<label>_sessions.tsv`` (found by pybids), per participant ID, indexed by ``session_id``."""
    out: dict[str, pd.DataFrame] = {}
    for f in layout.get(suffix="sessions", extension=".tsv", scope="raw"):
        sub = f.get_entities().get("subject")
        if sub is None:
            continue
        df = read_text_table(f.path, "sessions.tsv", sep="\t")
        if "session_id" not in df.columns:
            raise ScanImportError(f"{f.path}: no 'session_id' column (BIDS requires it); columns are {list(df.columns)}")
        out[f"sub-{sub}"] = df.set_index("session_id", drop=False)
    return out


def _derivative_counts(root: Path, suffix: str) -> dict[str, int]:
    """NIfTI files of ``suffix`` per pipeline under ``derivatives/`` (what a raw import leaves out)."""
    counts: Counter = Counter()
    deriv = root / "derivatives"
    if deriv.is_dir():
        for p in deriv.rglob("*"):
            e = entities_of(p.name) if p.is_file() else None
            if e is not None and e["suffix"] == suffix:
                counts[p.relative_to(deriv).parts[0]] += 1
    return dict(sorted(counts.items()))


def _files(layout: Any, root: Path, derivatives: bool | str) -> list[Any]:
    """The NIfTI files of the chosen scope: raw, every pipeline under derivatives/, or one (by folder name)."""
    if not derivatives:
        return layout.get(scope="raw", extension=list(NIFTI_SUFFIXES))
    pipelines = {Path(str(k)).name: k for k in getattr(layout, "derivatives", {}).keys()}
    if not pipelines:
        raise ScanImportError(f"{root / 'derivatives'}: no BIDS derivatives found; each pipeline folder needs a "
                              "dataset_description.json with a GeneratedBy entry (BIDS-Derivatives)")
    if derivatives is True or derivatives == "all":
        return layout.get(scope="derivatives", extension=list(NIFTI_SUFFIXES))
    if derivatives not in pipelines:
        raise ConfigError(f"--derivatives {derivatives!r}: no such pipeline under {root / 'derivatives'}; found {sorted(pipelines)}")
    # pybids' scope names a pipeline by its GeneratedBy name; the user names the folder
    return layout.derivatives[pipelines[derivatives]].get(extension=list(NIFTI_SUFFIXES))


def _label(pid: str, session: str | None, column: str, participants: pd.DataFrame | None,
           sessions: dict[str, pd.DataFrame]) -> tuple[str | None, str]:
    """(label, '') or (None, why there is none) for one scan: its session's row wins over its participant's."""
    ses_df = sessions.get(pid)
    if session is not None and ses_df is not None and column in ses_df.columns and f"ses-{session}" in ses_df.index:
        value = ses_df.at[f"ses-{session}", column]
        if not _missing(value):
            return str(value), ""
    if participants is None or column not in participants.columns:
        return None, f"no label: no {column!r} for {pid}{f' ses-{session}' if session else ''} in its sessions.tsv"
    if pid not in participants.index:
        return None, f"no label: {pid} has no row in participants.tsv"
    value = participants.at[pid, column]
    if _missing(value):
        return None, f"no label: {column!r} is {value or 'empty'!r} for {pid} in participants.tsv"
    return str(value), ""


def _visits(entries: list[ScanEntry], sessions: dict[str, pd.DataFrame]) -> None:
    """Visit numbers from the sessions: their integer labels, else 0, 1, 2… per subject by acq_time then label."""
    codes = {(e.subject_id, e.extra["visit_code"]) for e in entries if "visit_code" in e.extra}
    if not codes:
        return
    if all(re.fullmatch(r"\d+", c) for _, c in codes):
        for e in entries:
            e.visit = int(e.extra["visit_code"]) if "visit_code" in e.extra else 0
        return
    pairs = sorted(codes)
    dates = []
    for pid, code in pairs:
        df = sessions.get(pid)
        t = df.at[f"ses-{code}", "acq_time"] if df is not None and "acq_time" in df.columns and f"ses-{code}" in df.index else ""
        dates.append(pd.to_datetime(t, errors="coerce") if not _missing(t) else pd.NaT)
    ranks = visit_numbers(pd.Series([p for p, _ in pairs]), pd.Series(dates, dtype="datetime64[ns]"),
                          pd.Series([c for _, c in pairs]))
    rank = {pair: int(r) for pair, r in zip(pairs, ranks)}
    for e in entries:
        e.visit = rank.get((e.subject_id, e.extra.get("visit_code")), 0)  # type: ignore[arg-type]


def plan_bids(root: str | Path, label_column: str = "group", suffix: str = "pet", label_map: dict[str, str] | str | None = None,
              class_names: list[str] | None = None, derivatives: bool | str = False, filters: dict[str, str] | str | None = None,
              summary: ImportSummary | None = None) -> tuple[list[ScanEntry], list[str], ImportSummary, str]:
    """Plan a BIDS import: (scans with labels, class names, the summary so far, suggested ``space``).

    ``derivatives`` False reads the raw data (and counts what ``derivatives/`` holds), ``"all"``/True
    every pipeline under ``derivatives/``, a name that pipeline only. ``filters`` keeps scans whose
    file name carries those entities (``trc=DaT``). The suggested space is ``mni`` when every scan's
    name says ``space-MNI…``, else ``fov`` (BIDS files without a ``space`` entity are in native space).
    """
    root = Path(root)
    if not root.is_dir():
        raise ScanImportError(f"{root}: BIDS root folder not found")
    if not (root / "dataset_description.json").is_file():
        raise ScanImportError(f"{root}: not a BIDS dataset: no dataset_description.json at its root (BIDS requires one; "
                              "a BIDS root holds dataset_description.json, participants.tsv and sub-<label>/ folders)")
    label_map = parse_map(label_map)
    filters = parse_filters(filters)
    summary = summary or ImportSummary(source=str(root), kind="bids", labels_from="participants.tsv")
    layout = _layout(root, derivatives=bool(derivatives))
    participants = read_participants(root)
    sessions = read_sessions(layout)
    if not any(label_column in df.columns for df in [participants, *sessions.values()] if df is not None):
        where = (f"{root / PARTICIPANTS} has columns {list(participants.columns)}" if participants is not None
                 else f"{root} has no participants.tsv")
        raise ScanImportError(f"{where}; no column {label_column!r} there or in any sessions.tsv "
                              "(choose the label column with --label-col)")

    other: Counter = Counter()
    filtered: Counter = Counter()
    chosen: list[tuple[Path, dict[str, str]]] = []
    for f in _files(layout, root, derivatives):
        path = Path(f.path)
        ent = entities_of(path.name)
        if ent is None:
            summary.ignored.append({"path": str(path), "reason": "not a BIDS file name (expected "
                                    "sub-<label>[_ses-<label>][_<key>-<value>…]_<suffix>.nii[.gz])"})
            continue
        folder_sub = f.get_entities().get("subject")
        if folder_sub is not None and folder_sub != ent["sub"] and f"sub-{folder_sub}" in path.parts:
            summary.ignored.append({"path": str(path), "reason": f"file name says sub-{ent['sub']} but it lies in folder sub-{folder_sub}"})
            continue
        if ent["suffix"] != suffix:
            other[ent["suffix"]] += 1
            continue
        miss = [f"{k}={v}" for k, v in filters.items() if ent.get(k) != v]
        if miss:
            filtered[", ".join(miss)] += 1
            continue
        chosen.append((path, ent))

    where = "derivatives/" + ("" if derivatives in (True, "all") else str(derivatives)) if derivatives else "the raw data"
    deriv_counts = {} if derivatives else _derivative_counts(root, suffix)
    if not chosen:
        found = ", ".join(f"{k} ({v})" for k, v in other.most_common()) or "none"
        hint = (f"; derivatives/ holds {sum(deriv_counts.values())} such file(s) (pass --derivatives "
                f"{next(iter(deriv_counts))} or all)" if deriv_counts else "")
        flt = f" matching --bids-filter {filters}" if filters else ""
        raise ScanImportError(f"{root}: no BIDS scans with suffix {suffix!r}{flt} (…_{suffix}.nii[.gz]) in {where}; "
                              f"NIfTI suffixes found: {found} (choose one with --suffix){hint}")
    if other:
        summary.notes.append(f"not imported: NIfTI files with other suffixes ({', '.join(f'{k} {v}' for k, v in other.most_common())}); "
                             "choose another with --suffix")
    if filtered:
        summary.notes.append(f"not imported: {sum(filtered.values())} '{suffix}' file(s) outside --bids-filter "
                             f"({'; '.join(f'{v} without {k}' for k, v in filtered.items())})")
    if deriv_counts:
        summary.notes.append(f"derivatives/ not imported: {', '.join(f'{k} {v}' for k, v in deriv_counts.items())} '{suffix}' "
                             "file(s); pass --derivatives PIPELINE (or all) to import those instead of the raw scans")

    entries: list[ScanEntry] = []
    raw_labels: list[str] = []
    seen: dict[str, Path] = {}
    for path, ent in chosen:
        pid, session = f"sub-{ent['sub']}", ent.get("ses")
        sid = nifti_stem(path)
        if sid in seen:
            raise ScanImportError(f"two scans share the ID {sid!r}: {seen[sid]} and {path}; "
                                  "choose one derivatives pipeline with --derivatives NAME")
        seen[sid] = path
        label, why = _label(pid, session, label_column, participants, sessions)
        if label is None:
            summary.ignored.append({"path": str(path), "reason": why})
            continue
        extra = extra_columns(participants, pid) if participants is not None and pid in participants.index else {}
        extra = {k: (None if isinstance(v, str) and _missing(v) else v) for k, v in extra.items()}  # BIDS n/a → empty
        if session is not None:
            extra["visit_code"] = session
        entries.append(ScanEntry(sid, pid, 0, label, path=path, extra=extra))
        raw_labels.append(label)
    excluded: Counter = Counter()
    mapped = map_labels(pd.Series(raw_labels, dtype=str), label_map, excluded)
    summary.excluded = dict(excluded)
    kept = []
    for e, lab in zip(entries, mapped):
        if lab is not None and not pd.isna(lab):  # labels outside --map are excluded (counted above)
            e.label = str(lab)
            kept.append(e)
    entries = kept
    _visits(entries, sessions)
    summary.n_candidates = len(chosen)

    have = {pid for _, ent in chosen for pid in [f"sub-{ent['sub']}"]}
    if participants is not None:
        summary.missing_files = [{"scan_id": "", "subject_id": pid} for pid in participants.index if pid not in have]
    per_session: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for path, ent in chosen:
        per_session[(f"sub-{ent['sub']}", ent.get("ses"))].append(nifti_stem(path))
    multi = {k: v for k, v in per_session.items() if len(v) > 1}
    if multi:
        (pid, ses), ids = next(iter(multi.items()))
        summary.notes.append(f"{len(multi)} subject session(s) have more than one '{suffix}' scan (e.g. {pid}"
                             f"{f' ses-{ses}' if ses else ''}: {', '.join(ids)}); each is its own scan — keep one kind "
                             "with --bids-filter (e.g. trc=…, rec=…, run=…)")
    names = resolve_classes([e.label for e in entries] or list(mapped.dropna()), class_names, str(root / PARTICIPANTS))
    spaces = {ent.get("space", "") for _, ent in chosen}
    space = "mni" if all(s.upper().startswith("MNI") for s in spaces) else "fov"
    if space == "fov" and any(s.upper().startswith("MNI") for s in spaces):
        summary.notes.append(f"the '{suffix}' files mix space-MNI… and other spaces {sorted(spaces)}; placed by their "
                             "own field of view (--space fov); keep one with --bids-filter space=…")
    return entries, names, summary, space


def import_bids(root: str | Path, out: str | Path, label_column: str = "group", suffix: str = "pet",
                label_map: dict[str, str] | str | None = None, class_names: list[str] | None = None,
                derivatives: bool | str = False, filters: dict[str, str] | str | None = None,
                target_grid: tuple[int, int, int] | int | None = (64, 64, 64), space: str | None = None, crop: bool = False,
                skip_bad: bool = False, force: bool = False, modality: str | None = None, order: int = 1) -> ImportResult:
    """Import a BIDS dataset's ``suffix`` scans into a new cohort at ``out`` (see :func:`plan_bids`).

    ``space`` defaults to what the file names say (``mni`` for ``space-MNI…`` files, else ``fov``).
    """
    out = Path(out)
    check_output(out, force, "cohort", [root])  # never the dataset, a folder holding it, or other files
    entries, names, summary, suggested = plan_bids(root, label_column, suffix, label_map, class_names, derivatives, filters)
    if space == "mni" and suggested != "mni":
        summary.notes.append("--space mni: the file names carry no space-MNI… entity; they are assumed to be "
                             "spatially normalised to MNI space")
    elif space is None and suggested == "fov":
        summary.notes.append("placed by each scan's own field of view (--space fov): the file names carry no space-MNI… "
                             "entity, so BIDS has them in scanner space (MNI-normalised scans: --derivatives or --space mni)")
    mod = modality or SUFFIX_MODALITY.get(suffix.lower(), suffix.lower())
    inputs = {"bids": {"root": str(Path(root).resolve()), "suffix": suffix, "label_column": label_column,
                       "derivatives": derivatives or None, "filters": parse_filters(filters) or None,
                       "participants_tsv": str((Path(root) / PARTICIPANTS).resolve()) if (Path(root) / PARTICIPANTS).is_file() else None}}
    return import_planned(entries, names, summary, out, target_grid=target_grid, space=space or suggested, crop=crop,
                          skip_bad=skip_bad, force=force, modality=mod, order=order, inputs=inputs)


__all__ = ["plan_bids", "import_bids", "entities_of", "parse_filters", "read_participants", "read_sessions"]
