"""Reference slices (mid-striatum, or per hemisphere), striatal slabs and striatum crop boxes for a cohort's grid."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from volkd.data import atlas
from volkd.data.cohort import VIEW_AXIS, Cohort, CohortMeta
from volkd.errors import ConfigError
from volkd.projection.spec import HEMISPHERE_SLOTS, SLOT_VIEW, VIEWS, ProjectionSpec, image_shape

#: Voxels above this percentile of the mean image form the "brightest region".
BRIGHT_PERCENTILE = 99.0


def mean_image(volumes: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Voxel-wise mean of N×D×H×W ``volumes`` (float64, read in chunks: memmap-friendly)."""
    acc = np.zeros(volumes.shape[1:], dtype=np.float64)
    for i in range(0, volumes.shape[0], chunk):
        acc += np.asarray(volumes[i:i + chunk], dtype=np.float64).sum(axis=0)
    return acc / max(volumes.shape[0], 1)


def bright_region(image: np.ndarray, percentile: float = BRIGHT_PERCENTILE) -> np.ndarray:
    """The connected region of voxels above ``percentile`` holding the most intensity (bool mask)."""
    thr = np.percentile(image, percentile)
    above = image > thr
    if not above.any():  # flat image: everything is "brightest"
        above = image >= thr
    labels, n = ndimage.label(above)
    if n <= 1:
        return labels > 0
    mass = ndimage.sum_labels(image - image.min(), labels, index=np.arange(1, n + 1))
    return labels == (int(np.argmax(mass)) + 1)


def _extent_center(mask: np.ndarray, axis: int) -> int:
    """Centre of ``mask``'s extent along ``axis`` (half-up rounding, as ``atlas.striatum_center``)."""
    present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    return int(np.floor((present[0] + present[-1]) / 2 + 0.5))


def _center_and_box_mni(meta: CohortMeta) -> tuple[tuple[int, int, int], np.ndarray, dict[str, np.ndarray]]:
    grid = tuple(int(g) for g in meta.grid_shape)
    affine = np.asarray(meta.affine, dtype=float) if meta.affine is not None else atlas.mni_grid_affine(grid)
    mask = atlas.striatum_mask(grid, affine)
    if not mask.any():
        raise ConfigError(
            f"cohort grid {grid}: the atlas striatum falls outside the grid (check cohort.json 'affine'); "
            "set ref_index explicitly"
        )
    parts = atlas.striatum_masks(grid, affine)
    sides = {"sagittal_L": parts["caudate_L"] | parts["putamen_L"], "sagittal_R": parts["caudate_R"] | parts["putamen_R"]}
    return atlas.striatum_center(grid, affine), mask, sides


def _center_and_box_mean(volumes: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray, dict[str, np.ndarray]]:
    image = mean_image(volumes)
    region = bright_region(image)
    com = ndimage.center_of_mass(region)
    center = tuple(int(round(c)) for c in com)
    return center, region, _bright_sides(image)  # type: ignore[return-value]


def _bright_sides(image: np.ndarray) -> dict[str, np.ndarray]:
    """Per hemisphere, the brightest region on its side of the bright voxels' midline (RAS: low x = left).

    The midline is the intensity-weighted x centre of every voxel above :data:`BRIGHT_PERCENTILE`
    (both striata); each side keeps its connected region holding the most intensity.
    """
    thr = np.percentile(image, BRIGHT_PERCENTILE)
    weight = np.where(image > thr, image - thr, 0.0)
    if not weight.any():
        weight = np.ones_like(image)
    x = np.arange(image.shape[0], dtype=float)
    mid = float((weight.sum(axis=(1, 2)) * x).sum() / weight.sum())
    sides = {}
    for slot, keep in (("sagittal_L", x < mid), ("sagittal_R", x >= mid)):
        half = np.where(keep[:, None, None], image, image.min())
        sides[slot] = bright_region(half) & keep[:, None, None]
    return sides


def _mass_center(image_mask: np.ndarray, axis: int) -> int:
    """Centre of mass of a mask along ``axis`` (rounded)."""
    return int(round(ndimage.center_of_mass(image_mask)[axis]))


def _slab(mask: np.ndarray, axis: int, margin: int, length: int) -> tuple[int, int]:
    """Half-open range of the slices along ``axis`` that hold ``mask``, widened by ``margin`` on each side."""
    present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    if not present.size:
        return (0, length)
    return (max(int(present[0]) - margin, 0), min(int(present[-1]) + margin + 1, length))


def box_for_view(mask: np.ndarray, view: str, margin: int) -> tuple[int, int, int, int]:
    """Bounding box (row0, row1, col0, col1; half-open, displayed orientation) of ``mask`` projected on ``view``, plus ``margin``."""
    axis = VIEW_AXIS[view]
    rest = [a for a in range(3) if a != axis]
    u, v = rest
    h, w = image_shape(mask.shape, view)
    us = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != u)))
    vs = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != v)))
    c0, c1 = max(int(us[0]) - margin, 0), min(int(us[-1]) + margin + 1, w)
    # rows run along V reversed: V index j sits on row (len_V − 1 − j)
    r0, r1 = max(h - 1 - int(vs[-1]) - margin, 0), min(h - int(vs[0]) + margin, h)
    return (r0, r1, c0, c1)


