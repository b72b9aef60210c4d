"""How separable is the synthetic cohort? Volume vs central slice vs SBR features.

Cross-validated (subject-grouped, stratified 5-fold; C chosen by an inner grouped 3-fold)
L2 logistic regression on
  * the whole volume, block-averaged to 16³ and divided by its own mean,
  * the single central axial slice through the striatum centre (full resolution, divided by its mean),
  * the same slice block-averaged in-plane like the volume (same resolution, 16² features),
  * the measured SBRs (region / occipital − 1, atlas masks; the classic clinical baseline),
  * the same SBRs measured on the central axial slice only (masks ∩ slice; reference: the
    occipital voxels of that slice, or its brain voxels when it has none),
  * the true (target) SBRs: the ceiling set by the borderline subjects.

Then the study's own SBR baseline (volkd.evaluate.sbr_baseline: standardised SBRs, logistic
regression, C chosen on validation) over subject-level 60/20/20 hold-out repeats, as a study
runs it (``--holdout-repeats``; the quick profile uses 3 on 200 subjects at 32³).

Usage: python benchmarks/synth_separability.py [--n-subjects 300] [--grid 64] [--difficulty default] [--modality spect]
       [--seeds 0] [--holdout-repeats 3] [--sbr-only]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from volkd.data import atlas
from volkd.data.splits import holdout_splits
from volkd.data.synth import REGIONS, synthesize
from volkd.evaluate.sbr import cohort_sbr, sbr_baseline


def block_mean(vols: np.ndarray, size: int) -> np.ndarray:
    """Average non-overlapping blocks so each volume becomes ``size``³ (crops the remainder)."""
    n, d, h, w = vols.shape
    f = (d // size, h // size, w // size)
    v = vols[:, : f[0] * size, : f[1] * size, : f[2] * size]
    return v.reshape(n, size, f[0], size, f[1], size, f[2]).mean(axis=(2, 4, 6))


def cv_scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Out-of-fold AUC and accuracy of an L2 logistic regression (grouped outer and inner CV)."""
    proba = np.zeros(len(y))
    outer = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for tr, te in outer.split(x, y, groups):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        search = GridSearchCV(pipe, {"logisticregression__C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0]}, cv=GroupKFold(3), scoring="roc_auc")
        search.fit(x[tr], y[tr], groups=groups[tr])
        proba[te] = search.predict_proba(x[te])[:, 1]
    return {"auc": float(roc_auc_score(y, proba)), "acc": float(accuracy_score(y, proba > 0.5))}


def slice_sbr(vols: np.ndarray, grid: tuple[int, int, int], k: int) -> np.ndarray:
    """SBRs (4 regions) measured on axial slice ``k`` alone."""
    masks = atlas.striatum_masks(grid)
    occ = atlas.occipital_mask(grid)[:, :, k]
    ref_mask = occ if occ.sum() >= 4 else atlas.brain_fraction(grid)[:, :, k] > 0.5
    sl = vols[:, :, :, k]
    ref = sl[:, ref_mask].mean(axis=1)
    return np.stack([sl[:, masks[r][:, :, k]].mean(axis=1) / ref - 1.0 for r in REGIONS], axis=1)


def features(cohort) -> dict[str, np.ndarray]:
    """The feature sets compared."""
    vols = np.asarray(cohort.volumes, dtype=np.float32)
    grid = tuple(cohort.meta.grid_shape)
    k = atlas.striatum_center(grid, np.array(cohort.meta.affine))[2]
    vol16 = block_mean(vols, 16).reshape(len(vols), -1)
    sl = vols[:, :, :, k].reshape(len(vols), -1)
    f = vols.shape[1] // 16
    sl16 = vols[:, : 16 * f, : 16 * f, k].reshape(len(vols), 16, f, 16, f).mean(axis=(2, 4)).reshape(len(vols), -1)
    asym = lambda a, b: np.abs(a - b) / ((a + b) / 2 + 1e-6)  # noqa: E731
    meas = cohort_sbr(cohort)  # the SBR baseline's measurement (atlas ROIs, occipital reference)
    true = cohort.scans[[f"true_sbr_{r}" for r in REGIONS]].to_numpy()
    add_asym = lambda m: np.c_[m, asym(m[:, 2], m[:, 3]), asym(m[:, 0], m[:, 1])]  # noqa: E731
    return {
        "volume 16^3": vol16 / vol16.mean(axis=1, keepdims=True),
        "central axial slice": sl / sl.mean(axis=1, keepdims=True),
        "central slice 16^2": sl16 / sl16.mean(axis=1, keepdims=True),
        "SBR from volume": add_asym(meas),
        "SBR from slice": add_asym(slice_sbr(vols, grid, k)),
        "true SBR": add_asym(true),
    }


def holdout_sbr_auc(cohort, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Test ROC AUC and accuracy of ``sbr_baseline`` over subject-level 60/20/20 hold-out repeats (seed 0)."""
    aucs, accs = [], []
    for split in holdout_splits(cohort, n_repeats=repeats, fractions=(0.6, 0.2, 0.2), seed=0):
        proba, _ = sbr_baseline(cohort, split, seed=0)
        y = cohort.y[split.test]
        aucs.append(roc_auc_score(y, proba[:, 1]))
        accs.append(accuracy_score(y, proba[:, 1] > 0.5))
    return np.array(aucs), np.array(accs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-subjects", type=int, default=300)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--difficulty", default="default")
    ap.add_argument("--modality", default="spect")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--holdout-repeats", type=int, default=3)
    ap.add_argument("--sbr-only", action="store_true", help="only the study's SBR baseline over hold-out repeats")
    a = ap.parse_args()
    for seed in a.seeds:
        t = time.perf_counter()
        c = synthesize(n_subjects=a.n_subjects, grid=a.grid, difficulty=a.difficulty, modality=a.modality, seed=seed)
        y, groups = c.y, c.subjects
        print(f"# {a.modality} {a.difficulty} grid {a.grid}^3 seed {seed}: {len(c)} scans, {len(set(groups))} subjects, "
              f"PD {int(y.sum())}/{len(y)} scans (synth {time.perf_counter() - t:.1f} s)")
        if not a.sbr_only:
            print(f"{'features':<22} {'dim':>6} {'AUC':>6} {'acc':>6}")
            for name, x in features(c).items():
                s = cv_scores(x, y, groups, seed)
                print(f"{name:<22} {x.shape[1]:>6} {s['auc']:>6.3f} {s['acc']:>6.3f}")
        aucs, accs = holdout_sbr_auc(c, a.holdout_repeats)
        sd = aucs.std(ddof=1) if len(aucs) > 1 else float("nan")
        print(f"SBR baseline (sbr_baseline), {a.holdout_repeats} hold-out repeats: test AUC {aucs.mean():.3f} ± {sd:.3f}, "
              f"accuracy {accs.mean():.3f}  (per repeat AUC {np.round(aucs, 3).tolist()})")


if __name__ == "__main__":
    main()
