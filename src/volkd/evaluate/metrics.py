"""Classification metrics on a test partition (scikit-learn where it has the metric).

``proba`` is either the probability of class 1 (1-D, binary) or an ``N×C`` matrix of class
probabilities. Binary predictions are ``proba[:, positive] ≥ threshold``; with more than two
classes the prediction is the arg-max and sensitivity/specificity are one-vs-rest for
``positive``. Metrics that are undefined on the given data (e.g. ROC AUC when the test set
holds one class) are NaN and explained in ``notes``, never an exception.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score, brier_score_loss, confusion_matrix, f1_score, recall_score, roc_auc_score,
)

from volkd.errors import VolkdError

#: The float-valued keys of :func:`classification_metrics` (the dict also has ``n`` and ``notes``).
METRIC_NAMES = (
    "accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "f1_micro", "sensitivity",
    "specificity", "g_mean", "roc_auc", "brier", "ece",
)
ECE_BINS = 10


class EvaluationError(VolkdError):
    """Predictions or labels given to an evaluation function are invalid."""


def as_proba_matrix(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and probabilities; return ``(y int64 (N,), proba float64 (N, C))``."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0:
        raise EvaluationError(f"y_true must be a non-empty 1-D array of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y.astype(np.float64), 1), 0)):
            raise EvaluationError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    y = y.astype(np.int64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] != len(y) or p.shape[1] < 2:
        raise EvaluationError(f"proba must be (N,) or (N, C≥2) with N = {len(y)} labels, got shape {np.shape(proba)}")
    if not np.all(np.isfinite(p)) or p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise EvaluationError("proba must hold finite probabilities in [0, 1] (apply softmax to logits first)")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise EvaluationError("each row of proba must sum to 1 (apply softmax to logits first)")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise EvaluationError(f"y_true holds class index {int(y.max()) if y.max() >= p.shape[1] else int(y.min())} "
                              f"outside 0..{p.shape[1] - 1} (proba has {p.shape[1]} columns)")
    return y, np.clip(p, 0.0, 1.0)


def predict_labels(proba: np.ndarray, positive: int = 1, threshold: float = 0.5) -> np.ndarray:
    """Class predictions: thresholded ``proba[:, positive]`` (binary) or the arg-max (multi-class)."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.shape[1] == 2:
        other = 1 - positive
        return np.where(p[:, positive] >= threshold, positive, other).astype(np.int64)
    return p.argmax(axis=1).astype(np.int64)


def reliability_curve(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-label reliability: per equal-width confidence bin, mean confidence, accuracy and count.

    Confidence is the highest class probability and correctness is that of the arg-max class
    (Guo et al. 2017). Empty bins have NaN confidence/accuracy and count 0.
    """
    y, p = as_proba_matrix(y_true, proba)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "confidence": mean_conf, "accuracy": acc, "count": count}


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: Σ_bins (n_b / N) · |accuracy_b − confidence_b| over equal-width confidence bins."""
    r = reliability_curve(y_true, proba, n_bins)
    keep = r["count"] > 0
    w = r["count"][keep] / r["count"].sum()
    return float(np.sum(w * np.abs(r["accuracy"][keep] - r["confidence"][keep])))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, positive: int = 1, threshold: float = 0.5) -> dict[str, Any]:
    """All per-trial metrics (see :data:`METRIC_NAMES`), plus ``n`` and ``notes`` (list of str).

    Sensitivity is the recall of ``positive``, specificity the recall of the rest,
    G-mean = √(sensitivity · specificity). Brier score is the mean squared error of the
    positive-class probability (binary) or of the probability vector (multi-class, /2 not
    applied). ECE uses 10 equal-width bins of top-label confidence.
    """
    y, p = as_proba_matrix(y_true, proba)
    n_classes = p.shape[1]
    if not 0 <= positive < n_classes:
        raise EvaluationError(f"positive={positive} is not a class index of proba with {n_classes} columns")
    if not 0 < threshold < 1:
        raise EvaluationError(f"threshold must be in (0, 1), got {threshold}")
    notes: list[str] = []
    pred = predict_labels(p, positive, threshold)
    labels = np.arange(n_classes)
    present = np.unique(y)

    out: dict[str, Any] = {"n": int(len(y))}
    out["accuracy"] = float(accuracy_score(y, pred))
    # balanced accuracy = mean recall over the classes present in y_true (sklearn's definition)
    out["balanced_accuracy"] = float(recall_score(y, pred, labels=present, average="macro", zero_division=0))
    for avg in ("weighted", "macro", "micro"):
        out[f"f1_{avg}"] = float(f1_score(y, pred, labels=labels, average=avg, zero_division=0))

    pos_true, pos_pred = y == positive, pred == positive
    tp, fn = int(np.sum(pos_true & pos_pred)), int(np.sum(pos_true & ~pos_pred))
    tn, fp = int(np.sum(~pos_true & ~pos_pred)), int(np.sum(~pos_true & pos_pred))
    out["sensitivity"] = tp / (tp + fn) if tp + fn else math.nan
    out["specificity"] = tn / (tn + fp) if tn + fp else math.nan
    if tp + fn == 0:
        notes.append("sensitivity undefined: no positive scans in y_true")
    if tn + fp == 0:
        notes.append("specificity undefined: no negative scans in y_true")
    out["g_mean"] = math.sqrt(out["sensitivity"] * out["specificity"])

    if n_classes == 2:
        if len(present) < 2:
            out["roc_auc"] = math.nan
            notes.append(f"roc_auc undefined: y_true holds only class {int(present[0])}")
        else:
            out["roc_auc"] = float(roc_auc_score(pos_true, p[:, positive]))
        out["brier"] = float(brier_score_loss(pos_true.astype(int), p[:, positive], pos_label=1))
    else:
        if len(present) < n_classes:
            out["roc_auc"] = math.nan
            notes.append(f"roc_auc undefined: y_true lacks class(es) {sorted(set(labels.tolist()) - set(present.tolist()))}")
        else:
            out["roc_auc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels))
        onehot = np.eye(n_classes)[y]
        out["brier"] = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    out["ece"] = expected_calibration_error(y, p)
    out["notes"] = notes
    return {k: out[k] for k in ("n", *METRIC_NAMES, "notes")}


def confusion(y_true: np.ndarray, proba: np.ndarray, positive: int = 1, threshold: float = 0.5) -> np.ndarray:
    """Confusion matrix (rows = true class, columns = predicted) with the same decision rule."""
    y, p = as_proba_matrix(y_true, proba)
    return confusion_matrix(y, predict_labels(p, positive, threshold), labels=np.arange(p.shape[1]))


__all__ = [
    "ECE_BINS", "METRIC_NAMES", "EvaluationError", "as_proba_matrix", "classification_metrics", "confusion",
    "expected_calibration_error", "predict_labels", "reliability_curve",
]
