"""The clinical quantification baseline: striatal binding ratios + logistic regression.

SBR of a region = mean uptake in the region / mean uptake in the occipital reference − 1,
for caudate and putamen, left and right (AAL3 masks on the cohort's MNI grid). The four
SBRs of the training scans, standardised, fit a logistic regression; it predicts the test
scans. This is what DaTscan readers' quantification software does, and on PPMI it is
already a strong baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from volkd.data.atlas import mni_grid_affine, occipital_mask, striatum_masks
from volkd.data.cohort import Cohort
from volkd.data.splits import Split, check_no_leakage
from volkd.errors import VolkdError

SBR_REGIONS = ("caudate_L", "caudate_R", "putamen_L", "putamen_R")
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_CHUNK = 32


class SBRError(VolkdError):
    """The SBR baseline cannot run on this cohort or these scans."""


def _region_weights(grid: tuple[int, int, int], affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Voxels used by any region and a (n_voxels, 5) matrix of per-region averaging weights."""
    masks = striatum_masks(grid, affine)
    regions = [np.asarray(masks[r], dtype=bool) for r in SBR_REGIONS] + [np.asarray(occipital_mask(grid, affine), dtype=bool)]
    for name, m in zip((*SBR_REGIONS, "occipital"), regions):
        if not m.any():
            raise SBRError(f"the {name} mask is empty on grid {grid}; is the affine that of an MNI-space grid?")
    union = np.logical_or.reduce(regions)
    w = np.stack([m[union] / m.sum() for m in regions], axis=1).astype(np.float64)
    return union, w


def sbr_features(volumes: np.ndarray, grid: tuple[int, int, int] | None = None, affine: np.ndarray | list | None = None,
                 scan_ids: np.ndarray | list[str] | None = None, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Per-scan SBRs ``(N, 4)``: caudate L/R, putamen L/R = region mean / occipital mean − 1.

    ``volumes`` are N×D×H×W in RAS+ MNI space (read ``chunk`` scans at a time, so a
    memory-mapped cohort is fine); ``affine`` is the grid's voxel→mm affine (default: the
    standard MNI field of view on this grid). ``scan_ids`` name scans in errors.
    """
    if volumes.ndim != 4:
        raise SBRError(f"sbr_features: expected volumes N×D×H×W, got shape {volumes.shape}")
    grid = tuple(int(g) for g in (grid or volumes.shape[1:]))
    if grid != tuple(volumes.shape[1:]):
        raise SBRError(f"sbr_features: grid {grid} does not match the volumes' grid {tuple(volumes.shape[1:])}")
    aff = mni_grid_affine(grid) if affine is None else np.asarray(affine, dtype=np.float64)
    union, w = _region_weights(grid, aff)
    n = volumes.shape[0]
    means = np.empty((n, w.shape[1]), dtype=np.float64)
    for i in range(0, n, chunk):
        block = np.asarray(volumes[i:i + chunk])
        means[i:i + chunk] = block[:, union].astype(np.float64) @ w
    ref = means[:, -1]
    bad = np.flatnonzero(~(ref > 0))
    if len(bad):
        j = int(bad[0])
        who = f"scan {scan_ids[j]!r}" if scan_ids is not None else f"scan index {j}"
        raise SBRError(f"{who}: occipital reference mean is {ref[j]:.4g} ≤ 0, so its SBR is undefined; "
                       "the scan is empty, not intensity-positive, or not in MNI space")
    return means[:, :-1] / ref[:, None] - 1.0


def cohort_sbr(cohort: Cohort, indices: np.ndarray | None = None, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """SBR features of ``cohort``'s scans at ``indices`` (all by default); needs an MNI-space cohort."""
    if cohort.meta.space != "MNI":
        where = cohort.path or "cohort"
        raise SBRError(f"{where}: the SBR baseline needs scans in MNI space (cohort.json space is {cohort.meta.space!r}); "
                       "spatially normalise the scans to MNI before import, or leave the SBR baseline out")
    idx = np.arange(len(cohort)) if indices is None else np.asarray(indices, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    feats = np.empty((len(idx), len(SBR_REGIONS)))
    # read in sorted order (sequential on a memmap), chunk by chunk
    grid = tuple(cohort.meta.grid_shape)
    for i in range(0, len(idx), chunk):
        sel = idx[order[i:i + chunk]]
        feats[order[i:i + chunk]] = sbr_features(np.asarray(cohort.volumes[sel]), grid, cohort.meta.affine,
                                                 scan_ids=cohort.scan_ids[sel], chunk=chunk)
    return feats


def _model(c: float, seed: int, class_weight: str | None):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, random_state=seed, class_weight=class_weight))


