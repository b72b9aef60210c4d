"""End to end: `volkd run CONFIG` on a tiny synthetic study (16³, 1 epoch, 1 repeat, 2 projections,
none + graph KD, external PET cohort): report files and table contents."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from volkd.experiment.aggregate import fmt_value

TINY = {
    "name": "e2e", "dataset": {"n_subjects": 16, "grid": 16, "options": {"visits": 1}},
    "split": {"protocol": "holdout", "repeats": 1},
    "teacher": {"arch": "lightcnn", "width": 4}, "student": {"arch": "lightcnn", "width": 4},
    "projections": ["slices", "fuseme"], "kd": [{"name": "none"}, {"name": "graph", "w_kd": 5.0, "temperature": 5.0}],
    "training": {"epochs": 1, "patience": 1, "batch_size": 8},
    "external": [{"name": "synthetic-pet", "modality": "pet", "n_subjects": 8, "grid": 16, "seed": 1, "options": {"visits": 1}}],
    "report": {"latency_runs": 1, "graph_batch": 4, "gallery_scans": 1},
}


@pytest.mark.slow
def test_volkd_run_tiny_study(tmp_path) -> None:
    from volkd.cli import app

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["run", str(cfg_path), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert f"report: {out / 'report.html'}" in res.output.replace("\n", "")
    assert "SBR + logistic regression" in res.output and "KD graph" in res.output

    for name in ("report.md", "report.html", "results.csv", "summary.csv", "comparisons.csv", "external.csv", "cost.csv",
                 "config.yaml", "environment.json", "splits.json", "study.json", "graphs.npz"):
        assert (out / name).is_file(), name
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert {"metric_by_method.png", "roc.png", "confusion.png", "reliability.png", "relation_graphs.png",
            "training_curves.png", "gallery-axial.png", "gallery-axial-coronal-sagittal_L-sagittal_R.png"} <= figs  # FuseMe: per hemisphere

    results = pd.read_csv(out / "results.csv")
    assert len(results) == 1 * (3 + 2 * 2) and (results["status"] == "ok").all(), results[["trial_id", "error"]]
    assert set(results["method"]) == {"teacher", "sbr", "majority", "slices+none", "slices+graph", "fuseme+none", "fuseme+graph"}
    assert results["f1_weighted"].between(0, 1).all() and results["n_test"].gt(0).all()
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 7 and summary["n_ok"].eq(1).all()

    md = (out / "report.md").read_text()
    for _, r in results.iterrows():  # headline cells are the trial values (one repeat: no sd)
        v = fmt_value("f1_weighted", r["f1_weighted"])
        if r["method"] in ("teacher", "sbr", "majority"):
            label = {"teacher": "3D teacher", "sbr": "SBR + logistic regression", "majority": "majority class (constant)"}[r["method"]]
            assert f"| {label} | {v} | — |" in md
        elif r["method"].endswith("+none"):
            assert f"| {r['projection']} | {v} |" in md
    assert "one repeat: no test possible" in md
    ext = pd.read_csv(out / "external.csv")
    assert set(ext["cohort"]) == {"synthetic-pet"} and len(ext) == 7
    cost = pd.read_csv(out / "cost.csv")
    assert list(cost["model"]) == ["3D teacher (lightcnn)", "2D student slices (lightcnn)", "2D student fuseme (lightcnn)"]
    assert (cost["parameters"] > 0).all() and (cost["MFLOPs/scan"] > 0).all()
    env = json.loads((out / "environment.json").read_text())
    assert env["cohort"]["n_scans"] == 16 and "torch" in env["versions"] and env["peak_rss_mb"] > 0
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits["splits"]) == 1
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figs)

    # running again resumes: nothing to train
    res2 = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["run", str(cfg_path), "--out", str(out), "--no-progress"])
    assert res2.exit_code == 0 and "0 trial(s) run, 7 resumed" in res2.output
