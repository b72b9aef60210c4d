"""``predict_scans``: class probabilities for new scans with a trained checkpoint (student or teacher).

Each scan is read (NIfTI, DICOM, an NPZ/NPY volume, or a cohort's volume), checked for compatibility with the
training grid (:mod:`volkd.inference.grid`), placed on that grid as the training cohort's import
did, then normalised, projected (students) and classified by
:func:`volkd.train.predict_proba` — the very code path used on the test partition at training.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from volkd.atomic import check_can_write, check_output, probe_writable, write_text
from volkd.data.scan_checks import value_problem
from volkd.data.importer import ppmi_modality
from volkd.errors import VolkdError
from volkd.inference.grid import IncompatibleScanError, TrainingGrid, check_compatible, place_on_grid, training_grid
from volkd.inference.inputs import LoadedScan, ScanInput, Skipped, collect_inputs, iter_loaded
from volkd.train import Checkpoint, load_checkpoint, predict_proba

#: Modalities volkd names (DICOM/PPMI spellings are mapped with ``volkd.data.importer.ppmi_modality``).
UNKNOWN = ("", "unknown")


class PredictionWarning(UserWarning):
    """Something the user should know about a prediction (assumed grid, training-data overlap)."""


class NoScansError(VolkdError):
    """No input scan could be predicted on."""


def skipped_path(out: str | Path) -> Path:
    """Where the skipped scans of ``out`` are listed: ``predictions.csv`` → ``predictions.skipped.csv``."""
    out = Path(out)
    return out.with_name(out.name[: -len(out.suffix)] + ".skipped.csv" if out.suffix else out.name + ".skipped.csv")


def _modality_problem(grid: TrainingGrid, info: dict[str, Any]) -> str | None:
    got = str(info.get("modality") or "").strip()
    if got.lower() in UNKNOWN or grid.modality.lower() in UNKNOWN:
        return None
    got = ppmi_modality(got)
    if got.lower() != grid.modality.lower():
        return f"modality {got!r} but the model was trained on {grid.modality!r} scans"
    return None


def _array_scan(item: ScanInput, scan: LoadedScan, grid: TrainingGrid) -> LoadedScan:
    """An array volume as ``volkd import`` placed it: its field of view stretched onto the grid (only for
    models trained on arrays); its voxels get the size that makes its field of view the training grid's."""
    if grid.placement != "fov" or grid.space.lower() not in UNKNOWN:
        raise IncompatibleScanError(
            f"{item.source}: NPZ/NPY volumes carry no affine (orientation and voxel size unknown), but this model was "
            f"trained on {grid.space} scans placed by their {'MNI coordinates' if grid.placement == 'mni' else 'field of view in mm'}; "
            "predict on the NIfTI/DICOM files instead")
    return LoadedScan(scan.data, np.diag([*(grid.fov_mm / np.asarray(scan.data.shape, dtype=float)), 1.0]), scan.info)


def prepare_scan(item: ScanInput, scan: LoadedScan, grid: TrainingGrid) -> tuple[np.ndarray, np.ndarray]:
    """The scan on the training grid and that grid's affine; raises :class:`IncompatibleScanError` naming the input."""
    problem = _modality_problem(grid, scan.info)
    if problem:
        raise IncompatibleScanError(f"{item.source}: {problem}")
    if item.kind == "array":
        scan = _array_scan(item, scan, grid)
    native = (item.kind == "cohort" and tuple(scan.data.shape) == tuple(grid.shape)
              and (grid.placement == "fov" or np.allclose(scan.affine, grid.affine, atol=1e-4)))
    check_compatible(scan.data, scan.affine, grid, item.source, native_grid=native)
    problem = value_problem(scan.data)  # no image in it: all NaN/Inf, or constant (blank)
    if problem:
        raise IncompatibleScanError(f"{item.source}: {problem}")
    if native:
        return np.ascontiguousarray(scan.data, dtype=np.float32), np.asarray(scan.affine, dtype=np.float64)
    # a cohort's volumes were already placed by its import: never crop them twice
    vol, affine = place_on_grid(scan.data, scan.affine, grid, crop=False if item.kind == "cohort" else None)
    if not np.isfinite(vol).all():
        raise IncompatibleScanError(f"{item.source}: resampled volume has non-finite values")
    return vol, affine


def training_overlap(ck: Any, item: ScanInput) -> str:
    """Why ``item`` may be part of the checkpoint's training data ('' when it is not known to be)."""
    if item.subject_id and item.subject_id in set(ck.train_subjects):
        return f"subject {item.subject_id} is among the training subjects"
    split = ck.split or {}
    for part in ("train", "val"):
        if item.scan_id in set(split.get(part) or ()):
            return f"scan {item.scan_id} was in the {part} partition"
    return ""


