"""A PNG preview of a cohort: a few scans per class, three orthogonal slices through the striatum."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volkd.atomic import atomic_file
from volkd.data import atlas
from volkd.data.cohort import VIEW_AXIS, Cohort


def preview_indices(cohort: Cohort, per_class: int = 3) -> list[int]:
    """The first ``per_class`` baseline scans (distinct subjects) of each class, in class order."""
    scans = cohort.scans
    first = scans["visit"].astype(int) == scans.groupby("subject_id")["visit"].transform("min").astype(int)
    out: list[int] = []
    for c in cohort.class_names:
        idx = np.flatnonzero(((scans["label"].astype(str) == c) & first).to_numpy())
        out.extend(int(i) for i in idx[:per_class])
    return out


def slice_centre(cohort: Cohort) -> tuple[int, int, int]:
    """The striatum centre (atlas) for MNI cohorts, else the grid centre."""
    grid = tuple(cohort.meta.grid_shape)
    if cohort.meta.space == "MNI":
        aff = np.asarray(cohort.meta.affine) if cohort.meta.affine is not None else None
        return atlas.striatum_center(grid, aff)
    return tuple(g // 2 for g in grid)  # type: ignore[return-value]


def left_striatum_x(cohort: Cohort, default: int) -> int:
    """Sagittal index through the left striatum (the striatum centre is the midline)."""
    if cohort.meta.space != "MNI":
        return default
    aff = np.asarray(cohort.meta.affine) if cohort.meta.affine is not None else None
    m = atlas.striatum_masks(tuple(cohort.meta.grid_shape), aff)
    xs = np.flatnonzero((m["caudate_L"] | m["putamen_L"]).any(axis=(1, 2)))
    return int(round(xs.mean())) if xs.size else default


def save_preview(cohort: Cohort, path: str | Path, per_class: int = 3) -> Path:
    """Write a PNG (rows: scans; columns: axial, coronal, sagittal, neurological convention)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = preview_indices(cohort, per_class)
    ci, cj, ck = slice_centre(cohort)
    ci = left_striatum_x(cohort, ci)
    vox = np.asarray(cohort.meta.voxel_size_mm, dtype=float)
    views = (("axial", VIEW_AXIS["axial"], ck, (vox[0], vox[1])),
             ("coronal", VIEW_AXIS["coronal"], cj, (vox[0], vox[2])),
             ("sagittal (left striatum)", VIEW_AXIS["sagittal"], ci, (vox[1], vox[2])))
    fig, axes = plt.subplots(len(idx), 3, figsize=(7.5, 2.4 * len(idx)), squeeze=False)
    for row, i in enumerate(idx):
        vol = np.asarray(cohort.volumes[i], dtype=np.float32)
        vmax = float(np.percentile(vol, 99.9)) or 1.0
        r = cohort.scans.iloc[i]
        for col, (name, ax_i, c, (sx, sy)) in enumerate(views):
            img = np.take(vol, c, axis=ax_i)  # remaining axes in order: first → horizontal
            ax = axes[row, col]
            ax.imshow(img.T, origin="lower", cmap="inferno", vmin=0, vmax=vmax, aspect=sy / sx, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{name} ({'xyz'[ax_i]}={c})", fontsize=9)
        axes[row, 0].set_ylabel(f"{r['label']}\n{r['subject_id']} v{r['visit']}", fontsize=9)
    fig.suptitle(f"{cohort.meta.modality} cohort: {len(cohort)} scans (left of image = patient left)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, force=True, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=80)
    plt.close(fig)
    return path
