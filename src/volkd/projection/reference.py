"""Reference slices (mid-striatum) and striatum crop boxes for a cohort's grid."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from volkd.data import atlas
from volkd.data.cohort import VIEW_AXIS, Cohort, CohortMeta
from volkd.errors import ConfigError
from volkd.projection.spec import VIEWS, ProjectionSpec, image_shape

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


def _center_and_box_mni(meta: CohortMeta) -> tuple[tuple[int, int, int], np.ndarray]:
    grid = tuple(int(g) for g in meta.grid_shape)
    affine = np.asarray(meta.affine, dtype=float) if meta.affine is not None else atlas.mni_grid_affine(grid)
    mask = atlas.striatum_mask(grid, affine)
    if not mask.any():
        raise ConfigError(
            f"cohort grid {grid}: the atlas striatum falls outside the grid (check cohort.json 'affine'); "
            "set ref_index explicitly"
        )
    return atlas.striatum_center(grid, affine), mask


def _center_and_box_mean(volumes: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    region = bright_region(mean_image(volumes))
    com = ndimage.center_of_mass(region)
    return tuple(int(round(c)) for c in com), region  # type: ignore[return-value]


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
    """A copy of ``spec`` with ``ref_index`` (all three views), ``grid_shape`` and, if masked, ``crop_box``.

    Indices already in ``spec.ref_index`` are kept (``ref_source='explicit'`` when all of the
    spec's views were given). Otherwise: the atlas striatum centre when the cohort is in MNI
    space, else the centre of mass of the cohort mean image's brightest region (needs the
    volumes: a Cohort, or ``volumes=``). Indices are clamped so 2D+ε slices stay in the grid.
    """
    if isinstance(cohort_or_meta, Cohort):
        meta = cohort_or_meta.meta
        volumes = cohort_or_meta.volumes if volumes is None else volumes
    elif isinstance(cohort_or_meta, CohortMeta):
        meta = cohort_or_meta
    else:
        raise ConfigError(f"resolve_reference: expected a Cohort or CohortMeta, got {type(cohort_or_meta).__name__}")
    grid = tuple(int(g) for g in meta.grid_shape)
    given = dict(spec.ref_index or {})
    explicit = all(v in given for v in spec.views)
    needs_auto = not explicit or spec.mask_striatum
    center: tuple[int, int, int] | None = None
    mask: np.ndarray | None = None
    source = "explicit"
    if needs_auto:
        if str(meta.space).upper() == "MNI":
            center, mask = _center_and_box_mni(meta)
            auto_source = "atlas"
        elif volumes is not None:
            if tuple(volumes.shape[1:]) != grid:
                raise ConfigError(f"resolve_reference: volumes have grid {tuple(volumes.shape[1:])} but the cohort's is {grid}")
            center, mask = _center_and_box_mean(volumes)
            auto_source = "mean_image"
        else:
            raise ConfigError(
                f"resolve_reference: the cohort is not in MNI space (space={meta.space!r}), so the reference slice "
                "comes from its mean image: pass the Cohort or volumes=..., or set ref_index explicitly"
            )
        if not explicit:
            source = auto_source
    ref: dict[str, Any] = {}
    eps = spec.epsilon if spec.method == "slices" else 0
    for view in VIEWS:
        length = grid[VIEW_AXIS[view]]
        if view in given:
            ref[view] = int(given[view])
        elif center is not None:
            lo, hi = min(eps, length - 1), max(length - 1 - eps, 0)
            ref[view] = int(np.clip(center[VIEW_AXIS[view]], lo, hi))
    boxes = None
    if spec.mask_striatum and mask is not None:
        boxes = {view: box_for_view(mask, view, spec.crop_margin) for view in spec.views}
    return spec.replace(ref_index=ref, grid_shape=grid, ref_source=source, crop_box=boxes or spec.crop_box)