def sbr_baseline(cohort: Cohort, split: Split, seed: int = 0, c_grid: tuple[float, ...] = C_GRID,
                 class_weight: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit standardised-SBR logistic regression on train; return test probabilities and model info.

    When the split has validation scans, the inverse regularisation ``C`` is chosen from
    ``c_grid`` by validation log-loss (ties → stronger regularisation); the model is then
    fit on the training scans only. ``proba_test`` is ``(n_test, n_classes)``.
    """
    check_no_leakage(cohort, split)
    if len(split.train) == 0 or len(split.test) == 0:
        raise SBRError(f"split repeat {split.repeat}: the SBR baseline needs training and test scans")
    y = cohort.y
    n_classes = len(cohort.class_names)
    missing = sorted(set(range(n_classes)) - set(y[split.train].tolist()))
    if missing:
        raise SBRError(f"split repeat {split.repeat}: training scans lack class(es) {[cohort.class_names[m] for m in missing]}; "
                       "the baseline cannot learn them")
    x_train, x_test = cohort_sbr(cohort, split.train), cohort_sbr(cohort, split.test)
    val_loss: dict[str, float] = {}
    chosen = 1.0
    if len(split.val) and len(c_grid) > 1:
        x_val = cohort_sbr(cohort, split.val)
        for c in sorted(c_grid):
            m = _model(c, seed, class_weight).fit(x_train, y[split.train])
            val_loss[repr(float(c))] = float(log_loss(y[split.val], m.predict_proba(x_val), labels=list(range(n_classes))))
        chosen = float(min(sorted(c_grid), key=lambda c: val_loss[repr(float(c))]))
    elif len(c_grid) == 1:
        chosen = float(c_grid[0])
    model = _model(chosen, seed, class_weight).fit(x_train, y[split.train])
    proba = model.predict_proba(x_test)
    lr, scaler = model[-1], model[0]
    info = {
        "model": "logistic_regression", "features": list(SBR_REGIONS), "C": chosen,
        "C_selection": "validation log-loss" if val_loss else "fixed", "val_log_loss": val_loss,
        "coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist(),
        "scaler_mean": scaler.mean_.tolist(), "scaler_scale": scaler.scale_.tolist(),
        "class_names": cohort.class_names, "class_weight": class_weight,
        "n_train": int(len(split.train)), "n_val": int(len(split.val)), "n_test": int(len(split.test)),
        "train_sbr_mean": {c: x_train[y[split.train] == k].mean(axis=0).tolist() for k, c in enumerate(cohort.class_names)},
        "test_sbr": x_test.tolist(), "seed": int(seed), "repeat": int(split.repeat),
    }
    return proba, info


def sbr_predict(info: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Class probabilities of the fitted SBR logistic regression (``sbr_baseline``'s info) for SBR features ``x``.

    Lets the baseline fitted on one cohort score another (e.g. an external cohort).
    """
    z = (np.asarray(x, float) - np.asarray(info["scaler_mean"])) / np.asarray(info["scaler_scale"])
    logits = z @ np.asarray(info["coef"]).T + np.asarray(info["intercept"])
    if logits.shape[1] == 1:  # binary: one logit for class 1
        p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1 - p1, p1], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


__all__ = ["C_GRID", "SBRError", "SBR_REGIONS", "cohort_sbr", "sbr_baseline", "sbr_features", "sbr_predict"]