def resolve_reference(
    spec: ProjectionSpec,
    cohort_or_meta: Cohort | CohortMeta,
    volumes: np.ndarray | None = None,
) -> ProjectionSpec:
    """A copy of ``spec`` with ``ref_index``, ``grid_shape`` and, where needed, ``axis_range`` and ``crop_box``.

    ``ref_index``: all three views (and, with ``ref_mode='hemispheres'``, ``sagittal_L`` and
    ``sagittal_R``: the centre of each striatum's extent in x). Indices already in
    ``spec.ref_index`` are kept (``ref_source='explicit'`` when all of the spec's slots were
    given). Otherwise: the atlas striatum when the cohort is in MNI space, else the cohort mean
    image's brightest region (its centre of mass; per hemisphere, the bright voxels on each side
    of it) — needs the volumes (a Cohort, or ``volumes=``). Indices are clamped so 2D+ε slices
    stay in the grid. ``axis_range`` (whole-axis methods): with ``slab='striatum'`` the slices
    holding the striatum (per hemisphere for the sagittal slots) ± ``slab_margin``; with
    ``ref_mode='hemispheres'`` and no slab, each hemisphere's side of the striatum centre.
    """
    if isinstance(cohort_or_meta, Cohort):
        meta = cohort_or_meta.meta
        volumes = cohort_or_meta.volumes if volumes is None else volumes
    elif isinstance(cohort_or_meta, CohortMeta):
        meta = cohort_or_meta
    else:
        raise ConfigError(f"resolve_reference: expected a Cohort or CohortMeta, got {type(cohort_or_meta).__name__}")
    grid = tuple(int(g) for g in meta.grid_shape)
    slots = spec.slots
    given = dict(spec.ref_index or {})
    given_range = dict(spec.axis_range or {})
    explicit = all(v in given for v in slots)
    needs_range = [s for s in slots if spec.needs_axis_range(s) and s not in given_range]
    needs_auto = not explicit or spec.mask_striatum or bool(needs_range)
    center: tuple[int, int, int] | None = None
    mask: np.ndarray | None = None
    sides: dict[str, np.ndarray] = {}
    source = "explicit"
    source_auto = None
    if needs_auto:
        if str(meta.space).upper() == "MNI":
            center, mask, sides = _center_and_box_mni(meta)
            auto_source = "atlas"
        elif volumes is not None:
            if tuple(volumes.shape[1:]) != grid:
                raise ConfigError(f"resolve_reference: volumes have grid {tuple(volumes.shape[1:])} but the cohort's is {grid}")
            center, mask, sides = _center_and_box_mean(volumes)
            auto_source = "mean_image"
        else:
            raise ConfigError(
                f"resolve_reference: the cohort is not in MNI space (space={meta.space!r}), so the reference slice "
                "comes from its mean image: pass the Cohort or volumes=..., or set ref_index explicitly"
            )
        source_auto = auto_source
        if not explicit:
            source = auto_source
    ref: dict[str, Any] = {}
    eps = spec.epsilon if spec.method == "slices" else 0
    wanted = list(VIEWS) + (list(HEMISPHERE_SLOTS) if spec.ref_mode == "hemispheres" else [])
    for slot in wanted:
        length = grid[VIEW_AXIS[SLOT_VIEW[slot]]]
        lo, hi = min(eps, length - 1), max(length - 1 - eps, 0)
        if slot in given:
            ref[slot] = int(given[slot])
        elif slot in HEMISPHERE_SLOTS and sides:
            c = _extent_center(sides[slot], 0) if source_auto == "atlas" else _mass_center(sides[slot], 0)
            ref[slot] = int(np.clip(c, lo, hi))
        elif center is not None and slot in VIEWS:
            ref[slot] = int(np.clip(center[VIEW_AXIS[slot]], lo, hi))
    ranges = {k: tuple(v) for k, v in given_range.items()}
    for slot in needs_range:
        assert center is not None and mask is not None
        axis = VIEW_AXIS[SLOT_VIEW[slot]]
        length = grid[axis]
        if spec.slab == "striatum":
            ranges[slot] = _slab(sides[slot] if slot in HEMISPHERE_SLOTS else mask, axis, spec.slab_margin, length)
        else:  # hemispheres, whole axis: each side of the centre
            c = int(np.clip(center[0], 1, length - 1))
            ranges[slot] = (0, c) if slot == "sagittal_L" else (c, length)
    boxes = None
    if spec.mask_striatum and mask is not None:
        boxes = {view: box_for_view(mask, view, spec.crop_margin) for view in spec.views}
    return spec.replace(ref_index=ref, grid_shape=grid, ref_source=source, crop_box=boxes or spec.crop_box,
                        axis_range=ranges or spec.axis_range)