def _proba(ck: Any, vols: list[np.ndarray], rows: list[ScanInput], skipped: list[Skipped], batch_size: int) -> tuple[np.ndarray, list[ScanInput]]:
    try:
        return predict_proba(ck, np.stack(vols), batch_size=batch_size), rows
    except VolkdError:
        if len(vols) == 1:
            raise
    out, kept = [], []  # a scan failed (e.g. reference normalisation): find which, keep the rest
    for v, r in zip(vols, rows):
        try:
            out.append(predict_proba(ck, v[None], batch_size=1))
            kept.append(r)
        except VolkdError as e:
            skipped.append(Skipped(r.source, str(e)))
    return (np.concatenate(out) if out else np.zeros((0, len(ck.class_names)), np.float32)), kept


def predict_scans(ckpt_path: str | Path | Any, inputs: Sequence[str | Path], batch_size: int = 16,
                  progress: Callable[[int, int], None] | None = None) -> tuple[pd.DataFrame, list[Skipped]]:
    """Predict every scan found in ``inputs``; returns (one row per scan, the inputs skipped and why).

    Raises :class:`NoScansError` when nothing could be predicted. Emits :class:`PredictionWarning`
    for scans whose subject (or scan ID) the model trained on, and when the grid had to be assumed.
    """
    ck = ckpt_path if isinstance(ckpt_path, Checkpoint) else load_checkpoint(ckpt_path)
    grid = training_grid(ck)
    for note in grid.notes:
        warnings.warn(note, PredictionWarning, stacklevel=2)
    items, skipped = collect_inputs(list(inputs))
    probas: list[np.ndarray] = []
    done: list[ScanInput] = []
    vols: list[np.ndarray] = []
    rows: list[ScanInput] = []

    def flush() -> None:
        if vols:
            p, kept = _proba(ck, vols, rows, skipped, batch_size)
            probas.append(p)
            done.extend(kept)
            vols.clear()
            rows.clear()

    for n, (item, scan) in enumerate(iter_loaded(items)):
        if isinstance(scan, Skipped):
            skipped.append(scan)
        else:
            try:
                vols.append(prepare_scan(item, scan, grid)[0])
                rows.append(item)
            except VolkdError as e:
                skipped.append(Skipped(item.source, str(e).removeprefix(f"{item.source}: ")))
        if len(vols) >= batch_size:
            flush()
        if progress is not None:
            progress(n + 1, len(items))
    flush()
    if not done:
        reasons = "; ".join(f"{s.source}: {s.reason}" for s in skipped[:5]) or "no inputs given"
        raise NoScansError(f"no scan could be predicted on ({len(skipped)} skipped): {reasons}")
    proba = np.concatenate(probas)
    df = pd.DataFrame({"scan_id": [r.scan_id for r in done], "subject_id": [r.subject_id for r in done],
                       "source": [r.source for r in done]})
    for j, c in enumerate(ck.class_names):
        df[f"proba_{c}"] = proba[:, j].astype(np.float64)
    df["predicted"] = [ck.class_names[k] for k in proba.argmax(1)]
    df["training_overlap"] = [training_overlap(ck, r) for r in done]
    leaks = df[df["training_overlap"] != ""]
    if len(leaks):
        warnings.warn(f"{len(leaks)} scan(s) may be part of the model's training data, their predictions are not an "
                      f"unbiased evaluation: " + "; ".join(f"{s}: {why}" for s, why in zip(leaks["source"][:5], leaks["training_overlap"][:5]))
                      + (" …" if len(leaks) > 5 else ""), PredictionWarning, stacklevel=2)
    return df, skipped


def skipped_frame(skipped: list[Skipped]) -> pd.DataFrame:
    """The skipped inputs as a table (columns source, reason)."""
    return pd.DataFrame([s.to_dict() for s in skipped], columns=["source", "reason"])


def write_predictions(df: pd.DataFrame, skipped: list[Skipped], out: str | Path, force: bool = False) -> tuple[Path, Path | None]:
    """Write the predictions CSV (and ``<out>.skipped.csv`` when scans were skipped) atomically."""
    out = Path(out)
    skip_out = skipped_path(out)
    check_can_write(out, force)
    check_can_write(skip_out, force)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    write_text(out, buf.getvalue())
    if skipped:
        write_text(skip_out, skipped_frame(skipped).to_csv(index=False))
        return out, skip_out
    if skip_out.exists():  # a stale list from an earlier run (only reachable with force)
        skip_out.unlink()
    return out, None


def predict_to_csv(ckpt_path: str | Path, inputs: Sequence[str | Path], out: str | Path, force: bool = False,
                   **kw: Any) -> tuple[pd.DataFrame, list[Skipped]]:
    """:func:`predict_scans` then :func:`write_predictions`; checks ``out`` may be written before any work
    (exists without ``force``, is an input, is a folder, or its location is unwritable)."""
    sources = [*inputs, ckpt_path] if isinstance(ckpt_path, (str, Path)) else [*inputs]
    check_output(Path(out), force, sources=sources)
    check_output(skipped_path(out), force, sources=sources)
    probe_writable(out)
    df, skipped = predict_scans(ckpt_path, inputs, **kw)
    write_predictions(df, skipped, out, force)
    return df, skipped
