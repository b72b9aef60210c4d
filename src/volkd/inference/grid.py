"""The training grid a checkpoint expects, read from the checkpoint, and placing a raw scan on it.

A checkpoint should record its cohort's grid (shape, voxel→mm affine, space) and how the cohort's
scans were placed on it (``volkd import`` options: ``space`` mni/fov, ``crop``, interpolation
``order``). Checkpoints written before that was recorded are read defensively: the grid comes from
the projection spec or the normaliser statistics, and MNI placement (volkd's default) is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from volkd.data.atlas import mni_grid_affine
from volkd.data.resample import coverage, placement, resample_to_grid
from volkd.errors import ConfigError, VolkdError

#: A scan's voxels may be at most this many times coarser than the training grid's (per axis):
#: coarser scans lack the detail the model was trained on.
MAX_VOXEL_RATIO = 4.0
#: ... and at least this fraction of the grid's voxel size: finer than 1/16 is almost always a
#: header in the wrong unit (e.g. metres) or a non-brain image.
MIN_VOXEL_RATIO = 1.0 / 16.0
#: MNI placement: the scan must cover at least this fraction of the training grid's world box
#: (the same rule as ``volkd import --space mni``).
MIN_COVERAGE = 0.5
#: FOV placement: the scan's physical field of view (mm, per axis) must be within this factor
#: of the training cohort's.
MAX_FOV_RATIO = 2.0
#: A 3-D scan needs at least this many voxels along every axis (fewer: a slice, not a volume).
MIN_AXIS_VOXELS = 4
#: Keys under which a checkpoint may record its cohort's metadata (``CohortMeta`` as a dict).
COHORT_KEYS = ("cohort_meta", "cohort")


class IncompatibleScanError(VolkdError):
    """A scan cannot be made compatible with the model's training grid."""


@dataclass
class TrainingGrid:
    """Where the training scans lived: grid shape, affine, space and placement options."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    space: str  # "MNI", "native" or "unknown"
    placement: str  # "mni" or "fov"
    crop: bool = False
    order: int = 1
    modality: str = "unknown"
    recorded: bool = True  # False: reconstructed from a checkpoint that did not record it
    notes: list[str] = field(default_factory=list)

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel size (mm) of the training grid along each axis."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def fov_mm(self) -> np.ndarray:
        """Physical extent (mm) of the training grid along each axis."""
        return self.voxel_size * np.asarray(self.shape, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (model card, export metadata)."""
        return {"grid_shape": list(self.shape), "affine": np.round(self.affine, 6).tolist(), "space": self.space,
                "placement": self.placement, "crop": self.crop, "interpolation_order": self.order,
                "voxel_size_mm": [round(float(v), 4) for v in self.voxel_size], "modality": self.modality,
                "recorded_in_checkpoint": self.recorded}


def _cohort_meta(ck: Any) -> dict[str, Any] | None:
    for key in COHORT_KEYS:
        meta = (getattr(ck, "extra", None) or {}).get(key)
        if isinstance(meta, dict) and meta.get("grid_shape") is not None:
            return meta
    return None


def _grid_from_state(ck: Any) -> tuple[int, int, int] | None:
    spec = ck.projection_spec or {}
    if spec.get("grid_shape"):
        return tuple(int(g) for g in spec["grid_shape"])  # type: ignore[return-value]
    norm = ck.normalizer or {}
    for key in ("mean", "mask"):
        arr = norm.get(key)
        if isinstance(arr, np.ndarray) and arr.ndim == 3:
            return tuple(int(g) for g in arr.shape)  # type: ignore[return-value]
    return None


