"""The majority-class baseline: always the training partition's most frequent class.

Its probabilities are the training partition's class frequencies, the same for every scan, so
its decision (argmax, or the 0.5 threshold on the positive class) is the majority class and its
ROC AUC is 0.5: the floor any model must beat, and on an imbalanced cohort a high one for
accuracy and weighted F1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volkd.data.cohort import Cohort
from volkd.data.splits import Split, check_no_leakage
from volkd.errors import VolkdError


def majority_baseline(cohort: Cohort, split: Split) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit on ``split.train`` (class frequencies); return the test probabilities ``(n_test, classes)`` and the fit."""
    check_no_leakage(cohort, split)
    y = cohort.y[np.asarray(split.train, dtype=np.int64)]
    if len(y) == 0:
        raise VolkdError(f"majority baseline: repeat {split.repeat} has no training scans")
    counts = np.bincount(y, minlength=len(cohort.class_names))
    freq = counts / counts.sum()
    info = {"model": "majority_class", "majority": cohort.class_names[int(np.argmax(counts))],
            "class_frequencies": {c: float(f) for c, f in zip(cohort.class_names, freq)},
            "train_counts": {c: int(n) for c, n in zip(cohort.class_names, counts)}}
    return majority_predict(info, len(split.test)), info


def majority_predict(info: dict[str, Any], n: int) -> np.ndarray:
    """The fitted baseline's probabilities for ``n`` scans (any cohort with the same classes)."""
    freq = np.asarray(list(info["class_frequencies"].values()), dtype=np.float64)
    return np.tile(freq, (int(n), 1))
