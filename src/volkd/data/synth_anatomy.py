"""The synthetic cohort's anatomy on a grid: AAL3 brain, scalp, striatal partial-volume maps (cached per grid)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from volkd.data import atlas


@dataclass(frozen=True)
class Anatomy:
    """Precomputed atlas maps of one grid (cached per grid)."""

    grid: tuple[int, int, int]
    affine: np.ndarray
    voxel_mm: np.ndarray
    brain: np.ndarray  # fraction of brain per voxel
    scalp: np.ndarray  # extracerebral soft tissue (0–1)
    basis: np.ndarray  # (K, *grid) smooth zero-mean fields inside the brain
    region_idx: dict[str, np.ndarray]  # flat indices of voxels touched by each region
    region_frac: dict[str, np.ndarray]  # partial-volume fraction at those voxels
    putamen_t: dict[str, np.ndarray]  # 0 = posterior end … 1 = anterior end of each putamen
    head_idx: np.ndarray  # flat indices where counts can be non-zero


@functools.lru_cache(maxsize=4)
def anatomy(grid: tuple[int, int, int]) -> Anatomy:
    """Atlas-derived maps for ``grid`` over the MNI field of view."""
    grid = tuple(int(g) for g in grid)  # type: ignore[assignment]
    aff = atlas.mni_grid_affine(grid)
    vox = np.linalg.norm(aff[:3, :3], axis=0)
    brain = atlas.brain_fraction(grid, aff).astype(np.float32)
    soft = ndimage.gaussian_filter(brain, sigma=6.0 / vox, mode="constant")
    scalp = (np.clip(soft / 0.12, 0, 1) * (1 - brain)).astype(np.float32)
    # smooth heterogeneity fields: fixed (seed-independent) random fields of ~25 mm scale
    rng = np.random.default_rng(12345)
    basis = []
    for _ in range(4):
        f = ndimage.gaussian_filter(rng.standard_normal(grid).astype(np.float32), sigma=12.0 / vox, mode="wrap")
        f *= brain
        f /= np.abs(f).max() + 1e-12
        basis.append(f)
    idx, frac, tpos = {}, {}, {}
    for name, lab in atlas.STRIATUM_LABELS.items():
        fr = atlas.region_fraction((lab,), grid, aff)
        flat = np.flatnonzero(fr.ravel() > 0.02)
        idx[name], frac[name] = flat, fr.ravel()[flat].astype(np.float32)
        if name.startswith("putamen"):
            y = np.unravel_index(flat, grid)[1].astype(np.float64)
            w = frac[name]
            lo, hi = np.min(y[w > 0.3]) if (w > 0.3).any() else y.min(), np.max(y[w > 0.3]) if (w > 0.3).any() else y.max()
            tpos[name] = np.clip((y - lo) / max(hi - lo, 1.0), 0, 1).astype(np.float32)
    head = np.flatnonzero((brain + scalp).ravel() > 1e-4)
    return Anatomy(grid, aff, vox, brain, scalp, np.stack(basis), idx, frac, tpos, head)  # type: ignore[arg-type]
