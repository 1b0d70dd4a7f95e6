"""Drift against a reference profile: no drift on unchanged data, planted shifts found by the right
statistic, every edge case reported (never a NaN), and statistics checked against scipy on raw data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, wasserstein_distance

from tasks.monitoring.drift import (
    DriftPolicy,
    DriftReport,
    DriftResult,
    compare_column,
    compare_frame,
    compare_prediction,
    feature_status,
)
from tasks.monitoring.profile import NumericProfile, profile_column, profile_frame

N = 40_000
REGIONS = ["eu", "us", "apac", "latam"]
REGION_P = [0.5, 0.25, 0.15, 0.10]


def _frame(seed: int, n: int = N, *, shift: float = 0.0, region_p: list[float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "watch_min": rng.gamma(2.0, 15.0, n),
            "gifts": rng.poisson(1.5, n).astype("float64"),
            "score": rng.normal(50.0 + 8.0 * shift, 8.0, n),
            "region": rng.choice(REGIONS, n, p=region_p or REGION_P),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _frame(seed=1)


def _by(report: DriftReport, feature: str | None, statistic: str) -> float | None:
    rows = [r for r in report.results if r.feature == feature and r.statistic == statistic]
    assert len(rows) == 1, f"{feature} {statistic}: {rows}"
    return rows[0].value


def _no_nan(report: DriftReport) -> None:
    for r in (*report.results, report.summary):
        for number in (r.value, r.threshold):
            assert number is None or math.isfinite(number), r
        if r.value is None and r.statistic not in ("verdict",):
            assert r.status == "error" or r.statistic == "drift_share", r
            assert r.detail, r


def test_unchanged_data_does_not_drift(reference: pd.DataFrame) -> None:
    report = compare_frame(profile_frame(reference), _frame(seed=2))
    assert report.status == "ok", report.summary
    assert set(report.features.values()) == {"ok"}
    # Every distance is within its threshold; a p-value test flags 5 % of unchanged samples by
    # design (which is why it does not decide by default), so only a tiny p-value would be wrong.
    distances = [r for r in report.results if r.statistic != "chi2_p_value"]
    assert all(r.status == "ok" for r in distances), [r for r in distances if r.status != "ok"]
    p_value = _by(report, "region", "chi2_p_value")
    assert p_value is not None and p_value > 1e-3
    assert report.summary.value == 0.0
    _no_nan(report)


def test_mean_moved_by_one_std_drifts_by_psi_and_wasserstein(reference: pd.DataFrame) -> None:
    report = compare_frame(profile_frame(reference), _frame(seed=2, shift=1.0))
    assert report.features["score"] == "drift"
    assert report.drifted() == ["score"]
    psi = _by(report, "score", "psi")
    assert psi is not None and psi > 0.25
    assert _by(report, "score", "wasserstein_norm") == pytest.approx(1.0, abs=0.05)
    assert report.features["watch_min"] == "ok" and report.features["region"] == "ok"
    # one drifted feature of four is below the dataset share of 0.5: a warning, not dataset drift
    assert report.status == "warn" and report.summary.value == pytest.approx(0.25)


def test_category_share_moved_by_30_points_drifts_by_linf_and_psi(reference: pd.DataFrame) -> None:
    moved = [0.2, 0.55, 0.15, 0.10]  # eu loses 30 points to us
    report = compare_frame(profile_frame(reference), _frame(seed=2, region_p=moved))
    assert report.features["region"] == "drift"
    assert _by(report, "region", "linf") == pytest.approx(0.30, abs=0.02)
    linf = next(r for r in report.results if r.feature == "region" and r.statistic == "linf")
    assert linf.status == "drift" and linf.detail.startswith(("largest move: eu", "largest move: us"))
    psi = _by(report, "region", "psi")
    assert psi is not None and psi > 0.25
    assert _by(report, "region", "chi2_p_value") == pytest.approx(0.0, abs=1e-12)


def test_dataset_drift_share_is_configurable(reference: pd.DataFrame) -> None:
    profile = profile_frame(reference)
    current = _frame(seed=2, shift=1.0, region_p=[0.2, 0.55, 0.15, 0.10])  # 2 of 4 features drift
    assert compare_frame(profile, current).status == "drift"  # 0.5 >= the default 0.5
    strict = compare_frame(profile, current, DriftPolicy(dataset_drift_share=0.75))
    assert strict.status == "warn" and strict.summary.value == pytest.approx(0.5)


def test_psi_warn_band_and_policy_choice_of_statistic(reference: pd.DataFrame) -> None:
    profile = profile_frame(reference, ["score"])
    current = _frame(seed=2, shift=0.35)
    psi = _by(compare_frame(profile, current), "score", "psi")
    assert psi is not None and 0.1 <= psi < 0.25
    assert compare_frame(profile, current).features["score"] == "warn"
    by_wasserstein = compare_frame(profile, current, DriftPolicy(numeric_test="wasserstein_norm"))
    assert by_wasserstein.features["score"] == "drift"  # 0.35 std >= 0.1
    with pytest.raises(ValueError, match="numeric_test"):
        DriftPolicy(numeric_test="ks")


def test_statistics_match_scipy_on_the_raw_arrays(reference: pd.DataFrame) -> None:
    current = _frame(seed=2, shift=0.5)
    report = compare_frame(profile_frame(reference), current)
    ref, cur = reference["score"].to_numpy(), current["score"].to_numpy()
    # A pure shift: the quantile sketch is exact up to sampling, so the raw-data distance agrees.
    raw = wasserstein_distance(ref, cur) / ref.std()
    assert _by(report, "score", "wasserstein_norm") == pytest.approx(raw, rel=0.02)
    # PSI and Jensen-Shannon from a histogram of the raw arrays over the profile's edges.
    profile = profile_column(reference["score"])
    assert isinstance(profile, NumericProfile)
    edges = np.concatenate(([-np.inf], profile.edges, [np.inf]))
    r = np.histogram(ref, edges)[0] / len(ref)
    c = np.histogram(cur, edges)[0] / len(cur)
    r_eps, c_eps = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    assert _by(report, "score", "psi") == pytest.approx(
        np.sum((r_eps - c_eps) * np.log(r_eps / c_eps)), rel=1e-3
    )
    assert _by(report, "score", "jensen_shannon") == pytest.approx(jensenshannon(r, c), rel=1e-3)
    # chi-square test of homogeneity on the raw reference and current region counts.
    moved = _frame(seed=2, region_p=[0.49, 0.255, 0.152, 0.103])
    table = [frame["region"].value_counts().reindex(REGIONS).to_numpy() for frame in (reference, moved)]
    expected = chi2_contingency(table, correction=False).pvalue
    assert 1e-9 < expected < 0.5  # a case where the p-value is neither 0 nor 1
    p_value = compare_frame(profile_frame(reference, ["region"]), moved)
    assert _by(p_value, "region", "chi2_p_value") == pytest.approx(expected, rel=1e-6)


def test_zero_variance_reference_is_compared_and_reported() -> None:
    reference = pd.DataFrame({"tier": np.full(5_000, 2.0)})
    profile = profile_frame(reference)
    same = compare_frame(profile, pd.DataFrame({"tier": np.full(3_000, 2.0)}))
    assert same.features["tier"] == "ok" and same.status == "ok"
    assert _by(same, "tier", "wasserstein_norm") == 0.0
    above = np.where(np.arange(3_000) < 600, 3.0, 2.0)  # a fifth of the values left the constant
    below = np.where(np.arange(3_000) < 600, 1.0, 2.0)
    for values in (above, below):
        report = compare_frame(profile, pd.DataFrame({"tier": values}))
        assert report.features["tier"] == "drift"
        wasserstein = next(r for r in report.results if r.statistic == "wasserstein_norm")
        assert "zero variance" in wasserstein.detail and wasserstein.status == "drift"
        _no_nan(report)


def test_all_null_current_column_is_drift_not_nan(reference: pd.DataFrame) -> None:
    current = _frame(seed=2).assign(gifts=np.nan)
    report = compare_frame(profile_frame(reference), current)
    gifts = [r for r in report.results if r.feature == "gifts"]
    assert [r.statistic for r in gifts] == ["null_share"]
    assert gifts[0].value == 1.0 and gifts[0].status == "drift" and "no current values" in gifts[0].detail
    assert report.features["gifts"] == "drift"
    _no_nan(report)
    partly = _frame(seed=2)
    partly.loc[partly.index[: N // 4], "region"] = None  # 25 % missing, the reference had none
    report = compare_frame(profile_frame(reference), partly)
    assert report.features["region"] == "drift" and _by(report, "region", "null_share") == pytest.approx(0.25)


def test_reference_without_values_is_an_error_row() -> None:
    profile = profile_frame(pd.DataFrame({"x": [np.nan] * 100}))
    report = compare_frame(profile, pd.DataFrame({"x": np.arange(50.0)}))
    assert report.features["x"] == "error" and report.status == "error"
    assert any("reference has no values" in r.detail for r in report.results)
    _no_nan(report)


def test_category_never_seen_in_training(reference: pd.DataFrame) -> None:
    profile = profile_frame(reference, ["region"])
    few = _frame(seed=2)
    few.loc[few.index[:200], "region"] = "mena"  # 0.5 %: a warning
    report = compare_frame(profile, few)
    new = next(r for r in report.results if r.statistic == "new_categories")
    assert new.status == "warn" and new.value == pytest.approx(0.005) and "mena (0.50%)" in new.detail
    assert report.features["region"] == "warn"
    many = _frame(seed=2)
    many.loc[many.index[: N // 10], "region"] = "mena"  # 10 %: drift
    report = compare_frame(profile, many)
    assert report.features["region"] == "drift"
    _no_nan(report)


def test_missing_feature_and_empty_frame_are_errors(reference: pd.DataFrame) -> None:
    profile = profile_frame(reference)
    report = compare_frame(profile, _frame(seed=2).drop(columns=["gifts"]))
    gifts = [r for r in report.results if r.feature == "gifts"]
    assert [(r.statistic, r.status) for r in gifts] == [("missing", "error")]
    assert report.features["gifts"] == "error"
    assert report.status == "error" and "not checked: gifts" in report.summary.detail
    assert report.summary.value == 0.0  # the three features present did not drift
    _no_nan(report)
    empty = compare_frame(profile, _frame(seed=2).iloc[:0])
    assert set(empty.features.values()) == {"error"}
    assert {r.statistic for r in empty.results} == {"rows"}
    assert empty.status == "error" and empty.summary.value is None
    _no_nan(empty)


def test_text_where_numbers_were_expected_is_an_error(reference: pd.DataFrame) -> None:
    rows = compare_column(profile_column(reference["score"]), reference["score"].astype(str))
    assert [(r.statistic, r.status) for r in rows] == [("dtype", "error")]


def test_prediction_drift(reference: pd.DataFrame) -> None:
    rng = np.random.default_rng(5)
    holdout = profile_column(pd.Series(rng.beta(2, 8, 20_000), name="prediction"))
    same = compare_prediction(holdout, pd.Series(rng.beta(2, 8, 30_000)))
    assert same.status == "ok"
    shifted = compare_prediction(holdout, pd.Series(rng.beta(4, 6, 30_000)))
    assert shifted.status == "drift" and shifted.features == {"prediction": "drift"}
    _no_nan(shifted)


def test_predictions_that_slide_a_fifth_of_a_std_drift_by_wasserstein_not_psi() -> None:
    """The policy's ``prediction_test`` decides the predictions' verdict: scores moved by 0.2 std
    keep PSI (the default) under its warn band, while the normalised Wasserstein distance, when a
    policy picks it, calls them drift; the inputs keep their own statistic."""
    rng = np.random.default_rng(8)
    holdout = rng.normal(0.0, 1.0, 20_000)
    reference = profile_column(pd.Series(holdout, name="prediction"))
    current = pd.Series(rng.normal(0.2, 1.0, 20_000))
    by_psi = compare_prediction(reference, current)
    psi, distance = _by(by_psi, "prediction", "psi"), _by(by_psi, "prediction", "wasserstein_norm")
    assert psi is not None and psi < DriftPolicy().psi_warn
    assert distance is not None and 0.15 < distance < 0.25
    assert by_psi.status == "ok" and "psi" in by_psi.summary.detail
    wasserstein = DriftPolicy(prediction_test="wasserstein_norm")
    scored = compare_prediction(reference, current, wasserstein)
    assert scored.status == "drift" and "wasserstein_norm" in scored.summary.detail
    as_input = compare_frame(
        profile_frame(pd.DataFrame({"prediction": holdout})), current.to_frame("prediction"), wasserstein
    )
    assert as_input.features == {"prediction": "ok"}  # an input is still decided by PSI
    with pytest.raises(ValueError, match="prediction_test"):
        DriftPolicy(prediction_test="linf")


def test_a_large_distance_on_a_small_sample_is_noise_unless_the_bins_differ_significantly() -> None:
    """Size and significance: 30 values against 30 from the same distribution cross the PSI drift
    threshold by chance, and the chi-square test of the same bins keeps the verdict ok (the detail
    says why); 30 values moved by two standard deviations still drift; ``significance=None``
    judges by size alone."""
    rng = np.random.default_rng(3)
    noisy = []
    for _ in range(20):
        reference = profile_column(pd.Series(rng.normal(0.0, 1.0, 30), name="x"))
        same = compare_column(reference, pd.Series(rng.normal(0.0, 1.0, 30)))
        psi = next(r for r in same if r.statistic == "psi")
        if psi.value is not None and psi.value >= DriftPolicy().psi_drift:
            noisy.append(psi)
    assert len(noisy) >= 10  # most pairs of 30 cross the threshold by size alone
    assert all(r.status == "ok" and "within sampling noise" in r.detail for r in noisy), noisy
    reference = profile_column(pd.Series(rng.normal(0.0, 1.0, 30), name="x"))
    moved = compare_column(reference, pd.Series(rng.normal(2.0, 1.0, 30)))
    assert feature_verdict(moved) == "drift"
    # Judged by size alone, the same kind of pair drifts.
    rng = np.random.default_rng(3)
    reference = profile_column(pd.Series(rng.normal(0.0, 1.0, 30), name="x"))
    current = pd.Series(rng.normal(0.0, 1.0, 30))
    by_size = compare_column(reference, current, DriftPolicy(significance=None))
    by_test = compare_column(reference, current)
    pair = [next(r for r in rows if r.statistic == "psi") for rows in (by_size, by_test)]
    assert pair[0].value == pair[1].value and pair[0].value is not None and pair[0].value >= 0.25
    assert (pair[0].status, pair[1].status) == ("drift", "ok")
    with pytest.raises(ValueError, match="significance"):
        DriftPolicy(significance=0.0)


def feature_verdict(rows: tuple[DriftResult, ...]) -> str:
    """The verdict of one numeric column under the default policy."""
    return feature_status(rows, "numeric", DriftPolicy())
