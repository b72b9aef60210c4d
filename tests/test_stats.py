"""Summaries over repeats and paired comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from volkd.evaluate.stats import holm, min_attainable_p, paired_test, rank_biserial, summarise
from volkd.evaluate.metrics import EvaluationError


def test_summarise_t_interval():
    s = summarise([0.90, 0.92, 0.94, 0.96])
    assert s["mean"] == pytest.approx(0.93) and s["n"] == 4
    sd = np.std([0.90, 0.92, 0.94, 0.96], ddof=1)
    assert s["sd"] == pytest.approx(sd)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.93 - half, 0.93 + half))


def test_summarise_edge_cases():
    one = summarise([0.8])
    assert one["mean"] == 0.8 and one["n"] == 1 and math.isnan(one["sd"]) and math.isnan(one["ci_low"])
    none = summarise([])
    assert none["n"] == 0 and math.isnan(none["mean"])
    nan = summarise([0.5, float("nan"), 0.7])
    assert nan["n"] == 2 and nan["n_missing"] == 1 and nan["mean"] == pytest.approx(0.6)
    const = summarise([0.5, 0.5, 0.5])
    assert const["ci_low"] == const["ci_high"] == 0.5
    with pytest.raises(EvaluationError, match="confidence"):
        summarise([1, 2], confidence=95)


def test_paired_clear_win():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.8, 0.9, 20)
    a = b + rng.uniform(0.01, 0.03, 20)
    a[3] = b[3]  # one tie
    a[7] = b[7] - 0.005  # one loss
    r = paired_test(a, b, names=("KD", "no KD"))
    assert (r["wins"], r["ties"], r["losses"], r["n"], r["n_untied"]) == (18, 1, 1, 20, 19)
    d = (a - b)[np.arange(20) != 3]
    assert r["p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert r["significant"] and r["verdict"].startswith("KD higher than no KD")
    ranks = stats.rankdata(np.abs(d))
    assert r["effect_size"] == pytest.approx((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())
    assert r["diff_ci_low"] < r["mean_diff"] < r["diff_ci_high"] and r["diff_ci_low"] > 0


def test_paired_within_noise_and_too_few():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.9, 0.02, 20), rng.normal(0.9, 0.02, 20)
    r = paired_test(a, b)
    assert r["p_value"] >= 0.05 and not r["significant"] and r["verdict"].startswith("within noise")
    few = paired_test([0.9, 0.91, 0.92, 0.93, 0.95], [0.8, 0.8, 0.8, 0.8, 0.8])
    assert few["wins"] == 5 and few["effect_size"] == 1.0 and not few["significant"]
    assert "cannot reach p < 0.05" in few["verdict"] and few["min_attainable_p"] == pytest.approx(0.0625)
    assert min_attainable_p(6) == pytest.approx(0.03125)
    six = paired_test(np.arange(6) + 1.0, np.zeros(6))
    assert six["significant"] and six["p_value"] == pytest.approx(0.03125)


def test_paired_ties_nans_and_lower_is_better():
    r = paired_test([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert r["p_value"] == 1.0 and r["ties"] == 3 and "tied in all 3" in r["verdict"]
    r = paired_test([0.9, float("nan"), 0.7], [0.9, 0.8, 0.7])
    assert r["n"] == 2 and r["n_dropped"] == 1
    loss = paired_test([0.1] * 6, [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], higher_is_better=False)
    assert loss["wins"] == 6 and loss["significant"]
    assert "lower than" in loss["verdict"]
    assert paired_test([float("nan")], [1.0])["verdict"].startswith("no comparison")
    with pytest.raises(EvaluationError, match="one value per repeat"):
        paired_test([1, 2], [1, 2, 3])


def test_rank_biserial_and_holm():
    assert rank_biserial(np.array([1.0, -2.0, 3.0])) == pytest.approx((1 + 3 - 2) / 6)
    assert rank_biserial(np.zeros(3)) == 0.0
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
