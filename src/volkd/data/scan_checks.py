"""Checks on a scan's voxel values: is there an image at all?

A scan that is entirely NaN/Inf, constant (blank), or has nothing left inside the brain mask
would otherwise become an all-zero or flat training volume that only a count in a report
mentions. The importer refuses such scans (``--skip-bad`` lists them in ``skipped.csv``); predict
and explain skip them with the reason.
"""

from __future__ import annotations

import numpy as np

#: Brain mask of ``--crop`` (volkd.data.resample.brain_bbox): voxels above this × the 99.5th percentile.
CROP_PERCENTILE = 99.5


def value_problem(data: np.ndarray, crop: bool = False) -> str | None:
    """Why ``data`` is no image (``None`` when it is one): all non-finite, constant, or — with
    ``crop`` — an empty brain mask (the 99.5th percentile is not positive)."""
    finite = np.isfinite(data)
    if not finite.any():
        return f"every voxel is NaN or Inf ({data.size} voxels): no image"
    vals = data[finite] if not finite.all() else data
    lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        return f"the image is constant (every finite voxel = {lo:.6g}): a blank scan"
    if crop and float(np.percentile(vals, CROP_PERCENTILE)) <= 0:
        return (f"nothing to crop to: the brain mask is empty (the {CROP_PERCENTILE}th percentile of the "
                "voxel values is not positive); import it without --crop or check its intensities")
    return None


def placed_problem(vol: np.ndarray) -> str | None:
    """Why a scan placed on the target grid is empty (``None`` when it is not)."""
    if not np.isfinite(vol).all():
        return "resampled volume has non-finite values"
    if float(vol.max()) <= float(vol.min()):
        return "nothing of the scan lies on the target grid (the resampled volume is constant): check its affine / field of view"
    return None
