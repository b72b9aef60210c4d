"""Is a synthetic cohort calibrated? SBRs measured on its images vs the literature targets it was made for.

The measurement is the SBR baseline's own (:func:`volkd.evaluate.sbr.cohort_sbr`: AAL3 ROI mean /
occipital mean − 1 on the final volumes). Per class, on baseline scans: putamen SBR (mean of left
and right), caudate SBR, and the putamen asymmetry index |L − R| / mean(L, R), each as mean and sd,
against the cohort's ``Contrast`` (``cohort.json`` → ``extra.synth.contrast``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from volkd.data.cohort import Cohort
from volkd.evaluate.sbr import SBR_REGIONS, cohort_sbr
from volkd.errors import VolkdError

#: Relative tolerance of a calibrated cohort: measured mean and sd within ±10 % of the target.
TOLERANCE = 0.10
QUANTITIES = (("putamen SBR", "putamen"), ("caudate SBR", "caudate"), ("putamen asymmetry", "asym"))
_CLASS_KEY = {"control": "control", "PD": "pd"}


def measured_indices(sbr: np.ndarray) -> dict[str, np.ndarray]:
    """Putamen and caudate SBR (mean of the sides) and putamen asymmetry from ``(N, 4)`` SBR features."""
    col = {r: i for i, r in enumerate(SBR_REGIONS)}
    put = (sbr[:, col["putamen_L"]] + sbr[:, col["putamen_R"]]) / 2
    cau = (sbr[:, col["caudate_L"]] + sbr[:, col["caudate_R"]]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        asym = np.abs(sbr[:, col["putamen_L"]] - sbr[:, col["putamen_R"]]) / put
    return {"putamen": put, "caudate": cau, "asym": asym}


def calibration_table(cohort: Cohort, baseline_only: bool = True, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Measured vs target SBR statistics per class: one row per (quantity, class).

    Columns: quantity, class, n, target_mean, target_sd, measured_mean, measured_sd,
    dev_mean and dev_sd (relative deviations) and ``within`` (both within ``tolerance``).
    """
    synth = (cohort.meta.extra or {}).get("synth")
    if not synth or not synth.get("contrast"):
        where = cohort.path or "cohort"
        raise VolkdError(f"{where}: not a synthetic cohort (cohort.json has no extra.synth.contrast), so it has no targets; "
                         "the calibration report applies to cohorts made by `volkd synth`")
    contrast = synth["contrast"]
    scans = cohort.scans
    keep = (scans["visit"].astype(int) == 0).to_numpy() if baseline_only and "visit" in scans else np.ones(len(scans), bool)
    idx = np.flatnonzero(keep)
    values = measured_indices(cohort_sbr(cohort, idx))
    labels = scans["label"].astype(str).to_numpy()[idx]
    rows = []
    for name, key in QUANTITIES:
        for cls in cohort.class_names:
            if cls not in _CLASS_KEY:
                continue
            target = contrast[f"{key}_{_CLASS_KEY[cls]}"]
            v = values[key][labels == cls]
            v = v[np.isfinite(v)]
            mean, sd = (float(v.mean()), float(v.std(ddof=1))) if len(v) > 1 else (float("nan"), float("nan"))
            dm, ds = mean / target["mean"] - 1.0, sd / target["sd"] - 1.0
            rows.append({"quantity": name, "class": cls, "n": int(len(v)), "target_mean": target["mean"], "target_sd": target["sd"],
                         "measured_mean": mean, "measured_sd": sd, "dev_mean": dm, "dev_sd": ds,
                         "within": bool(abs(dm) <= tolerance and abs(ds) <= tolerance)})
    return pd.DataFrame(rows)


__all__ = ["TOLERANCE", "calibration_table", "measured_indices"]
