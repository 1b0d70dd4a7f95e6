"""The metric registry: each kind's metrics against reference implementations or hand-computed values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, mean_tweedie_deviance

from tasks.gates import evaluate_gate
from tasks.gates import metrics as gate_metrics
from tasks.models.catalog.ad_ctr import ad_ctr
from tasks.models.evaluation import (
    attach_predictions,
    bootstrap_ci,
    evaluate,
    metric_value,
    stored_predictions,
)
from tasks.models.metrics import METRICS, NO_BOOTSTRAP, higher_is_better
from tasks.models.spec import PromotionPolicy
from tasks.models.training import time_split

RNG = np.random.default_rng(11)


def test_every_registered_metric_has_a_declared_direction() -> None:
    # pred_obs_ratio has a target (1), not a direction: it is only ever bounded by value thresholds.
    for name in sorted(set(METRICS) - {"pred_obs_ratio"}):
        higher_is_better(name)  # raises for an undeclared one


def test_directions_and_bootstrap_are_declared_with_each_metric() -> None:
    assert METRICS["auc"].higher_is_better is True and METRICS["log_loss"].higher_is_better is False
    assert METRICS["pred_obs_ratio"].higher_is_better is None  # a target, not a direction
    for name, entry in METRICS.items():
        if entry.higher_is_better is not None:
            assert higher_is_better(name) is entry.higher_is_better, name
    # Another parameter of a registered family takes the family's direction.
    assert (
        higher_is_better("recall@50")
        and higher_is_better("hit_rate_3")
        and not higher_is_better("pinball_p10")
    )
    assert {"catalog_coverage_10", "silhouette", "davies_bouldin", "stability"} == NO_BOOTSTRAP
    # The gates judge with the registry's directions; there is no second table.
    assert gate_metrics.higher_is_better is higher_is_better
    assert not hasattr(gate_metrics, "metric_value")  # one metric_value: tasks.models.evaluation's


def test_pr_auc_matches_average_precision_without_ties() -> None:
    y = RNG.integers(0, 2, 500)
    p = RNG.random(500)
    assert metric_value("pr_auc", y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_lift_top_decile_is_the_top_rate_over_the_base_rate() -> None:
    p = np.arange(100) / 100
    y = np.zeros(100)
    y[95:] = 1  # all 5 positives in the top decile (rows 90-99)
    y[:5] = 1  # and 5 at the bottom
    assert metric_value("lift_top_decile", y, p) == pytest.approx((5 / 10) / (10 / 100))


def test_tweedie_deviance_matches_sklearn() -> None:
    y = np.where(RNG.random(300) < 0.6, 0.0, RNG.lognormal(2, 1, 300))
    p = RNG.lognormal(1, 0.5, 300)
    expected = mean_tweedie_deviance(y, p, power=1.5)
    assert metric_value("tweedie_deviance", y, p) == pytest.approx(expected, rel=1e-9)


def test_normalized_gini_is_one_for_a_perfect_order_and_near_zero_for_noise() -> None:
    y = RNG.lognormal(0, 1, 2000)
    assert metric_value("gini_normalized", y, y * 3) == pytest.approx(1.0)
    assert abs(metric_value("gini_normalized", y, RNG.random(2000))) < 0.1
    assert metric_value("gini_normalized", y, -y) == pytest.approx(-1.0)


def test_forecast_metrics_by_hand() -> None:
    rows = pd.DataFrame({"scale": [2.0, 2.0, 4.0]})
    y = np.array([10.0, 0.0, 8.0])
    pred = pd.DataFrame(
        {"prediction": [12.0, 0.0, 4.0], "lower": [9.0, -1.0, 5.0], "upper": [13.0, 1.0, 7.0]}
    )
    assert metric_value("mase", y, pred, rows) == pytest.approx((2 / 2 + 0 + 4 / 4) / 3)
    assert metric_value("smape", y, pred, rows) == pytest.approx((4 / 22 + 0 + 8 / 12) / 3)
    assert metric_value("coverage_80", y, pred, rows) == pytest.approx(2 / 3)
    assert metric_value("coverage_p90", y, pred, rows) == pytest.approx(2 / 3)
    # P90 pinball: under by 1 on the last row (0.9 × 1), over by 3 and 1 on the others (0.1 × …).
    assert metric_value("pinball_p90", y, pred, rows) == pytest.approx((0.1 * 3 + 0.1 * 1 + 0.9 * 1) / 3)
    assert np.isnan(metric_value("coverage_p90", y, pred[["prediction"]], rows))


def _ranking_rows() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    # query a: relevant item ranked 2nd; query b: relevant ranked 1st, a second relevant item missed
    # by candidate generation (n_relevant 2); query c: nothing relevant among candidates.
    rows = pd.DataFrame(
        {
            "query_id": ["a", "a", "a", "b", "b", "c", "c"],
            "item_id": ["x", "y", "z", "x", "w", "y", "z"],
            "n_relevant": [1, 1, 1, 2, 2, 1, 1],
        }
    )
    y = np.array([0, 1, 0, 1, 0, 0, 0])
    score = np.array([0.9, 0.5, 0.1, 0.8, 0.2, 0.7, 0.6])
    return y, score, rows


def test_ranking_metrics_by_hand() -> None:
    y, score, rows = _ranking_rows()
    assert metric_value("hit_rate_1", y, score, rows) == pytest.approx(1 / 3)
    assert metric_value("hit_rate_5", y, score, rows) == pytest.approx(2 / 3)
    assert metric_value("mrr", y, score, rows) == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert metric_value("recall_20", y, score, rows) == pytest.approx((1 + 0.5 + 0) / 3)
    ideal_b = 1 + 1 / np.log2(3)
    expected_ndcg = ((1 / np.log2(3)) / 1 + 1 / ideal_b + 0) / 3
    assert metric_value("ndcg_10", y, score, rows) == pytest.approx(expected_ndcg)
    assert metric_value("catalog_coverage_10", y, score, rows) == pytest.approx(4 / 4)


def test_ranking_bootstrap_resamples_whole_queries() -> None:
    y, score, rows = _ranking_rows()
    spec = dataclasses.replace(ad_ctr, kind="ranking", metrics=("hit_rate_1",), slices=(), sampling=None)
    low, point, high = bootstrap_ci(spec, "hit_rate_1", y, score, rows=rows, n_boot=300, seed=3)
    # With whole queries resampled, every replicate's hit rate is a multiple of 1/3.
    assert point == pytest.approx(1 / 3)
    assert {round(low * 3, 9), round(high * 3, 9)} <= {0.0, 1.0, 2.0, 3.0}


def test_evaluation_frame_roles_round_trip() -> None:
    frame = pd.DataFrame({"label": [1.0, 2.0]})
    pred = pd.DataFrame({"prediction": [1.5, 2.5], "upper": [2.0, 3.0]})
    stored = attach_predictions(attach_predictions(frame, pred, "candidate"), pred * 2, "baseline1")
    assert {"prediction", "pred__upper", "baseline1_prediction", "baseline1__upper"} <= set(stored.columns)
    pd.testing.assert_frame_equal(stored_predictions(stored, "candidate"), pred)
    pd.testing.assert_frame_equal(stored_predictions(stored, "baseline1"), pred * 2)


def test_beat_baseline_applies_to_every_baseline() -> None:
    spec = dataclasses.replace(ad_ctr, metrics=("auc",), slices=())
    y = np.array([0, 0, 1, 1, 0, 1])
    good = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    worse = np.array([0.5, 0.2, 0.1, 0.9, 0.3, 0.7])
    policy = PromotionPolicy(beat_baseline=("auc",), require_validated_data=False)
    candidate = evaluate(spec, y, worse * 0.99 + 0.001)
    report = evaluate_gate(
        policy,
        candidate=candidate,
        champion=None,
        baseline=evaluate(spec, y, np.full(6, 0.5)),
        extra_baselines={"column:rep_score": evaluate(spec, y, good)},
        deltas={},
        data_validated=True,
    )
    checks = [c for c in report.checks if c.name == "beat_baseline"]
    assert [c.passed for c in checks] == [True, False]
    assert not report.passed and "column:rep_score" in report.reason


def test_time_split_purges_rows_whose_target_reaches_the_next_split() -> None:
    origins = np.repeat(np.arange(20) * 100, 3)
    frame = pd.DataFrame(
        {
            "example_id": [f"e{i}" for i in range(60)],
            "event_ts": origins,
            "target_ts": origins + np.tile([50, 150, 450], 20),
        }
    )
    train, valid, holdout = time_split(frame, (0.6, 0.2, 0.2))
    assert train["target_ts"].max() < valid["event_ts"].min()
    assert valid["target_ts"].max() < holdout["event_ts"].min()
    assert len(holdout) == 15 and holdout["event_ts"].nunique() == 5  # whole origins, none purged


def test_slices_read_frame_columns_on_their_own_rows() -> None:
    spec = dataclasses.replace(ad_ctr, kind="forecast", metrics=("mase",), slices=("series",), sampling=None)
    rows = pd.DataFrame({"series": ["a", "b", "a", "b"], "scale": [1.0, 10.0, 1.0, 10.0]})
    y = np.array([1.0, 10.0, 3.0, 30.0])
    result = evaluate(spec, y, np.array([2.0, 20.0, 3.0, 30.0]), rows)
    assert result.by_slice["series"]["a"]["mase"] == pytest.approx(0.5)  # (1/1 + 0) / 2
    assert result.by_slice["series"]["b"]["mase"] == pytest.approx(0.5)  # (10/10 + 0) / 2
    assert result.metrics["mase"] == pytest.approx(0.5)
