"""Statistics over repeats: mean ± sd with a t-based CI, and paired Wilcoxon comparisons.

Repeats of a hold-out protocol share their splits across methods, so methods are compared
*paired* (same repeat = same test scans). With few repeats the Wilcoxon signed-rank test
cannot reach small p-values at all; :func:`paired_test` says so instead of implying a
difference was looked for and not found.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from volkd.evaluate.metrics import EvaluationError

ALPHA = 0.05


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return v[np.isfinite(v)]


def summarise(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> dict[str, float | int]:
    """Mean, sd (ddof 1), t-based CI of the mean and n over the finite ``values``.

    NaNs (e.g. an undefined AUC in one repeat) are left out and counted in ``n_missing``.
    With n = 1 the sd and CI are NaN; with n = 0 everything is NaN.
    """
    if not 0 < confidence < 1:
        raise EvaluationError(f"confidence must be in (0, 1), got {confidence}")
    raw = np.asarray(values, dtype=np.float64).reshape(-1)
    v = _finite(raw)
    n = int(v.size)
    out: dict[str, float | int] = {"mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                                   "n": n, "n_missing": int(raw.size - n)}
    if n == 0:
        return out
    out["mean"] = float(v.mean())
    if n == 1:
        return out
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    out.update(sd=sd, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def min_attainable_p(n_untied: int) -> float:
    """Smallest two-sided p-value an exact Wilcoxon signed-rank test can give with n untied pairs."""
    return 1.0 if n_untied <= 0 else min(1.0, 2.0 * 0.5**n_untied)


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014): (R+ − R−) / (R+ + R−), zero diffs dropped."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    r = stats.rankdata(np.abs(d))
    return float((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, names: tuple[str, str] = ("A", "B"),
                alpha: float = ALPHA, higher_is_better: bool = True) -> dict[str, Any]:
    """Compare paired results ``a`` vs ``b`` (one value per repeat) with the Wilcoxon signed-rank test.

    Returns n, wins/ties/losses of ``a``, mean difference (a − b) with its 95% CI, the
    p-value, the matched-pairs rank-biserial effect size (+1: ``a`` higher in every pair),
    the smallest attainable p and a plain-language ``verdict``. Pairs with a NaN are dropped.
    """
    x, y = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise EvaluationError(f"paired_test needs one value per repeat for both methods, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    tied = np.isclose(d, 0.0, rtol=0.0, atol=1e-12)
    d = np.where(tied, 0.0, d)
    better = d > 0 if higher_is_better else d < 0
    worse = d < 0 if higher_is_better else d > 0
    n, n_untied = int(d.size), int((~tied).sum())
    ci = summarise(d)
    out: dict[str, Any] = {
        "n": n, "n_dropped": int((~keep).sum()), "n_untied": n_untied,
        "wins": int(better.sum()), "ties": int(tied.sum()), "losses": int(worse.sum()),
        "mean_diff": ci["mean"], "diff_ci_low": ci["ci_low"], "diff_ci_high": ci["ci_high"],
        "statistic": math.nan, "p_value": math.nan, "effect_size": rank_biserial(d),
        "min_attainable_p": min_attainable_p(n_untied), "significant": False,
    }
    na, nb = names
    if n == 0:
        out["verdict"] = f"no comparison: no repeat has finite results for both {na} and {nb}"
        return out
    if n_untied == 0:
        out["p_value"] = 1.0
        out["verdict"] = f"no difference: {na} and {nb} are tied in all {n} repeats"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties/small n; we report both below
        res = stats.wilcoxon(d[~tied], zero_method="wilcox", alternative="two-sided")
    out["statistic"], out["p_value"] = float(res.statistic), float(res.pvalue)
    direction = "higher" if out["mean_diff"] > 0 else "lower"
    record = f"{out['wins']} wins / {out['ties']} ties / {out['losses']} losses for {na}"
    if out["min_attainable_p"] >= alpha:
        out["verdict"] = (f"within noise: too few repeats to tell — with {n_untied} untied repeat(s) the exact Wilcoxon "
                          f"test cannot reach p < {alpha:g} (smallest possible p = {out['min_attainable_p']:.3g}); "
                          f"{record}; run more repeats")
    elif out["p_value"] >= alpha:
        out["verdict"] = f"within noise: {na} vs {nb} p = {out['p_value']:.3g} ≥ {alpha:g}; {record}"
    else:
        out["significant"] = True
        out["verdict"] = (f"{na} {direction} than {nb}: mean difference {out['mean_diff']:+.4g} "
                          f"(p = {out['p_value']:.3g}, rank-biserial r = {out['effect_size']:+.2f}); {record}")
    return out


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (family-wise error control over several comparisons); NaN kept."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = ok.size
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


__all__ = ["ALPHA", "holm", "min_attainable_p", "paired_test", "rank_biserial", "summarise"]
