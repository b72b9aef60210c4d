"""Report rendering from a fabricated study folder: files, tables, embedded figures."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from tests.test_study_aggregate import F1, fabricate_study, tiny_config
from volkd.report.console import headline_rich
from volkd.report.render import Doc, build_report, md_table


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cfg = tiny_config(external=[{"name": "pet", "modality": "pet"}])
    store = fabricate_study(tmp_path_factory.mktemp("report") / "study", cfg, fail={"r02-student-fuseme-graph"})
    # artefacts the runner would leave: a cost table and relation graphs
    pd.DataFrame([{"model": "3D teacher (lightcnn)", "parameters": 1000, "MFLOPs/scan": 2.0, "CPU ms/scan": 3.0}]).to_csv(
        store.root / "cost.csv", index=False)
    g = np.eye(6)
    np.savez(store.root / "graphs.npz", labels=np.array([0, 0, 0, 1, 1, 1]), repeat=np.int64(0),
             **{"3D teacher": g, "fuseme, no KD | MSE to teacher 0.1000": g * 0.5})
    return cfg, store, build_report(store, cfg)


def test_report_files(report) -> None:
    cfg, store, out = report
    root = store.root
    for name in ("report.md", "report.html", "results.csv", "summary.csv", "comparisons.csv", "headline.csv", "external.csv"):
        assert (root / name).is_file(), name
    for fig in ("metric_by_method", "roc", "reliability", "confusion", "training_curves", "relation_graphs"):
        assert (root / "figures" / f"{fig}.png").stat().st_size > 5000, fig
    results = pd.read_csv(root / "results.csv")
    assert len(results) == 6 * 6 and (results["status"] == "failed").sum() == 1
    summary = pd.read_csv(root / "summary.csv")
    assert list(summary["method"]) == ["teacher", "sbr", "mip+none", "mip+graph", "fuseme+none", "fuseme+graph"]
    assert summary.set_index("method").loc["sbr", "f1_weighted_mean"] == pytest.approx(0.96)


def test_report_markdown_tables(report) -> None:
    cfg, store, out = report
    md = (store.root / "report.md").read_text()
    mip = np.mean(F1["mip+none"]) * 100
    assert f"| mip | {mip:.1f} ± 3.7 | 89.8 ± 3.7 | +4.8 | 0.0312 | 6/6 | KD better |" in md
    assert re.search(r"\| fuseme \| 89\.5 ± 2\.2 \| 88\.6 ± 2\.3 \| -0\.4 \| 0\.75 \| 2/5 \| within noise", md)
    assert f"| 3D teacher | {np.mean(F1['teacher']) * 100:.1f} ± 1.9 | — |" in md
    assert "| SBR + logistic regression | 96.0 ± 0.0 | — |" in md
    assert "## Failures" in md and "r02-student-fuseme-graph" in md and "out of memory" in md
    assert "| pet | teacher | 6 |" in md  # external table
    assert "| 3D teacher (lightcnn) | 1000 | 2.0 | 3.0 |" in md  # cost table
    assert "Significantly better with KD: mip." in md
    assert "![" in md and "(figures/roc.png)" in md


def test_report_html_is_self_contained(report) -> None:
    cfg, store, out = report
    html = (store.root / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6
    assert 'src="figures/' not in html and "<script" not in html
    assert "<td>mip</td>" in html and "KD better" in html
    assert "<code>" in html  # inline code spans rendered


def test_headline_returned_and_printed(report) -> None:
    from rich.console import Console

    cfg, store, out = report
    head = out["headline"]
    assert list(head["method"]) == ["mip", "fuseme", "3D teacher", "SBR + logistic regression"]
    console = Console(width=200, record=True)
    console.print(headline_rich(head))
    text = console.export_text()
    assert "KD better" in text and "SBR + logistic regression" in text and "96.0 ± 0.0" in text


def test_report_rerenders_identically(report) -> None:
    cfg, store, out = report
    first = (store.root / "report.md").read_text()
    build_report(store, cfg)
    assert (store.root / "report.md").read_text() == first


def test_md_table_and_doc(tmp_path) -> None:
    df = pd.DataFrame({"a": ["x|y", "z"], "b": [1.5, float("nan")]})
    assert md_table(df).splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1.5 |", "| z | — |"]
    doc = Doc("T")
    doc.p("see `a` and **b** <c>")
    doc.figure(tmp_path / "missing.png", "skipped", alt="a figure that does not exist")
    with pytest.raises(ValueError, match="alt text"):
        doc.figure(tmp_path / "missing.png", "no alt", alt=" ")
    assert len(doc.blocks) == 1
    assert "<p>see <code>a</code> and <strong>b</strong> &lt;c&gt;</p>" in doc.html()
