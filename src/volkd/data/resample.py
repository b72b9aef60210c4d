"""Resampling scans onto a cohort grid: anti-aliased, affine-aware (scipy.ndimage).

Two placements: ``mni`` resamples the scan's world coordinates onto the MNI grid
:func:`volkd.data.atlas.mni_grid_affine` (the scan must already be in MNI space), ``fov``
stretches the scan's own field of view (optionally cropped to the brain's bounding box)
onto the target grid. Downsampling first blurs with a gaussian whose sigma follows the
zoom factor (``(factor - 1) / 2`` source voxels, as scikit-image's ``rescale``), then
interpolates (linear by default, cubic spline with ``order=3``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from volkd.data.atlas import mni_grid_affine
from volkd.errors import ConfigError

SPACES = ("mni", "fov")


@dataclass
class Placement:
    """Where a scan lands: the target grid's shape and voxel→mm affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three grid axes."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def antialias_sigma(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """Gaussian sigma (source voxels, per source axis) that prevents aliasing when resampling."""
    m = np.linalg.inv(src_affine) @ dst_affine
    step = np.abs(m[:3, :3]).max(axis=1)  # source voxels travelled per target voxel, per source axis
    return np.maximum(0.0, (step - 1.0) / 2.0)


def resample_to_grid(
    data: np.ndarray,
    src_affine: np.ndarray,
    shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    order: int = 1,
    antialias: bool = True,
) -> np.ndarray:
    """Resample ``data`` (voxel→mm ``src_affine``) onto a grid of ``shape`` with ``dst_affine``.

    Points outside the scan are 0. Returns float32.
    """
    data = np.asarray(data, dtype=np.float32)
    src_affine = np.asarray(src_affine, dtype=np.float64)
    dst_affine = np.asarray(dst_affine, dtype=np.float64)
    if antialias:
        sigma = antialias_sigma(src_affine, dst_affine)
        if (sigma > 0).any():
            data = ndimage.gaussian_filter(data, sigma=sigma, mode="nearest", truncate=3.0)
    m = np.linalg.inv(src_affine) @ dst_affine  # target voxel → source voxel
    if np.allclose(m, np.eye(4), atol=1e-9) and tuple(shape) == data.shape:
        return np.ascontiguousarray(data, dtype=np.float32)
    lin = m[:3, :3]
    if np.count_nonzero(lin - np.diag(np.diag(lin))) == 0:
        lin = np.diag(lin)  # axis-aligned: scipy's faster separable path, same result
    out = ndimage.affine_transform(data, lin, offset=m[:3, 3], output_shape=tuple(int(s) for s in shape),
                                   order=order, mode="constant", cval=0.0, prefilter=order > 1)
    return out.astype(np.float32, copy=False)


def coverage(src_shape: tuple[int, ...], src_affine: np.ndarray, dst_shape: tuple[int, ...], dst_affine: np.ndarray) -> float:
    """Fraction of the target grid's world box covered by the scan's world box (axis-aligned boxes)."""
    def box(shape: tuple[int, ...], aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape[:3]], indexing="ij")).reshape(3, -1)
        world = aff[:3, :3] @ corners + aff[:3, 3:4]
        return world.min(axis=1), world.max(axis=1)

    (slo, shi), (dlo, dhi) = box(src_shape, np.asarray(src_affine, float)), box(dst_shape, np.asarray(dst_affine, float))
    inter = np.clip(np.minimum(shi, dhi) - np.maximum(slo, dlo), 0, None)
    return float(np.prod(inter) / np.prod(dhi - dlo))


def brain_bbox(data: np.ndarray, threshold: float = 0.1, margin: int = 2) -> tuple[slice, slice, slice]:
    """Bounding box of voxels above ``threshold`` × the 99.5th percentile, plus ``margin`` voxels.

    Falls back to the whole volume when nothing passes the threshold.
    """
    data = np.asarray(data)
    pos = data[data > 0]
    ref = float(np.percentile(pos, 99.5)) if pos.size else 0.0
    mask = data > threshold * ref if ref > 0 else np.zeros(data.shape, bool)
    if not mask.any():
        return tuple(slice(0, n) for n in data.shape)  # type: ignore[return-value]
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, data.shape[ax])))
    return tuple(out)  # type: ignore[return-value]


def fov_affine(src_affine: np.ndarray, box: tuple[slice, slice, slice], shape: tuple[int, int, int]) -> np.ndarray:
    """Affine of a ``shape`` grid spanning the source voxels in ``box`` edge to edge."""
    lo = np.array([s.start for s in box], dtype=float)
    n = np.array([s.stop - s.start for s in box], dtype=float)
    zoom = n / np.asarray(shape, dtype=float)  # source voxels per target voxel
    t = np.eye(4)
    t[:3, :3] = np.diag(zoom)
    t[:3, 3] = lo + zoom / 2.0 - 0.5  # target voxel centre i → source (i + ½)·zoom − ½ + lo
    return np.asarray(src_affine, dtype=np.float64) @ t


def placement(space: str, shape: tuple[int, int, int], data: np.ndarray | None = None,
              src_affine: np.ndarray | None = None, crop: bool = False,
              crop_threshold: float = 0.1, crop_margin: int = 2) -> Placement:
    """The target grid for one scan under ``space`` (``mni`` or ``fov``)."""
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if space == "mni":
        if crop:
            raise ConfigError("--crop applies to --space fov only: in MNI space the grid is the fixed MNI field of view")
        return Placement(shape, mni_grid_affine(shape))
    if space == "fov":
        assert data is not None and src_affine is not None
        box = brain_bbox(data, crop_threshold, crop_margin) if crop else tuple(slice(0, n) for n in data.shape)
        return Placement(shape, fov_affine(src_affine, box, shape))  # type: ignore[arg-type]
    raise ConfigError(f"space {space!r} unknown; choose one of {list(SPACES)}")


def resample_scan(data: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int], space: str = "mni",
                  crop: bool = False, order: int = 1, **crop_kw: float) -> tuple[np.ndarray, Placement]:
    """Place one scan onto the target grid; returns the volume and its :class:`Placement`."""
    where = placement(space, shape, data, affine, crop, **crop_kw)
    return resample_to_grid(data, affine, where.shape, where.affine, order=order), where