def training_grid(ck: Any) -> TrainingGrid:
    """The grid ``ck`` (a :class:`volkd.train.Checkpoint`) was trained on; raises if it cannot be known."""
    meta = _cohort_meta(ck)
    if meta is not None:
        shape = tuple(int(g) for g in meta["grid_shape"])
        space = str(meta.get("space") or "unknown")
        opts = meta.get("import_options") or (meta.get("provenance") or {}).get("options") or {}
        place = str(opts.get("space") or ("mni" if space == "MNI" else "fov"))
        if meta.get("affine") is not None:
            affine = np.asarray(meta["affine"], dtype=np.float64)
        elif place == "mni":
            affine = mni_grid_affine(shape)  # type: ignore[arg-type]
        else:
            affine = np.diag([*(float(v) for v in meta.get("voxel_size_mm") or (1.0, 1.0, 1.0)), 1.0])
        return TrainingGrid(shape, affine, space, place, bool(opts.get("crop", False)),  # type: ignore[arg-type]
                            int(opts.get("interpolation_order", 1)), str(meta.get("modality") or "unknown"))
    shape = _grid_from_state(ck)
    if shape is None:
        raise ConfigError(
            f"{ck.path}: the checkpoint records neither its cohort's grid nor a normaliser/projection from which to "
            "infer it; retrain with a volkd that stores the cohort metadata in checkpoints"
        )
    norm_aff = (ck.normalizer or {}).get("affine")
    affine = np.asarray(norm_aff, dtype=np.float64) if norm_aff is not None else mni_grid_affine(shape)
    note = (f"{ck.path}: the checkpoint does not record its cohort's grid and space; assuming scans were placed "
            f"in MNI space on grid {shape} (volkd import's default)")
    return TrainingGrid(shape, affine, "MNI", "mni", recorded=False, notes=[note])  # type: ignore[arg-type]


def check_compatible(data: np.ndarray, affine: np.ndarray, grid: TrainingGrid, where: str, native_grid: bool = False) -> None:
    """Raise :class:`IncompatibleScanError` naming ``where`` when the scan cannot be placed on ``grid``.

    ``native_grid``: the scan already lies on the training grid (a cohort with that grid): no checks.
    """
    if data.ndim != 3:
        raise IncompatibleScanError(f"{where}: the scan has {data.ndim} dimensions {tuple(data.shape)}; the model needs one 3-D volume")
    if native_grid:
        return
    if min(data.shape) < MIN_AXIS_VOXELS:
        raise IncompatibleScanError(f"{where}: shape {tuple(data.shape)} has fewer than {MIN_AXIS_VOXELS} voxels along an axis; "
                                    "that is a slice or a projection, not a 3-D volume")
    if not np.isfinite(data).any():
        raise IncompatibleScanError(f"{where}: every voxel is NaN or Inf")
    vox = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    ratio = vox / grid.voxel_size
    if ratio.max() > MAX_VOXEL_RATIO or ratio.min() < MIN_VOXEL_RATIO:
        raise IncompatibleScanError(
            f"{where}: voxel size {np.round(vox, 3).tolist()} mm is too different from the training grid's "
            f"{np.round(grid.voxel_size, 3).tolist()} mm (allowed: {MIN_VOXEL_RATIO:g}× to {MAX_VOXEL_RATIO:g}× per axis); "
            "check the header's voxel size or resample the scan first")
    if grid.placement == "mni":
        cov = coverage(data.shape, affine, grid.shape, grid.affine)
        if cov < MIN_COVERAGE:
            raise IncompatibleScanError(
                f"{where}: the scan covers {cov:.0%} of the training field of view (needs ≥ {MIN_COVERAGE:.0%}); "
                "it does not look spatially normalised to the space the model was trained in (MNI)")
    else:
        fov = vox * np.asarray(data.shape, float)
        r = fov / grid.fov_mm
        if r.max() > MAX_FOV_RATIO or r.min() < 1.0 / MAX_FOV_RATIO:
            raise IncompatibleScanError(
                f"{where}: field of view {np.round(fov, 1).tolist()} mm differs from the training scans' "
                f"{np.round(grid.fov_mm, 1).tolist()} mm by more than {MAX_FOV_RATIO:g}× along an axis")


def place_on_grid(data: np.ndarray, affine: np.ndarray, grid: TrainingGrid, crop: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resample one RAS scan onto the training grid as the cohort's import did; returns (volume, its affine)."""
    data = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():  # as volkd import: non-finite voxels become 0
        data = np.where(bad, np.float32(0), data)
    crop = grid.crop if crop is None else crop
    if grid.placement == "mni":
        dst = grid.affine
    else:
        dst = placement("fov", grid.shape, data, affine, crop=crop).affine
    vol = resample_to_grid(data, affine, grid.shape, dst, order=grid.order)
    return vol, dst
