"""From trial records to tables: results (one row per trial), summary (one per method),
paired comparisons (KD vs no KD, student vs teacher) and the study-style headline table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from volkd.evaluate import paired_test, summarise
from volkd.experiment.config import METRICS, StudyConfig
from volkd.experiment.trials import method_order

#: Metrics where lower is better (differences are reported with that sign in mind).
LOWER_IS_BETTER = frozenset({"brier", "ece"})
_ID_COLS = ["trial_id", "repeat", "kind", "method", "projection", "kd", "status"]


# ------------------------------------------------------------------ frames
def results_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial: identity, status, error, timings and every test metric."""
    rows = []
    for r in records:
        row = {k: r.get(k) for k in _ID_COLS}
        row["error"] = r.get("error") or ""
        train = r.get("train") or {}
        row["epochs_run"] = train.get("epochs_run")
        row["best_epoch"] = train.get("best_epoch")
        row["train_seconds"] = train.get("seconds")
        row["seconds"] = r.get("seconds")
        row["n_test"] = r.get("n_test")
        metrics = r.get("metrics") or {}
        for m in METRICS:
            row[m] = metrics.get(m, np.nan)
        rows.append(row)
    cols = _ID_COLS + ["error", "epochs_run", "best_epoch", "train_seconds", "seconds", "n_test", *METRICS]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["repeat", "trial_id"], kind="stable").reset_index(drop=True)


def external_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (trial, external cohort) with the metrics of models applied there."""
    rows = []
    for r in records:
        for name, metrics in (r.get("external") or {}).items():
            row = {k: r.get(k) for k in _ID_COLS}
            row["cohort"] = name
            for m in METRICS:
                row[m] = (metrics or {}).get(m, np.nan)
            rows.append(row)
    return pd.DataFrame(rows, columns=_ID_COLS + ["cohort", *METRICS])


def _ok(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["status"] == "ok"]


def summary_frame(results: pd.DataFrame, order: list[str] | None = None, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """One row per method: counts, then mean, sd and 95% CI over repeats for each metric."""
    methods = order or list(dict.fromkeys(results["method"]))
    rows = []
    for method in methods:
        sub = results[results["method"] == method]
        if sub.empty:
            continue
        ok = _ok(sub)
        first = sub.iloc[0]
        row: dict[str, Any] = {"method": method, "kind": first["kind"], "projection": first["projection"], "kd": first["kd"],
                               "n_ok": int(len(ok)), "n_failed": int((sub["status"] != "ok").sum())}
        for m in metrics:
            vals = ok[m].dropna().to_numpy(dtype=float)
            s = _summary(summarise, vals)
            for k, v in s.items():
                row[f"{m}_{k}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def _summary(fn: Any, vals: np.ndarray) -> dict[str, float]:
    """mean, sd, ci_low, ci_high from volkd.evaluate.summarise (NaN when undefined)."""
    out = fn(vals)
    return {k: float(out[k]) for k in ("mean", "sd", "ci_low", "ci_high")}


# ------------------------------------------------------------ comparisons
def paired(results: pd.DataFrame, method_a: str, method_b: str, metric: str, alpha: float = 0.05) -> dict[str, Any] | None:
    """Paired Wilcoxon test (volkd.evaluate.paired_test) of ``a`` vs ``b`` on ``metric`` over the
    repeats where both succeeded; ``delta`` = mean(a − b); wins count "better" in the metric's sense."""
    ok = _ok(results)
    a = ok[ok["method"] == method_a].set_index("repeat")[metric]
    b = ok[ok["method"] == method_b].set_index("repeat")[metric]
    common = sorted(set(a.index) & set(b.index))
    if not common:
        return None
    va, vb = a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)
    res = dict(paired_test(va, vb, names=(method_a, method_b), alpha=alpha, higher_is_better=metric not in LOWER_IS_BETTER))
    keep = np.isfinite(va) & np.isfinite(vb)
    res["mean_a"] = float(va[keep].mean()) if keep.any() else math.nan
    res["mean_b"] = float(vb[keep].mean()) if keep.any() else math.nan
    res["delta"] = float(res["mean_diff"])
    return res


def verdict(res: dict[str, Any] | None, alpha: float, better: str, worse: str, higher_is_better: bool = True) -> str:
    """Short plain words for a paired result; says so when the difference is within noise."""
    if res is None or res["n"] == 0:
        return "no paired repeats"
    n = int(res.get("n_untied", res["n"]))
    if res["n"] < 2:
        return "one repeat: no test possible"
    if n == 0:
        return "no difference (tied in every repeat)"
    if res["min_attainable_p"] >= alpha:
        return f"within noise ({n} untied pair(s) cannot reach p<{alpha:g})"
    if not res.get("significant"):
        return f"within noise (p={res['p_value']:.2g})"
    up = res["delta"] > 0
    return better if up == higher_is_better else worse


