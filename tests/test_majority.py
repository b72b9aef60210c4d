"""The majority-class baseline: class frequencies of the training partition, for every scan."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_cohort
from volkd.data.splits import Split, holdout_splits
from volkd.errors import LeakageError
from volkd.evaluate import classification_metrics, majority_baseline, majority_predict, predict_labels


def test_majority_predicts_the_training_majority_with_its_frequencies():
    c = make_cohort(n_subjects=12, visits=2, grid=8)  # 4 control and 8 PD subjects
    split = holdout_splits(c, n_repeats=1)[0]
    proba, info = majority_baseline(c, split)
    y_train = c.y[split.train]
    want = np.bincount(y_train, minlength=2) / len(y_train)
    assert proba.shape == (len(split.test), 2)
    np.testing.assert_allclose(proba, np.tile(want, (len(split.test), 1)))
    assert info["majority"] == "PD" and info["train_counts"] == {"control": int((y_train == 0).sum()), "PD": int((y_train == 1).sum())}
    assert (predict_labels(proba) == 1).all()
    m = classification_metrics(c.y[split.test], proba)
    assert m["roc_auc"] == pytest.approx(0.5) and m["balanced_accuracy"] == pytest.approx(0.5) and m["specificity"] == 0.0
    np.testing.assert_allclose(majority_predict(info, 3), np.tile(want, (3, 1)))


def test_minority_positive_class_is_never_predicted_and_leakage_is_refused():
    c = make_cohort(n_subjects=12, visits=1, grid=8)
    c.scans["label"] = np.where(c.scans["label"] == "PD", "control", "PD")  # now PD is the minority
    split = holdout_splits(c, n_repeats=1)[0]
    proba, info = majority_baseline(c, split)
    assert info["majority"] == "control" and (predict_labels(proba) == 0).all()
    good = holdout_splits(c, n_repeats=1)[0]
    bad = Split(0, good.train, good.val, np.concatenate([good.test, good.train[:1]]), 0, "holdout")  # no stored IDs
    with pytest.raises(LeakageError):
        majority_baseline(c, bad)
