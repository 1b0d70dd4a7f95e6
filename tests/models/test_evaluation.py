"""Metrics against scikit-learn's, undefined metrics as NaN, and the paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from tasks.models.catalog import get_spec
from tasks.models.evaluation import bootstrap_ci, bootstrap_delta, evaluate, metric_value
from tasks.models.metrics import higher_is_better

SPEC = get_spec("ad_ctr")
Y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.05, 0.4, 0.7, 0.3, 0.6, 0.4])


def test_metrics_match_sklearn() -> None:
    assert metric_value("auc", Y, P) == pytest.approx(roc_auc_score(Y, P))
    assert metric_value("log_loss", Y, P) == pytest.approx(log_loss(Y, P))
    rate = Y.mean()
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert metric_value("normalized_entropy", Y, P) == pytest.approx(log_loss(Y, P) / entropy)
    assert metric_value("pred_obs_ratio", Y, P) == pytest.approx(P.sum() / Y.sum())


def test_ece_by_hand() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([0.01, 0.02, 0.99, 0.98])  # bins 0, 0, 14, 14
    expected = (abs(1 - 0.03) + abs(1 - 1.97)) / 4
    assert metric_value("ece", y, p) == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["auc", "normalized_entropy"])
def test_one_class_slice_is_nan_not_an_error(metric: str) -> None:
    slices = pd.DataFrame(
        {"region": ["eu"] * 6 + ["na"] * 6, "device": ["ios"] * 12, "user_type": ["new"] * 12}
    )
    y = np.r_[np.zeros(6), Y[6:]]
    result = evaluate(SPEC, y, P, slices)
    assert math.isnan(result.by_slice["region"]["eu"][metric])
    assert not math.isnan(result.by_slice["region"]["na"][metric])
    assert result.n == 12
    assert math.isnan(metric_value(metric, np.array([]), np.array([])))


def test_bootstrap_identical_predictions_is_exactly_zero() -> None:
    for metric in ("auc", "log_loss", "ece", "normalized_entropy"):
        assert bootstrap_delta(SPEC, metric, Y, P, P, n_boot=100, confidence=0.9, seed=1) == (0.0, 0.0, 0.0)


def test_bootstrap_delta_contains_point_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good = np.clip(y * 0.3 + rng.random(2000) * 0.7, 0.01, 0.99)
    flat = np.full(2000, y.mean())
    low, point, high = bootstrap_delta(SPEC, "auc", y, good, flat, n_boot=300, confidence=0.95, seed=3)
    assert low <= point <= high and low > 0
    assert point == pytest.approx(roc_auc_score(y, good) - 0.5)
    assert bootstrap_delta(SPEC, "auc", y, good, flat, n_boot=300, confidence=0.95, seed=3) == (
        low,
        point,
        high,
    )
    ci = bootstrap_ci(SPEC, "log_loss", y, good, n_boot=200, confidence=0.95, seed=0)
    assert ci[0] <= ci[1] <= ci[2]


def test_relative_bootstrap_delta_separates_a_lift_from_a_bigger_one() -> None:
    """candidate − ratio × other on a paired bootstrap: AUC 0.83 against 0.57 clears 1.2× the
    other's AUC on the whole interval and falls short of 1.8× on the whole interval."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 4000)
    strong = np.clip(y * 0.3 + rng.random(4000) * 0.7, 0.01, 0.99)  # AUC about 0.83
    weak = np.clip(y * 0.05 + rng.random(4000) * 0.95, 0.01, 0.99)  # AUC about 0.57
    ours, theirs = roc_auc_score(y, strong), roc_auc_score(y, weak)
    low, point, _ = bootstrap_delta(SPEC, "auc", y, strong, weak, n_boot=200, seed=1, ratio=1.2)
    assert point == pytest.approx(ours - 1.2 * theirs) and low > 0  # 0.83 >= 1.2 × 0.57, clearly
    _, point, high = bootstrap_delta(SPEC, "auc", y, strong, weak, n_boot=200, seed=1, ratio=1.8)
    assert point == pytest.approx(ours - 1.8 * theirs) and high < 0  # 0.83 < 1.8 × 0.57 = 1.02


def test_directions() -> None:
    assert higher_is_better("auc") and not higher_is_better("log_loss") and not higher_is_better("ece")
    with pytest.raises(ValueError, match="direction"):  # a target of 1, not a direction
        higher_is_better("pred_obs_ratio")