def comparisons_frame(results: pd.DataFrame, cfg: StudyConfig, metric: str | None = None) -> pd.DataFrame:
    """KD vs no KD per projection (each KD method), and each student vs the 3D teacher."""
    metric = metric or cfg.report.headline_metric
    alpha = cfg.report.alpha
    hib = metric not in LOWER_IS_BETTER
    rows = []

    def add(kind: str, a: str, b: str, better: str, worse: str) -> None:
        res = paired(results, a, b, metric, alpha)
        row: dict[str, Any] = {"comparison": kind, "a": a, "b": b, "metric": metric}
        if res is not None:
            row.update({k: res[k] for k in ("n", "mean_a", "mean_b", "delta", "p_value", "effect_size", "wins", "losses", "ties")})
        row["verdict"] = verdict(res, alpha, better, worse, hib)
        rows.append(row)

    if "none" in cfg.kd_names:
        for p in cfg.projections:
            for k in cfg.kd_names:
                if k != "none":
                    add("kd_vs_no_kd", f"{p}+{k}", f"{p}+none", f"KD ({k}) better", f"KD ({k}) worse")
    for p in cfg.projections:
        for k in cfg.kd_names:
            add("student_vs_teacher", f"{p}+{k}", "teacher", "student better than teacher", "student worse than teacher")
    return pd.DataFrame(rows, columns=["comparison", "a", "b", "metric", "n", "mean_a", "mean_b", "delta", "p_value",
                                       "effect_size", "wins", "losses", "ties", "verdict"])


# ---------------------------------------------------------------- headline
#: Headline row labels of the teacher and the baselines.
REFERENCE_LABELS = {"teacher": "3D teacher", "sbr": "SBR + logistic regression", "majority": "majority class (constant)"}

def headline_table(results: pd.DataFrame, cfg: StudyConfig, metric: str | None = None) -> pd.DataFrame:
    """The study's table: rows = projections (+ teacher, the baselines), columns = without KD, with KD, Δ, p."""
    metric = metric or cfg.report.headline_metric
    kd = cfg.headline_kd
    alpha = cfg.report.alpha
    hib = metric not in LOWER_IS_BETTER
    ok = _ok(results)

    def stats(method: str) -> tuple[float, float, int]:
        v = ok.loc[ok["method"] == method, metric].dropna().to_numpy(float)
        if v.size == 0:
            return math.nan, math.nan, 0
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)

    rows = []
    for p in cfg.projections:
        m0, s0, n0 = stats(f"{p}+none") if "none" in cfg.kd_names else (math.nan, math.nan, 0)
        row: dict[str, Any] = {"method": p, "no_kd_mean": m0, "no_kd_sd": s0, "no_kd_n": n0}
        if kd is not None:
            m1, s1, n1 = stats(f"{p}+{kd}")
            res = paired(results, f"{p}+{kd}", f"{p}+none", metric, alpha) if "none" in cfg.kd_names else None
            row.update({"kd_mean": m1, "kd_sd": s1, "kd_n": n1,
                        "delta": res["delta"] if res else math.nan, "p_value": res["p_value"] if res else math.nan,
                        "wins": f"{res['wins']}/{res['n']}" if res else "",
                        "verdict": verdict(res, alpha, "KD better", "KD worse", hib)})
        rows.append(row)
    for method in ["teacher", *cfg.baselines]:
        m, s, n = stats(method)
        rows.append({"method": REFERENCE_LABELS[method], "no_kd_mean": m, "no_kd_sd": s, "no_kd_n": n})
    cols = ["method", "no_kd_mean", "no_kd_sd", "no_kd_n", "kd_mean", "kd_sd", "kd_n", "delta", "p_value", "wins", "verdict"]
    df = pd.DataFrame(rows).reindex(columns=cols)
    df.attrs.update({"metric": metric, "kd": kd or "", "alpha": alpha, "n_projections": len(cfg.projections)})
    return df


def fmt_value(metric: str, mean: float, sd: float | None = None) -> str:
    """``94.1 ± 2.3`` (percent) for scores; ``0.052 ± 0.010`` for Brier/ECE; ``—`` when missing."""
    if mean is None or not np.isfinite(mean):
        return "—"
    pct = metric not in LOWER_IS_BETTER
    scale, digits = (100.0, 1) if pct else (1.0, 3)
    s = f"{mean * scale:.{digits}f}"
    if sd is not None and np.isfinite(sd):
        s += f" ± {sd * scale:.{digits}f}"
    return s


def headline_display(table: pd.DataFrame) -> pd.DataFrame:
    """The headline table as strings, ready for markdown / HTML / the terminal."""
    metric = table.attrs.get("metric", "f1_weighted")
    kd = table.attrs.get("kd", "") or "KD"
    pct = metric not in LOWER_IS_BETTER
    out = []
    for _, r in table.iterrows():
        delta = r.get("delta")
        out.append({
            "Projection": r["method"],
            "without KD": fmt_value(metric, r["no_kd_mean"], r["no_kd_sd"]),
            f"with KD ({kd})": fmt_value(metric, r.get("kd_mean"), r.get("kd_sd")),
            "Δ": "—" if delta is None or not np.isfinite(delta) else (f"{delta * 100:+.1f}" if pct else f"{delta:+.3f}"),
            "p (Wilcoxon)": "—" if r.get("p_value") is None or not np.isfinite(r.get("p_value")) else f"{r['p_value']:.3g}",
            "KD wins": r.get("wins") if isinstance(r.get("wins"), str) and r.get("wins") else "—",
            "verdict": r.get("verdict") if isinstance(r.get("verdict"), str) else "",
        })
    return pd.DataFrame(out)


def default_order(cfg: StudyConfig) -> list[str]:
    """Method labels in report order."""
    return method_order(cfg)
