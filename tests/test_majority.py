"""The majority-class reference baseline: training priors, constant predictions, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volkd.data.cohort import Cohort, CohortMeta
from volkd.data.splits import Split
from volkd.errors import LeakageError
from volkd.evaluate import classification_metrics, majority_baseline, majority_predict


def _cohort(labels: list[str]) -> Cohort:
    n = len(labels)
    scans = pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "subject_id": [f"p{i}" for i in range(n)],
                          "visit": 0, "label": labels})
    meta = CohortMeta(grid_shape=(4, 4, 4), class_names=["control", "PD"])
    return Cohort(np.zeros((n, 4, 4, 4), np.float32), scans, meta)


def test_majority_predicts_training_priors_everywhere() -> None:
    # training: 1 control, 3 PD; test: 2 control, 1 PD -> predicts PD for all
    c = _cohort(["control", "PD", "PD", "PD", "control", "control", "PD"])
    split = Split(repeat=0, train=np.array([0, 1, 2, 3]), val=np.array([], int), test=np.array([4, 5, 6]), seed=0, kind="holdout")
    proba, info = majority_baseline(c, split)
    assert info["majority"] == "PD"
    np.testing.assert_allclose(info["priors"], [0.25, 0.75])
    np.testing.assert_allclose(proba, [[0.25, 0.75]] * 3)
    m = classification_metrics(c.y[split.test], proba)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["roc_auc"] == pytest.approx(0.5) and m["sensitivity"] == 1.0
    assert majority_predict(info, 2).shape == (2, 2)


def test_majority_refuses_a_leaky_split() -> None:
    scans = ["control", "PD", "PD", "control"]
    c = _cohort(scans)
    c.scans.loc[3, "subject_id"] = "p0"  # subject p0 in train and test
    split = Split(repeat=0, train=np.array([0, 1]), val=np.array([], int), test=np.array([2, 3]), seed=0, kind="holdout")
    with pytest.raises(LeakageError):
        majority_baseline(c, split)
