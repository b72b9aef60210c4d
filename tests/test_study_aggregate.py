"""Aggregation from fabricated trial records: results, summary, paired comparisons, headline."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from volkd.experiment import aggregate as agg
from volkd.experiment.config import METRICS, StudyConfig, validate_config
from volkd.experiment.store import StudyStore
from volkd.experiment.trials import Trial, plan_trials

#: f1_weighted per method and repeat used by the fabricated studies below.
F1 = {
    "teacher": [0.90, 0.91, 0.92, 0.93, 0.94, 0.95],
    "sbr": [0.96, 0.96, 0.96, 0.96, 0.96, 0.96],
    "mip+none": [0.80, 0.82, 0.84, 0.86, 0.88, 0.90],
    "mip+graph": [0.85, 0.86, 0.90, 0.91, 0.94, 0.93],   # KD better in all 6 repeats
    "fuseme+none": [0.88, 0.90, 0.92, 0.86, 0.90, 0.91],
    "fuseme+graph": [0.89, 0.88, 0.93, 0.85, 0.91, 0.90],  # mixed: within noise
}


def tiny_config(repeats: int = 6, **kw: Any) -> StudyConfig:
    # the majority-class baseline is left out: these fabricated studies test the SBR/teacher/student tables
    return validate_config({"name": "fab", "projections": ["mip", "fuseme"], "split": {"repeats": repeats},
                            "kd": [{"name": "none"}, {"name": "graph"}], "baselines": ["sbr"], **kw})


def fabricated_record(t: Trial, f1: float, fail: bool = False) -> dict[str, Any]:
    if fail:
        return {"status": "failed", "error": "RuntimeError: out of memory", "seconds": 1.0}
    metrics = {m: f1 for m in METRICS}
    metrics.update(brier=1 - f1, ece=(1 - f1) / 2)
    hist = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1)} for e in range(3)]
    return {"status": "ok", "error": None, "metrics": metrics, "n_test": 20, "seconds": 2.0,
            "external": {"pet": {m: f1 - 0.1 for m in METRICS}},
            "train": {"epochs_run": 3, "best_epoch": 2, "seconds": 1.5, "history": hist} if t.kind != "sbr" else {}}


def fabricated_predictions(f1: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.array([0] * 8 + [1] * 12)
    p = np.clip(np.where(y == 1, f1, 1 - f1) + rng.normal(0, 0.05, y.size), 0.01, 0.99)
    df = pd.DataFrame({"cohort": "test", "scan_id": [f"s{i}" for i in range(20)], "subject_id": [f"s{i}" for i in range(20)],
                       "y_true": y, "y_pred": (p >= 0.5).astype(int), "p_pos": p, "proba_control": 1 - p, "proba_PD": p})
    return df


def fabricate_study(root, cfg: StudyConfig, fail: set[str] = frozenset()) -> StudyStore:
    """A study folder whose trial files hold the F1 table above (``fail``: trial IDs stored as failed)."""
    store = StudyStore.open(root, cfg)
    for t in plan_trials(cfg):
        f1 = F1[t.method][t.repeat]
        failed = t.trial_id in fail
        store.save_result(t, fabricated_record(t, f1, failed), None if failed else fabricated_predictions(f1, t.repeat))
    return store


def test_results_and_summary(tmp_path) -> None:
    cfg = tiny_config()
    store = fabricate_study(tmp_path / "s", cfg, fail={"r05-student-mip-graph"})
    res = agg.results_frame(store.load_all())
    assert len(res) == 6 * 6
    assert (res["status"] == "failed").sum() == 1
    assert res.loc[res["trial_id"] == "r05-student-mip-graph", "error"].item() == "RuntimeError: out of memory"
    summ = agg.summary_frame(res, agg.default_order(cfg)).set_index("method")
    assert list(summ.index) == ["teacher", "sbr", "mip+none", "mip+graph", "fuseme+none", "fuseme+graph"]
    assert summ.loc["mip+graph", "n_ok"] == 5 and summ.loc["mip+graph", "n_failed"] == 1
    v = np.array(F1["mip+none"])
    assert summ.loc["mip+none", "f1_weighted_mean"] == pytest.approx(v.mean())
    assert summ.loc["mip+none", "f1_weighted_sd"] == pytest.approx(v.std(ddof=1))
    half = 2.5705818 * v.std(ddof=1) / math.sqrt(6)  # t(0.975, df=5)
    assert summ.loc["mip+none", "f1_weighted_ci_low"] == pytest.approx(v.mean() - half, rel=1e-5)
    assert summ.loc["mip+graph", "f1_weighted_mean"] == pytest.approx(np.mean(F1["mip+graph"][:5]))
    ext = agg.external_frame(store.load_all())
    assert set(ext["cohort"]) == {"pet"} and len(ext) == 35


def test_headline_values_and_verdicts(tmp_path) -> None:
    cfg = tiny_config()
    store = fabricate_study(tmp_path / "s", cfg)
    head = agg.headline_table(agg.results_frame(store.load_all()), cfg).set_index("method")
    assert list(head.index) == ["mip", "fuseme", "3D teacher", "SBR + logistic regression"]
    mip = head.loc["mip"]
    assert mip["no_kd_mean"] == pytest.approx(np.mean(F1["mip+none"]))
    assert mip["kd_mean"] == pytest.approx(np.mean(F1["mip+graph"]))
    assert mip["delta"] == pytest.approx(np.mean(np.subtract(F1["mip+graph"], F1["mip+none"])))
    assert mip["p_value"] == pytest.approx(2 / 64)  # exact Wilcoxon, 6 of 6 positive
    assert mip["wins"] == "6/6" and mip["verdict"] == "KD better"
    assert head.loc["fuseme", "verdict"].startswith("within noise")
    assert head.loc["3D teacher", "no_kd_mean"] == pytest.approx(np.mean(F1["teacher"]))
    assert head.loc["SBR + logistic regression", "no_kd_mean"] == pytest.approx(0.96)
    assert math.isnan(head.loc["3D teacher", "kd_mean"])
    disp = agg.headline_display(agg.headline_table(agg.results_frame(store.load_all()), cfg))
    row = disp.iloc[0]
    assert row["Projection"] == "mip" and row["without KD"] == "85.0 ± 3.7" and row["with KD (graph)"] == "89.8 ± 3.7"
    assert row["Δ"] == "+4.8" and row["p (Wilcoxon)"] == "0.0312" and row["KD wins"] == "6/6"
    assert disp.iloc[2]["with KD (graph)"] == "—"


def test_three_repeats_are_reported_as_within_noise(tmp_path) -> None:
    cfg = tiny_config(repeats=3)
    store = fabricate_study(tmp_path / "s", cfg)
    head = agg.headline_table(agg.results_frame(store.load_all()), cfg).set_index("method")
    assert head.loc["mip", "wins"] == "3/3"
    assert head.loc["mip", "verdict"] == "within noise (3 untied pair(s) cannot reach p<0.05)"


def test_comparisons_and_lower_is_better(tmp_path) -> None:
    cfg = tiny_config()
    store = fabricate_study(tmp_path / "s", cfg)
    res = agg.results_frame(store.load_all())
    comp = agg.comparisons_frame(res, cfg)
    assert len(comp) == 2 + 4  # KD vs none per projection, every student vs teacher
    st = comp[(comp["comparison"] == "student_vs_teacher") & (comp["a"] == "mip+none")].iloc[0]
    assert st["delta"] == pytest.approx(np.mean(np.subtract(F1["mip+none"], F1["teacher"])))
    assert st["losses"] == 6 and st["verdict"] == "student worse than teacher"
    brier = agg.comparisons_frame(res, cfg, "brier")
    kd = brier[(brier["comparison"] == "kd_vs_no_kd") & (brier["a"] == "mip+graph")].iloc[0]
    assert kd["wins"] == 6 and kd["delta"] < 0 and kd["verdict"] == "KD (graph) better"


def test_fmt_value() -> None:
    assert agg.fmt_value("f1_weighted", 0.9834, 0.0123) == "98.3 ± 1.2"
    assert agg.fmt_value("brier", 0.05123, None) == "0.051"
    assert agg.fmt_value("accuracy", float("nan")) == "—"
