"""volkd.evaluate: per-trial metrics, statistics over repeats, the SBR clinical baseline, the majority-class reference."""

from volkd.evaluate.metrics import (
    METRIC_NAMES, EvaluationError, classification_metrics, confusion, expected_calibration_error, predict_labels,
    reliability_curve,
)
from volkd.evaluate.majority import majority_baseline, majority_predict
from volkd.evaluate.sbr import SBR_REGIONS, SBRError, cohort_sbr, sbr_baseline, sbr_features, sbr_predict
from volkd.evaluate.stats import holm, min_attainable_p, paired_test, rank_biserial, summarise

__all__ = [
    "METRIC_NAMES", "SBR_REGIONS", "EvaluationError", "SBRError", "classification_metrics", "cohort_sbr", "confusion",
    "expected_calibration_error", "holm", "majority_baseline", "majority_predict", "min_attainable_p", "paired_test", "predict_labels", "rank_biserial",
    "reliability_curve", "sbr_baseline", "sbr_features", "sbr_predict", "summarise",
]
