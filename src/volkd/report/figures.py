"""Report figures (matplotlib, Agg backend), each drawn from result tables or stored arrays.

Every function saves one PNG at ``path`` and returns it; none needs a display.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve  # noqa: E402

from volkd.atomic import atomic_file  # noqa: E402

_KD_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3"]
_DPI = 110


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    with atomic_file(path, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def metric_by_method(summary: pd.DataFrame, projections: list[str], kd_names: list[str], metric: str, path: Path) -> Path:
    """Mean ± 95% CI of ``metric`` per projection, one marker per KD method side by side,
    with the 3D teacher (line + CI band) and the baselines (SBR dotted, majority class dash-dot)."""
    pct = metric not in ("brier", "ece")
    scale = 100.0 if pct else 1.0
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(projections) + 2), 3.8))
    x = np.arange(len(projections))
    width = 0.7 / max(1, len(kd_names))
    idx = summary.set_index("method")
    for j, kd in enumerate(kd_names):
        means, lo, hi = [], [], []
        for p in projections:
            m = f"{p}+{kd}"
            if m in idx.index:
                r = idx.loc[m]
                means.append(r[f"{metric}_mean"] * scale)
                lo.append((r[f"{metric}_mean"] - r[f"{metric}_ci_low"]) * scale)
                hi.append((r[f"{metric}_ci_high"] - r[f"{metric}_mean"]) * scale)
            else:
                means.append(np.nan); lo.append(np.nan); hi.append(np.nan)  # noqa: E702
        err = np.nan_to_num(np.array([lo, hi]), nan=0.0)
        pos = x - 0.35 + width * (j + 0.5)
        ax.bar(pos, means, width * 0.9, yerr=err, capsize=3, color=_KD_COLORS[j % len(_KD_COLORS)],
               label="no KD" if kd == "none" else f"KD: {kd}", alpha=0.9)
    for method, style, name in (("teacher", "-", "3D teacher"), ("sbr", ":", "SBR + LR"), ("majority", "-.", "majority class")):
        if method in idx.index and np.isfinite(idx.loc[method, f"{metric}_mean"]):
            r = idx.loc[method]
            ax.axhline(r[f"{metric}_mean"] * scale, color="k", ls=style, lw=1.4, label=name)
            if method == "teacher" and np.isfinite(r[f"{metric}_ci_low"]):
                ax.axhspan(r[f"{metric}_ci_low"] * scale, r[f"{metric}_ci_high"] * scale, color="k", alpha=0.08)
    ax.set_xticks(x, projections)
    ax.set_ylabel(f"{_label(metric)}{' (%)' if pct else ''}, mean ± 95% CI")
    finite = summary[[f"{metric}_ci_low", f"{metric}_mean"]].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    if pct and finite.size:
        ax.set_ylim(max(0.0, finite.min() * scale - 10), 101)
    ax.legend(fontsize=8, loc="lower right", ncol=2)
    ax.set_title(f"{_label(metric)} per projection, with and without KD")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _panels(n: int) -> tuple[plt.Figure, np.ndarray]:
    cols = min(4, max(1, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.2 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def roc_curves(preds: dict[str, pd.DataFrame], projections: list[str], kd_names: list[str], path: Path) -> Path:
    """ROC curves on the pooled test predictions of all repeats: one panel per projection
    (each KD method), with the teacher and SBR in every panel for reference."""
    return _per_projection(preds, projections, kd_names, path, _roc_line, "1 − specificity", "sensitivity",
                           "lower right")


def _roc_line(ax: Any, df: pd.DataFrame | None, label: str, **kw: Any) -> None:
    if df is None or df.empty or df["y_true"].nunique() < 2:
        return
    fpr, tpr, _ = roc_curve(df["y_true"], df["p_pos"])
    ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(df['y_true'], df['p_pos']):.3f})", lw=1.4, **kw)


def confusion_matrices(preds: dict[str, pd.DataFrame], methods: list[str], class_names: list[str], path: Path) -> Path:
    """Confusion matrix (counts pooled over repeats, argmax decision) for each method."""
    methods = [m for m in methods if m in preds and not preds[m].empty]
    fig, axes = _panels(max(1, len(methods)))
    k = len(class_names)
    for ax, m in zip(axes, methods):
        df = preds[m]
        cm = confusion_matrix(df["y_true"], df["y_pred"], labels=list(range(k)))
        ax.imshow(cm, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xticks(range(k), class_names)
        ax.set_yticks(range(k), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(m, fontsize=9)
    return _save(fig, path)


def reliability_diagram(preds: dict[str, pd.DataFrame], projections: list[str], kd_names: list[str], path: Path, n_bins: int = 10) -> Path:
    """Reliability diagram (fraction of positives vs mean predicted probability) per projection,
    each KD method, with the teacher and SBR for reference."""
    def line(ax: Any, df: pd.DataFrame | None, label: str, **kw: Any) -> None:
        _rel_line(ax, df, label, n_bins, **kw)

    return _per_projection(preds, projections, kd_names, path, line, "mean predicted P(positive)",
                           "observed fraction positive", "upper left", kd_marker="o", ref_marker=".")


def _per_projection(preds: dict[str, pd.DataFrame], projections: list[str], kd_names: list[str], path: Path,
                    line: Callable[..., None], xlabel: str, ylabel: str, legend_loc: str,
                    kd_marker: str | None = None, ref_marker: str | None = None) -> Path:
    """One panel per projection: a curve per KD method plus the teacher and SBR, over the diagonal."""
    kd_kw = {"marker": kd_marker} if kd_marker else {}
    ref_kw = {"marker": ref_marker} if ref_marker else {}
    fig, axes = _panels(len(projections))
    for ax, p in zip(axes, projections):
        for j, kd in enumerate(kd_names):
            line(ax, preds.get(f"{p}+{kd}"), "no KD" if kd == "none" else kd, color=_KD_COLORS[j % len(_KD_COLORS)], **kd_kw)
        line(ax, preds.get("teacher"), "teacher", color="k", ls="--", **ref_kw)
        line(ax, preds.get("sbr"), "SBR", color="grey", ls=":", **ref_kw)
        ax.plot([0, 1], [0, 1], color="lightgrey", lw=0.8)
        ax.set_title(p)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc=legend_loc)
    return _save(fig, path)


def _rel_line(ax: Any, df: pd.DataFrame | None, label: str, n_bins: int, **kw: Any) -> None:
    if df is None or df.empty or df["y_true"].nunique() < 2:
        return
    frac, mean = calibration_curve(df["y_true"], df["p_pos"].clip(0, 1), n_bins=n_bins, strategy="uniform")
    ax.plot(mean, frac, label=label, lw=1.2, ms=3, **kw)


def relation_graphs(graphs: dict[str, np.ndarray], labels: np.ndarray, path: Path, title: str = "") -> Path:
    """Heatmaps of batch relation graphs G (B×B, scans sorted by class) side by side."""
    names = list(graphs)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False, layout="constrained")
    order = np.argsort(labels, kind="stable")
    boundary = int((labels == labels[order][0]).sum())
    for ax, n in zip(axes[0], names):
        g = np.asarray(graphs[n])[np.ix_(order, order)]
        im = ax.imshow(g, cmap="viridis", vmin=min(0.0, float(g.min())), vmax=1.0)
        ax.axhline(boundary - 0.5, color="w", lw=0.8)
        ax.axvline(boundary - 0.5, color="w", lw=0.8)
        ax.set_title(n.replace(" | ", "\n"), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def training_curves(histories: dict[str, list[dict[str, Any]]], path: Path,
                    keys: tuple[str, ...] = ("train_loss", "val_loss", "train_ce")) -> Path:
    """Per-epoch curves of each model of one repeat: training loss (with KD: CE + KD terms),
    validation loss (CE) and, for KD students, the training CE alone."""
    names = [n for n, h in histories.items() if h]
    fig, axes = _panels(max(1, len(names)))
    for ax, n in zip(axes, names):
        h = pd.DataFrame(histories[n])
        x = h["epoch"] if "epoch" in h else np.arange(1, len(h) + 1)
        for k, ls in zip(keys, ("-", "--", ":")):
            if k in h and (k != "train_ce" or "train_kd" in h and h["train_kd"].abs().sum() > 0):
                ax.plot(x, h[k], ls=ls, label=k.replace("_", " "))
        ax.set_title(n, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)
