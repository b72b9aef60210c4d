"""The SBR clinical baseline: binding ratios on known uptake, and a separable baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volkd.data.atlas import mni_grid_affine, occipital_mask, striatum_masks
from volkd.data.cohort import Cohort, CohortMeta
from volkd.data.splits import Split, holdout_splits
from volkd.errors import LeakageError
from volkd.evaluate import classification_metrics
from volkd.evaluate.sbr import SBR_REGIONS, SBRError, cohort_sbr, sbr_baseline, sbr_features

GRID = (24, 24, 24)


def _volume(sbr: dict[str, float], occipital: float = 2.0, background: float = 0.7) -> np.ndarray:
    """Uptake: background, occipital reference, and region = occipital × (1 + SBR)."""
    aff = mni_grid_affine(GRID)
    v = np.full(GRID, background, np.float32)
    v[occipital_mask(GRID, aff)] = occipital
    for name, m in striatum_masks(GRID, aff).items():
        v[m] = occipital * (1 + sbr[name])
    return v


def _cohort(n_subjects: int = 40, seed: int = 0, space: str = "MNI") -> Cohort:
    rng = np.random.default_rng(seed)
    rows, vols = [], []
    for s in range(n_subjects):
        pd_ = s % 2 == 1
        for v in range(1 + s % 2):
            put = rng.normal(0.7 if pd_ else 1.8, 0.15, 2)
            cau = rng.normal(2.0 if pd_ else 3.1, 0.3, 2)
            sbr = {"caudate_L": cau[0], "caudate_R": cau[1], "putamen_L": put[0], "putamen_R": put[1]}
            vols.append(_volume(sbr, occipital=rng.uniform(1, 3)) * rng.uniform(0.5, 2))
            rows.append({"scan_id": f"S{s:02d}_{v}", "subject_id": f"S{s:02d}", "visit": v, "label": "PD" if pd_ else "control"})
    meta = CohortMeta(grid_shape=GRID, class_names=["control", "PD"], space=space, affine=mni_grid_affine(GRID).tolist())
    return Cohort(np.stack(vols), pd.DataFrame(rows), meta)


def test_sbr_equals_known_ratio():
    want = {"caudate_L": 2.5, "caudate_R": 3.0, "putamen_L": 0.5, "putamen_R": 1.25}
    v = np.stack([_volume(want), 3 * _volume(want, occipital=1.0)])
    f = sbr_features(v, GRID, mni_grid_affine(GRID))
    assert f.shape == (2, 4)
    np.testing.assert_allclose(f, [[want[r] for r in SBR_REGIONS]] * 2, rtol=1e-6)
    # chunked reading gives the same answer
    np.testing.assert_allclose(sbr_features(v, chunk=1), f)


def test_left_is_left():
    aff = mni_grid_affine(GRID)
    m = striatum_masks(GRID, aff)
    x_mm = lambda mask: (aff @ np.r_[np.argwhere(mask).mean(0), 1])[0]  # noqa: E731
    assert x_mm(m["caudate_L"]) < 0 < x_mm(m["caudate_R"])
    v = _volume({"caudate_L": 1.0, "caudate_R": 2.0, "putamen_L": 3.0, "putamen_R": 4.0})
    np.testing.assert_allclose(sbr_features(v[None]), [[1.0, 2.0, 3.0, 4.0]], rtol=1e-6)


def test_nonpositive_reference_names_scan():
    v = np.zeros((2, *GRID), np.float32)
    v[0] = 1
    with pytest.raises(SBRError, match="scan 'b'.*occipital reference mean is 0"):
        sbr_features(v, scan_ids=["a", "b"])


def test_baseline_separates_clear_sbrs():
    c = _cohort()
    split = holdout_splits(c, n_repeats=1, seed=2)[0]
    proba, info = sbr_baseline(c, split, seed=0)
    assert proba.shape == (len(split.test), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    m = classification_metrics(c.y[split.test], proba)
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0
    assert info["features"] == list(SBR_REGIONS) and info["C"] in (0.01, 0.1, 1.0, 10.0, 100.0)
    assert set(info["val_log_loss"]) == {"0.01", "0.1", "1.0", "10.0", "100.0"}
    # lower putamen SBR → PD: the (standardised) putamen coefficients are negative
    assert info["coef"][0][2] < 0 and info["coef"][0][3] < 0
    # training-scan SBR means: controls above PD
    assert info["train_sbr_mean"]["control"][2] > 1.4 > 1.0 > info["train_sbr_mean"]["PD"][2]
    np.testing.assert_allclose(info["test_sbr"], cohort_sbr(c, split.test))
    # deterministic
    again, _ = sbr_baseline(c, split, seed=0)
    np.testing.assert_array_equal(again, proba)


def test_baseline_refuses_non_mni_and_leaky_splits():
    c = _cohort(n_subjects=12, space="unknown")
    split = holdout_splits(c, n_repeats=1)[0]
    with pytest.raises(SBRError, match="needs scans in MNI space.*'unknown'"):
        sbr_baseline(c, split)
    c = _cohort(n_subjects=12)
    leaky = Split(0, split.train, split.val, np.r_[split.test, split.train[:1]], seed=0, kind="x")
    with pytest.raises(LeakageError):
        sbr_baseline(c, leaky)
    ctrl_only = np.flatnonzero(c.y == 0)
    with pytest.raises(SBRError, match=r"training scans lack class\(es\) \['PD'\]"):
        sbr_baseline(c, Split(0, ctrl_only[:3], [], np.flatnonzero(c.y == 1), seed=0, kind="x"))


def test_sbr_predict_matches_sklearn() -> None:
    import numpy as np

    from volkd.evaluate import sbr_predict
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)
    m = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    info = {"scaler_mean": m[0].mean_.tolist(), "scaler_scale": m[0].scale_.tolist(),
            "coef": m[-1].coef_.tolist(), "intercept": m[-1].intercept_.tolist()}
    np.testing.assert_allclose(sbr_predict(info, x), m.predict_proba(x), rtol=1e-10)
