"""Per-trial classification metrics checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from volkd.evaluate.metrics import (
    METRIC_NAMES, EvaluationError, classification_metrics, confusion, expected_calibration_error, reliability_curve,
)


def test_binary_by_hand():
    # 6 scans: 2 controls (0), 4 PD (1)
    y = np.array([0, 0, 1, 1, 1, 1])
    p = np.array([0.2, 0.65, 0.85, 0.45, 0.95, 0.75])
    # predictions at 0.5: 0 1 1 0 1 1 → TP=3 FN=1 TN=1 FP=1
    m = classification_metrics(y, p)
    assert set(m) == {"n", *METRIC_NAMES, "notes"} and m["n"] == 6 and m["notes"] == []
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["g_mean"] == pytest.approx(math.sqrt(3 / 8))
    f1_pos = 2 * 3 / (2 * 3 + 1 + 1)  # 0.75
    f1_neg = 2 * 1 / (2 * 1 + 1 + 1)  # 0.5
    assert m["f1_macro"] == pytest.approx((f1_pos + f1_neg) / 2)
    assert m["f1_weighted"] == pytest.approx((4 * f1_pos + 2 * f1_neg) / 6)
    assert m["f1_micro"] == pytest.approx(4 / 6)
    # AUC: positive scores .85 .45 .95 .75 vs negative .2 .65 → pairs won 2+1+2+2 = 7 of 8
    assert m["roc_auc"] == pytest.approx(7 / 8)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    # ECE, top-label: conf .8 .65 .85 .55 .95 .75, correct 1 0 1 0 1 1
    # bins: [.5,.6): .55/0 ; [.6,.7): .65/0 ; [.7,.8): .75/1 ; [.8,.9): (.8+.85)/2 / 1 ; [.9,1]: .95/1
    ece = (1 * .55 + 1 * .65 + 1 * .25 + 2 * abs(1 - .825) + 1 * .05) / 6
    assert m["ece"] == pytest.approx(ece)
    assert confusion(y, p).tolist() == [[1, 1], [1, 3]]


def test_threshold_and_positive_class():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.3, 0.35, 0.9])
    assert classification_metrics(y, p)["sensitivity"] == 0.5
    assert classification_metrics(y, p, threshold=0.33)["sensitivity"] == 1.0
    # with control (0) as positive, sensitivity is the control recall
    m = classification_metrics(y, np.stack([1 - p, p], 1), positive=0)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 0.5
    assert m["roc_auc"] == pytest.approx(1.0)


def test_one_class_present_gives_nan_with_note():
    m = classification_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["specificity"]) and math.isnan(m["g_mean"])
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(2 / 3)
    assert any("roc_auc undefined" in n for n in m["notes"])
    assert any("specificity undefined" in n for n in m["notes"])


def test_multiclass():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4]])
    m = classification_metrics(y, p, positive=2)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(1.0)
    assert m["brier"] == pytest.approx(np.mean(np.sum((p - np.eye(3)[y]) ** 2, axis=1)))
    assert 0 < m["roc_auc"] <= 1
    m = classification_metrics(np.array([0, 1, 1, 0]), p)
    assert math.isnan(m["roc_auc"]) and "lacks class(es) [2]" in m["notes"][0]


def test_reliability_curve():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.92, 0.97, 0.15, 0.55])  # conf .92 .97 .85 .55; correct 1 1 1 0
    r = reliability_curve(y, p)
    assert r["count"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 1, 2]
    assert r["accuracy"][9] == 1.0 and r["confidence"][9] == pytest.approx(0.945)
    assert np.isnan(r["accuracy"][0])
    assert expected_calibration_error(y, p) == pytest.approx((0.55 + 0.15 + 2 * 0.055) / 4)


@pytest.mark.parametrize("y, p, msg", [
    ([0, 1], [0.2, 0.5, 0.4], "N = 2"),
    ([0, 1], [0.2, 1.5], r"\[0, 1\]"),
    ([0, 1], [[0.2, 0.2], [0.5, 0.5]], "sum to 1"),
    ([0, 3], [0.2, 0.4], "outside 0..1"),
    ([0.5, 1], [0.2, 0.4], "integer"),
    ([], [], "non-empty"),
])
def test_bad_inputs(y, p, msg):
    with pytest.raises(EvaluationError, match=msg):
        classification_metrics(np.array(y), np.array(p))


def test_balanced_accuracy_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = rng.uniform(size=50)
    assert classification_metrics(y, p)["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, (p >= 0.5).astype(int)))
