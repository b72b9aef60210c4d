"""The study report: tables (CSV), figures, ``report.md`` and a self-contained ``report.html``.

Everything is derived from the study folder (trial records, predictions, and the optional
artefacts the runner leaves: ``figures/gallery.png``, ``cost.csv``, ``graphs.npz``,
``environment.json``), so a report can be re-rendered at any time.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from volkd.atomic import atomic_file, write_text
from volkd.experiment import aggregate as agg
from volkd.experiment.config import METRICS, StudyConfig
from volkd.experiment.store import StudyStore
from volkd.experiment.trials import method_order
from volkd.report import figures as figs

#: Metrics shown in the per-method summary table of the report.
SUMMARY_METRICS = ("f1_weighted", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "g_mean", "roc_auc", "brier", "ece")


@dataclass
class Doc:
    """A report as a list of blocks, rendered to Markdown and to HTML."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame) -> None:
        self.blocks.append(("table", df))

    def figure(self, path: Path, caption: str, alt: str) -> None:
        """Add a figure (if ``path`` exists) with its caption and alt text (a short description of the image)."""
        if not alt.strip():
            raise ValueError(f"figure {path}: alt text must not be empty")
        if Path(path).is_file():
            self.blocks.append(("figure", (Path(path), caption, alt)))

    def markdown(self, root: Path) -> str:
        out = [f"# {self.title}", ""]
        for kind, val in self.blocks:
            if kind == "h2":
                out += [f"## {val}", ""]
            elif kind == "p":
                out += [val, ""]
            elif kind == "table":
                out += [md_table(val), ""]
            else:
                path, cap, alt = val
                out += [f"![{alt}]({path.relative_to(root).as_posix()})", "", f"*{cap}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, val in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(val)}</h2>")
            elif kind == "p":
                body.append(f"<p>{_inline(val)}</p>")
            elif kind == "table":
                body.append(val.to_html(index=False, escape=True, border=0, classes="t", na_rep="—"))
            else:
                path, cap, alt = val
                b64 = base64.b64encode(path.read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'
                            f"<figcaption>{html.escape(cap)}</figcaption></figure>")
        return _HTML.format(title=html.escape(self.title), body="\n".join(body))


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table.t {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
table.t th, table.t td {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
table.t th:first-child, table.t td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} figure img {{ max-width: 100%; }} figcaption {{ font-size: 0.85em; color: #555; }}
code {{ background: #f4f4f4; padding: 0 3px; }}
</style></head><body>
{body}
</body></html>
"""


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** spans (the only Markdown the report's prose uses)."""
    import re

    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def md_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (cells converted with ``str``, NaN as —)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for _, row in df.iterrows():
        cells = ["—" if (isinstance(v, float) and not np.isfinite(v)) or v is None else str(v).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------- tables
def class_counts_table(cohort: dict[str, Any]) -> pd.DataFrame:
    """Scans (and subjects, when known) per class of a cohort summary (``Cohort.summary()``) as a small table."""
    scans = cohort.get("scans_per_class") or {}
    subjects = cohort.get("subjects_per_class") or {}
    total = sum(int(v) for v in scans.values())
    rows = []
    for name, n in scans.items():
        row = {"class": name, "scans": int(n), "% of scans": f"{100 * int(n) / total:.1f}" if total else "—"}
        if subjects:
            row["subjects"] = int(subjects.get(name, 0))
        rows.append(row)
    return pd.DataFrame(rows)


def summary_display(summary: pd.DataFrame, metrics: tuple[str, ...] = SUMMARY_METRICS) -> pd.DataFrame:
    """Summary as strings: mean ± sd [95% CI] per metric."""
    rows = []
    for _, r in summary.iterrows():
        row = {"method": r["method"], "n": f"{r['n_ok']}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else "")}
        for m in metrics:
            row[m] = agg.fmt_value(m, r[f"{m}_mean"], r[f"{m}_sd"])
            if np.isfinite(r[f"{m}_ci_low"]) and m == metrics[0]:
                lo, hi = agg.fmt_value(m, r[f"{m}_ci_low"]), agg.fmt_value(m, r[f"{m}_ci_high"])
                row[f"{m} 95% CI"] = f"[{lo}, {hi}]"
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons_display(comp: pd.DataFrame) -> pd.DataFrame:
    """Paired comparisons as strings."""
    rows = []
    for _, r in comp.iterrows():
        m = r["metric"]
        fin = lambda v: v is not None and isinstance(v, (int, float)) and np.isfinite(v)  # noqa: E731
        rows.append({
            "a": r["a"], "b": r["b"], "pairs": "—" if not fin(r["n"]) else int(r["n"]),
            f"mean a − b ({m})": "—" if not fin(r["delta"]) else (f"{r['delta'] * 100:+.1f}" if m not in agg.LOWER_IS_BETTER else f"{r['delta']:+.3f}"),
            "p": "—" if not fin(r["p_value"]) else f"{r['p_value']:.3g}",
            "effect size": "—" if not fin(r["effect_size"]) else f"{r['effect_size']:.2f}",
            "a wins/losses/ties": "—" if not fin(r["n"]) else f"{int(r['wins'])}/{int(r['losses'])}/{int(r['ties'])}",
            "verdict": r["verdict"],
        })
    return pd.DataFrame(rows)


def external_summary(ext: pd.DataFrame, order: list[str], metrics: tuple[str, ...] = ("f1_weighted", "balanced_accuracy", "roc_auc")) -> pd.DataFrame:
    """External evaluation: per cohort × method, mean ± sd over repeats."""
    rows = []
    ok = ext[ext["status"] == "ok"] if not ext.empty else ext
    for cohort in dict.fromkeys(ok["cohort"]) if not ok.empty else []:
        for m in order:
            sub = ok[(ok["cohort"] == cohort) & (ok["method"] == m)]
            if sub.empty:
                continue
            row = {"cohort": cohort, "method": m, "n": len(sub)}
            for k in metrics:
                v = sub[k].dropna().to_numpy(float)
                row[k] = agg.fmt_value(k, v.mean() if v.size else np.nan, v.std(ddof=1) if v.size > 1 else None)
            rows.append(row)
    return pd.DataFrame(rows)


def pooled_predictions(store: StudyStore, results: pd.DataFrame, cohort: str = "test") -> dict[str, pd.DataFrame]:
    """Test predictions of every successful trial, pooled over repeats, per method."""
    out: dict[str, list[pd.DataFrame]] = {}
    for _, r in results[results["status"] == "ok"].iterrows():
        df = store.load_predictions(r["trial_id"])
        if df is None or df.empty:
            continue
        df = df[df["cohort"] == cohort]
        out.setdefault(r["method"], []).append(df.assign(repeat=r["repeat"]))
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as fh:
        df.to_csv(fh, index=False)


# ----------------------------------------------------------------- report
def build_report(store: StudyStore, cfg: StudyConfig) -> dict[str, Any]:
    """Write results.csv, summary.csv, comparisons.csv, external.csv, headline.csv, the figures,
    report.md and report.html in the study folder; return the headline table and paths."""
    root = store.root
    fig_dir = root / "figures"
    fig_dir.mkdir(exist_ok=True)
    order = method_order(cfg)
    metric = cfg.report.headline_metric
    records = store.load_all()
    results = agg.results_frame(records)
    summary = agg.summary_frame(results, order)
    comp = agg.comparisons_frame(results, cfg, metric)
    head = agg.headline_table(results, cfg, metric)
    ext = agg.external_frame(records)
    _write_csv(results, root / "results.csv")
    _write_csv(summary, root / "summary.csv")
    _write_csv(comp, root / "comparisons.csv")
    _write_csv(head, root / "headline.csv")
    _write_csv(ext, root / "external.csv")

    preds = pooled_predictions(store, results)
    env = _read_json(root / "environment.json")
    class_names = (env.get("cohort") or {}).get("class_names") or ["control", "PD"]
    f: dict[str, Path] = {}
    if not summary.empty and summary[f"{metric}_mean"].notna().any():
        f["metric"] = figs.metric_by_method(summary, cfg.projections, cfg.kd_names, metric, fig_dir / "metric_by_method.png")
    if preds:
        f["roc"] = figs.roc_curves(preds, cfg.projections, cfg.kd_names, fig_dir / "roc.png")
        f["reliability"] = figs.reliability_diagram(preds, cfg.projections, cfg.kd_names, fig_dir / "reliability.png")
        f["confusion"] = figs.confusion_matrices(preds, order, class_names, fig_dir / "confusion.png")
    hist = {r["method"]: (r.get("train") or {}).get("history") for r in records
            if r.get("repeat") == 0 and r.get("status") == "ok" and (r.get("train") or {}).get("history")}
    if hist:
        ordered = {m: hist[m] for m in order if m in hist}
        f["curves"] = figs.training_curves(ordered, fig_dir / "training_curves.png")
    graphs_file = root / "graphs.npz"
    if graphs_file.is_file():
        with np.load(graphs_file, allow_pickle=False) as z:
            labels = z["labels"]
            graphs = {str(k): z[k] for k in z.files if k not in ("labels", "repeat")}
        if graphs:
            f["graphs"] = figs.relation_graphs(graphs, labels, fig_dir / "relation_graphs.png",
                                               title="cosine batch relation graphs G on test scans (sorted by class)")

    doc = _compose(cfg, env, results, summary, comp, head, ext, order, fig_dir, f, root)
    write_text(root / "report.md", doc.markdown(root))
    write_text(root / "report.html", doc.html())
    return {"headline": head, "summary": summary, "results": results, "report_md": root / "report.md",
            "report_html": root / "report.html"}


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except ValueError:
        return {}


def _compose(cfg: StudyConfig, env: dict[str, Any], results: pd.DataFrame, summary: pd.DataFrame, comp: pd.DataFrame,
             head: pd.DataFrame, ext: pd.DataFrame, order: list[str], fig_dir: Path, f: dict[str, Path], root: Path) -> Doc:
    metric = cfg.report.headline_metric
    kd = cfg.headline_kd
    doc = Doc(f"volkd study report: {cfg.name}")
    n_ok = int((results["status"] == "ok").sum())
    n_fail = int((results["status"] != "ok").sum())
    coh = env.get("cohort") or {}
    doc.p(f"Study `{cfg.name}` (config hash `{cfg.config_hash()[:12]}`): {cfg.split.repeats} × {cfg.split.protocol} "
          f"split(s) at subject level; 3D teacher `{cfg.teacher.arch}`, 2D student `{cfg.student.arch}`; projections "
          f"{', '.join(cfg.projections)}; KD methods {', '.join(cfg.kd_names)}; baselines {', '.join(cfg.baselines) or 'none'}. "
          f"{n_ok} trial(s) finished, {n_fail} failed.")
    if coh:
        doc.p(f"Main cohort: {coh.get('n_scans', '?')} scans of {coh.get('n_subjects', '?')} subjects, "
              f"grid {coh.get('grid_shape', '?')}, modality {coh.get('modality', '?')}, source {coh.get('source', '?')}.")
        if coh.get("scans_per_class"):
            doc.table(class_counts_table(coh))
    if env.get("wall_seconds"):
        doc.p(f"Wall time of the last run: {env['wall_seconds']:.0f} s; peak memory {env.get('peak_rss_mb', float('nan')):.0f} MB.")

    doc.h(f"Headline: {metric.replace('_', ' ')} on the test partitions (mean ± sd over repeats)")
    doc.table(agg.headline_display(head))
    doc.p(_headline_words(head, comp, cfg))

    doc.h("Projections")
    for g in sorted(fig_dir.glob("gallery-*.png")):
        views = g.stem.removeprefix("gallery-").replace("-", ", ")
        doc.figure(g, f"What the 2D student sees ({views} view(s)): each projection (rows: projection × channel) of example "
                      "test scans per class (columns: scan × view, titled by class and example number; the full scan IDs "
                      "are listed under the panels).",
                   alt=f"Grid of 2D projection images ({views} views) of example test scans, one column per scan and view")
    doc.h("Per-method summary (mean ± sd over repeats)")
    doc.table(summary_display(summary))
    doc.figure(f.get("metric", fig_dir / "_"), f"{metric} per projection: each KD method side by side (95% CI), 3D teacher (solid line, CI band) and the baselines (SBR dotted, majority class dash-dot).",
               alt=f"Bar chart of {metric.replace('_', ' ')} per projection and KD method, with the teacher and the baselines as horizontal lines")
    doc.h("Paired comparisons (Wilcoxon signed-rank over repeats)")
    doc.p(f"`a − b` is the mean paired difference in {metric} (percentage points for scores). "
          f"Differences with p ≥ {cfg.report.alpha:g} are reported as within noise; with n pairs, "
          "the smallest attainable two-sided p is 2/2ⁿ (n=3: 0.25, n=5: 0.0625, n=6: 0.031).")
    doc.table(comparisons_display(comp))
    doc.figure(f.get("roc", fig_dir / "_"), "ROC curves on test predictions pooled over repeats.",
               alt="ROC curves (sensitivity against 1 − specificity), one panel per projection, AUC in the legend")
    doc.figure(f.get("confusion", fig_dir / "_"), "Confusion matrices (pooled over repeats, argmax decision).",
               alt="Confusion matrices of true against predicted class, one per method, with counts in the cells")
    doc.figure(f.get("reliability", fig_dir / "_"), "Reliability diagrams (calibration) on pooled test predictions.",
               alt="Reliability diagrams: observed fraction positive against mean predicted probability, one panel per projection")

    doc.h("External evaluation (no retraining)")
    if ext.empty:
        doc.p("No external cohort configured." if not cfg.external else "No external results (see failures).")
    else:
        doc.p("Models trained on the main cohort applied unchanged (including the training-set normalisation) to "
              f"{', '.join(e.name for e in cfg.external)}.")
        doc.table(external_summary(ext, order))

    doc.h("Cost per model (CPU)")
    cost = root / "cost.csv"
    if cost.is_file():
        doc.table(pd.read_csv(cost))
        doc.p("Parameters; forward FLOPs per scan counted with `torch.utils.flop_counter`; CPU latency per scan "
              "(median of timed single-scan forward passes, projection included for students).")
    else:
        doc.p("Not measured (no finished teacher/student checkpoint).")
    doc.h("Batch relation graphs")
    doc.figure(f.get("graphs", fig_dir / "_"), "Teacher's and students' batch relation graphs G on the same test batch; "
               "KD trains the student's G towards the teacher's.",
               alt="Heatmaps of the batch relation graphs of the teacher and the students, test scans sorted by class")
    doc.h("Training curves (repeat 0)")
    doc.figure(f.get("curves", fig_dir / "_"), "Training and validation loss per epoch.",
               alt="Line plots of training and validation loss per epoch, one panel per model of repeat 0")

    doc.h("Failures")
    fails = results[results["status"] != "ok"]
    if fails.empty:
        doc.p("None: every trial finished.")
    else:
        doc.table(fails[["trial_id", "method", "error"]])
    doc.h("Files")
    doc.p("`results.csv` (one row per trial), `summary.csv` (one row per method), `comparisons.csv`, `headline.csv`, "
          "`external.csv`, `cost.csv`, `config.yaml`, `environment.json` (versions, command, cohort), `splits.json`, "
          "`trials/` (one JSON + predictions CSV per trial), `models/` (checkpoints).")
    if kd is None:
        doc.p("No KD method other than `none` was configured, so the headline has no with-KD column.")
    return doc


def _headline_words(head: pd.DataFrame, comp: pd.DataFrame, cfg: StudyConfig) -> str:
    """A plain-language reading of the headline table."""
    kd = cfg.headline_kd
    parts = []
    rows = head[head["method"].isin(cfg.projections)]
    if kd is not None and "verdict" in rows:
        better = rows[rows["verdict"] == "KD better"]["method"].tolist()
        worse = rows[rows["verdict"] == "KD worse"]["method"].tolist()
        noise = rows[rows["verdict"].astype(str).str.startswith("within noise")]["method"].tolist()
        d = rows["delta"].to_numpy(float)
        pos = int(np.sum(d[np.isfinite(d)] > 0))
        parts.append(f"KD ({kd}) raised the mean {cfg.report.headline_metric} for {pos} of {int(np.isfinite(d).sum())} projection(s).")
        if better:
            parts.append(f"Significantly better with KD: {', '.join(better)}.")
        if worse:
            parts.append(f"Significantly worse with KD: {', '.join(worse)}.")
        if noise:
            parts.append(f"Within noise (no evidence either way at α = {cfg.report.alpha:g}): {', '.join(noise)}.")
    t = head[head["method"] == "3D teacher"]
    if not t.empty and np.isfinite(t["no_kd_mean"].iloc[0]):
        sv = comp[(comp["comparison"] == "student_vs_teacher") & (comp["verdict"] == "student better than teacher")]["a"].tolist()
        parts.append("No student is significantly better than the 3D teacher." if not sv
                     else f"Students significantly better than the 3D teacher: {', '.join(sv)}.")
    return " ".join(parts)


__all__ = ["Doc", "build_report", "md_table", "class_counts_table", "summary_display", "comparisons_display", "external_summary", "METRICS"]
