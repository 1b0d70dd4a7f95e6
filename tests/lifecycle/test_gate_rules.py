"""Gate semantics (architecture §6), pure: no database, no MLflow.

M1 and M2 through the real evaluation, lifecycle.gate, a warehouse and MLflow:
tests/lifecycle/test_platform_gate.py."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tasks.gates import GateReport, evaluate_gate
from tasks.gates.metrics import Interval
from tasks.models.catalog import get_spec
from tasks.models.evaluation import attach_predictions, baseline_intervals, evaluate, value_intervals
from tasks.models.metrics import higher_is_better
from tasks.models.spec import (
    ChangeThreshold,
    PromotionPolicy,
    RelativeThreshold,
    SignificanceRule,
    ValueThreshold,
)
from tests.lifecycle.helpers import Evaluation, ev

NAN = float("nan")
BASE = ev(auc=0.60, log_loss=0.30)
POLICY = PromotionPolicy(
    value_thresholds=(ValueThreshold("auc", lower=0.65),),
    change_thresholds=(ChangeThreshold("auc", slack=-0.01),),
    beat_baseline=("auc",),
)


def gate(policy: PromotionPolicy = POLICY, *, champion=None, candidate=None, deltas=None, validated=True):  # type: ignore[no-untyped-def]
    return evaluate_gate(
        policy,
        candidate=candidate if candidate is not None else ev(auc=0.72, log_loss=0.2),
        champion=champion,
        baseline=BASE,
        deltas=deltas or {},
        data_validated=validated,
        model="churn",
        candidate_version=2,
        champion_version=None if champion is None else 1,
    )


def failed(report: GateReport) -> list[tuple[str, str | None, str | None]]:
    return [(c.name, c.metric, c.slice) for c in report.failed]


def test_better_candidate_passes() -> None:
    report = gate(champion=ev(auc=0.70))
    assert report.passed, report.reason
    assert "checks passed" in report.reason


@pytest.mark.parametrize(
    ("candidate", "why"),
    [
        (ev(auc=0.66), "change_threshold"),  # M1: worse than the champion beyond the slack
        (ev(auc=NAN), "is not finite"),  # M1: NaN metric never passes
        (ev(log_loss=0.2), "is missing"),  # M1: missing metric never passes
        (ev(n=0, auc=0.9), "empty evaluation set"),  # M1: empty eval set
    ],
)
def test_m1_not_promoted_with_reason(candidate, why) -> None:  # type: ignore[no-untyped-def]
    report = gate(champion=ev(auc=0.70), candidate=candidate)
    assert not report.passed
    assert why in report.reason
    assert report.failed


def test_nan_in_champion_or_baseline_fails() -> None:
    assert not gate(champion=ev(auc=NAN)).passed
    nan_base = evaluate_gate(
        PromotionPolicy(beat_baseline=("auc",)),
        candidate=ev(auc=0.8),
        champion=None,
        baseline=ev(auc=NAN),
        deltas={},
        data_validated=True,
    )
    assert not nan_base.passed and "baseline" in nan_base.reason


def test_m2_better_overall_worse_on_critical_slice() -> None:
    policy = PromotionPolicy(
        change_thresholds=(ChangeThreshold("auc", 0.0), ChangeThreshold("auc", -0.01, "region"))
    )
    champion = ev(auc=0.70, by_slice={"region": {"eu": {"auc": 0.70}, "us": {"auc": 0.71}}})
    candidate = ev(auc=0.74, by_slice={"region": {"eu": {"auc": 0.78}, "us": {"auc": 0.65}}})
    report = gate(policy, champion=champion, candidate=candidate)
    assert not report.passed
    assert failed(report) == [("change_threshold", "auc", "region=us")]
    checked = {c.slice: c.passed for c in report.checks if c.name == "change_threshold"}
    assert checked == {None: True, "region=eu": True, "region=us": False}


def test_slice_value_missing_from_champion_is_skipped_and_recorded() -> None:
    policy = PromotionPolicy(change_thresholds=(ChangeThreshold("auc", -0.01, "region"),))
    champion = ev(auc=0.70, by_slice={"region": {"eu": {"auc": 0.70}}})
    candidate = ev(auc=0.71, by_slice={"region": {"eu": {"auc": 0.70}, "apac": {"auc": 0.1}}})
    report = gate(policy, champion=champion, candidate=candidate)
    assert report.passed
    skipped = [c for c in report.checks if c.passed is None]
    assert [(c.slice, c.status) for c in skipped] == [("region=apac", "skip")]
    assert "absent from the champion" in skipped[0].detail


def test_slice_metric_nan_fails() -> None:
    policy = PromotionPolicy(change_thresholds=(ChangeThreshold("auc", -0.01, "region"),))
    champion = ev(auc=0.70, by_slice={"region": {"eu": {"auc": 0.70}}})
    candidate = ev(auc=0.71, by_slice={"region": {"eu": {"auc": NAN}}})
    assert failed(gate(policy, champion=champion, candidate=candidate)) == [
        ("change_threshold", "auc", "region=eu")
    ]


def test_first_run_skips_change_and_champion_rules_but_not_value_or_baseline() -> None:
    policy = PromotionPolicy(
        value_thresholds=(ValueThreshold("auc", lower=0.65),),
        change_thresholds=(ChangeThreshold("auc", 0.05),),
        significance=(SignificanceRule("auc", "champion"), SignificanceRule("auc", "baseline")),
        beat_baseline=("auc",),
    )
    deltas = {("auc", "baseline"): (0.05, 0.12, 0.2)}
    report = gate(policy, deltas=deltas)
    assert report.passed, report.reason
    statuses = {(c.name, c.status) for c in report.checks}
    assert ("change_threshold", "skip") in statuses
    assert ("significance_vs_champion", "skip") in statuses
    assert ("significance_vs_baseline", "pass") in statuses
    assert ("value_threshold", "pass") in statuses and ("beat_baseline", "pass") in statuses
    # ...and value thresholds and the baseline comparison still bite on a first run.
    assert failed(gate(policy, candidate=ev(auc=0.64), deltas=deltas)) == [("value_threshold", "auc", None)]
    assert failed(gate(policy, candidate=ev(auc=0.59), deltas=deltas))[1] == ("beat_baseline", "auc", None)


def test_no_thresholds_means_no_promotion() -> None:
    report = gate(PromotionPolicy(), champion=None, candidate=ev(auc=0.99))
    assert not report.passed
    assert report.reason.endswith("no thresholds configured")


@pytest.mark.parametrize(
    ("auc", "passed"), [(0.65, True), (0.80, True), (0.6499999, False), (0.8000001, False)]
)
def test_value_bounds_are_inclusive(auc: float, passed: bool) -> None:
    policy = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.65, upper=0.80),))
    assert gate(policy, candidate=ev(auc=auc)).passed is passed


def test_value_threshold_on_a_slice_value() -> None:
    policy = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.6, slice="region=eu"),))
    good = ev(auc=0.7, by_slice={"region": {"eu": {"auc": 0.6}}})
    assert gate(policy, candidate=good).passed
    assert not gate(policy, candidate=ev(auc=0.7)).passed  # the slice is missing: fail, never pass


@pytest.mark.parametrize(
    ("metric", "slack", "champion", "candidate", "passed"),
    [
        # negative slack: an allowed regression, up to and including the slack
        ("auc", -0.01, 0.71, 0.70, True),
        ("auc", -0.01, 0.71, 0.699, False),
        # positive slack: a required improvement
        ("auc", 0.02, 0.70, 0.72, True),
        ("auc", 0.02, 0.70, 0.719, False),
        # lower-is-better: the sign flips (champion − candidate >= slack)
        ("log_loss", -0.01, 0.30, 0.31, True),
        ("log_loss", -0.01, 0.30, 0.311, False),
        ("log_loss", 0.02, 0.30, 0.28, True),
        ("log_loss", 0.02, 0.30, 0.285, False),
    ],
)
def test_signed_slack_both_ways(
    metric: str, slack: float, champion: float, candidate: float, passed: bool
) -> None:
    policy = PromotionPolicy(change_thresholds=(ChangeThreshold(metric, slack),))
    report = gate(policy, champion=Evaluation({metric: champion}), candidate=Evaluation({metric: candidate}))
    assert report.passed is passed, report.reason


@pytest.mark.parametrize(
    ("metric", "ci", "passed"),
    [
        ("auc", (0.001, 0.02, 0.04), True),
        ("auc", (-0.001, 0.02, 0.04), False),  # CI crosses zero: not significant
        ("log_loss", (-0.04, -0.02, -0.001), True),  # lower is better: the upper bound must be < 0
        ("log_loss", (-0.04, -0.02, 0.001), False),
        ("auc", (NAN, 0.02, 0.04), False),
    ],
)
def test_significance_rule(metric: str, ci: tuple[float, float, float], passed: bool) -> None:
    policy = PromotionPolicy(significance=(SignificanceRule(metric, "champion"),))
    report = gate(policy, champion=ev(auc=0.7, log_loss=0.3), deltas={(metric, "champion"): ci})
    assert report.passed is passed, report.reason


def test_significance_min_delta_and_missing_ci() -> None:
    policy = PromotionPolicy(significance=(SignificanceRule("auc", "baseline", min_delta=0.01),))
    assert not gate(policy, deltas={("auc", "baseline"): (0.005, 0.02, 0.03)}).passed
    assert gate(policy, deltas={("auc", "baseline"): (0.011, 0.02, 0.03)}).passed
    assert "no bootstrap CI" in gate(policy).reason


def test_relative_threshold_against_a_named_baseline_is_judged_on_its_paired_interval() -> None:
    rep = "column:rep_score"
    policy = PromotionPolicy(relative_thresholds=(RelativeThreshold("auc", ratio=1.2, against=rep),))

    def judge(candidate_auc: float, interval: Interval | None) -> GateReport:
        return evaluate_gate(
            policy,
            candidate=ev(auc=candidate_auc),
            champion=None,
            baseline=BASE,
            extra_baselines={rep: ev(auc=0.55)},  # the bar: 1.2 × 0.55 = 0.66
            deltas={},
            data_validated=True,
            baseline_intervals={} if interval is None else {("auc", f"1.2 × {rep}"): interval},
        )

    clear = judge(0.72, Interval(0.03, 0.06, 0.09, 800))
    (check,) = [c for c in clear.checks if c.name == "relative_threshold"]
    assert clear.passed and not check.undecided and "0.66" in check.threshold
    straddling = judge(0.67, Interval(-0.02, 0.01, 0.04, 800))
    (undecided,) = [c for c in straddling.checks if c.name == "relative_threshold"]
    assert straddling.passed and undecided.undecided
    short = judge(0.62, Interval(-0.07, -0.04, -0.01, 800))
    assert not short.passed and "falls short of 1.2 × column:rep_score" in short.reason
    assert not judge(0.62, None).passed  # no interval: the point decides
    # A bar against a baseline the gate was not given fails rather than passing unchecked.
    missing = evaluate_gate(
        policy, candidate=ev(auc=0.9), champion=None, baseline=BASE, deltas={}, data_validated=True
    )
    assert not missing.passed and "no evaluation of column:rep_score" in missing.reason


def test_significance_can_name_an_extra_baseline() -> None:
    policy = PromotionPolicy(significance=(SignificanceRule("auc", "column:run_rate"),))
    assert gate(policy, deltas={("auc", "column:run_rate"): (0.01, 0.03, 0.05)}).passed
    refused = gate(policy, deltas={("auc", "baseline"): (0.01, 0.03, 0.05)})
    assert not refused.passed and "no bootstrap CI" in refused.reason


def test_a_rule_naming_an_undeclared_baseline_is_refused_when_the_spec_is_built() -> None:
    spec = get_spec("stream_recs")
    for typo in (
        PromotionPolicy(significance=(SignificanceRule("ndcg_10", "column:rep_scor"),)),
        PromotionPolicy(relative_thresholds=(RelativeThreshold("ndcg_10", 1.2, "column:rep_scor"),)),
        PromotionPolicy(relative_thresholds=(RelativeThreshold("ndcg_10", 1.2, "champion"),)),
    ):
        with pytest.raises(ValueError, match="names"):
            dataclasses.replace(spec, policy=typo)


def test_data_gate_precondition() -> None:
    report = gate(validated=False, champion=ev(auc=0.70))
    assert not report.passed and "did not pass validation" in report.reason
    lenient = PromotionPolicy(
        value_thresholds=(ValueThreshold("auc", lower=0.1),), require_validated_data=False
    )
    assert gate(lenient, validated=False).passed


def test_report_renders_and_round_trips() -> None:
    report = gate(champion=ev(auc=NAN))
    markdown = report.to_markdown()
    assert "| check | metric |" in markdown and "FAIL" in markdown and "churn" in markdown
    data = json.loads(report.to_json())  # NaN observed values become null: valid JSON
    assert GateReport.from_dict(data).to_dict() == report.to_dict()


def test_metric_directions() -> None:
    assert higher_is_better("auc") and higher_is_better("ndcg@10") and higher_is_better("hit_rate")
    assert not higher_is_better("log_loss") and not higher_is_better("pinball_0.9")
    with pytest.raises(ValueError, match="unknown metric"):
        higher_is_better("vibes")


# Value thresholds judged on the bootstrap interval (issue: gates that do not flip on noise).

ECE_POLICY = PromotionPolicy(value_thresholds=(ValueThreshold("ece", upper=0.03),))


def judged(
    interval: Interval | None, point: float = 0.0305, policy: PromotionPolicy = ECE_POLICY
) -> GateReport:
    metric = policy.value_thresholds[0].metric
    return evaluate_gate(
        policy,
        candidate=Evaluation({metric: point}),
        champion=None,
        baseline=BASE,
        deltas={},
        data_validated=True,
        model="churn",
        candidate_version=1,
        intervals={} if interval is None else {(metric, None): interval},
    )


def test_point_just_past_the_bound_inside_noise_is_undecided_not_failed() -> None:
    report = judged(Interval(0.021, 0.0305, 0.040, 4000))
    (check,) = [c for c in report.checks if c.name == "value_threshold"]
    assert report.passed, report.reason
    assert check.status == "undecided" and check.undecided
    assert (check.low, check.high) == (0.021, 0.040)
    assert "straddles" in check.detail and "needs about" in check.detail
    assert "1 undecided" in report.reason
    needed = int(check.detail.rsplit("about ", 1)[1].split()[0].replace(",", ""))
    assert needed > 4000  # a narrower interval needs more units than the holdout has


def test_whole_interval_outside_the_bound_fails() -> None:
    report = judged(Interval(0.031, 0.036, 0.041, 4000), point=0.036)
    assert not report.passed
    assert "whole interval" in report.reason


def test_whole_interval_inside_the_bound_passes_decided() -> None:
    report = judged(Interval(0.010, 0.015, 0.020, 4000), point=0.015)
    (check,) = [c for c in report.checks if c.name == "value_threshold"]
    assert report.passed and check.status == "pass" and not check.undecided


def test_no_interval_judges_the_point_and_says_so() -> None:
    report = judged(None, point=0.0305)
    assert not report.passed
    assert "judged on the point value" in report.reason
    nan_interval = judged(Interval(NAN, 0.02, NAN, 10), point=0.02)
    assert nan_interval.passed and "point value" in nan_interval.checks[-1].detail


def test_band_wider_than_the_interval_straddling_both_ends_is_undecided() -> None:
    policy = PromotionPolicy(value_thresholds=(ValueThreshold("coverage_p90", lower=0.88, upper=0.92),))
    report = judged(Interval(0.87, 0.90, 0.93, 300), point=0.90, policy=policy)
    assert report.passed and report.checks[-1].undecided
    below = judged(Interval(0.80, 0.83, 0.86, 300), point=0.83, policy=policy)
    assert not below.passed


def test_interval_fields_round_trip_through_json() -> None:
    report = judged(Interval(0.021, 0.0305, 0.040, 4000))
    again = GateReport.from_dict(json.loads(report.to_json()))
    assert again.to_dict() == report.to_dict()
    assert again.checks[-1].status == "undecided"
    assert "[0.021, 0.04]" in report.to_markdown() and "UNDECIDED" in report.to_markdown()


def _holdout(seed: int, n: int = 1500) -> tuple[np.ndarray, pd.DataFrame]:
    """A holdout drawn from one fixed population whose true AUC is near 0.70."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(float)
    score = rng.normal(0.74 * y, 1.0)  # binormal AUC = Phi(0.74 / sqrt(2)) ~ 0.70
    return y, pd.DataFrame({"prediction": 1 / (1 + np.exp(-score)), "region": rng.choice(["eu", "us"], n)})


def test_equivalent_holdouts_on_either_side_of_the_bound_get_the_same_verdict() -> None:
    """The point rule flips between two draws of the same population; the interval rule does not."""
    spec = dataclasses.replace(
        get_spec("churn"),
        policy=PromotionPolicy(
            value_thresholds=(
                ValueThreshold("auc", lower=0.70),
                ValueThreshold("auc", lower=0.6, slice="region"),
            )
        ),
    )
    points: dict[int, float] = {}
    for seed in range(40):
        y, frame = _holdout(seed)
        points[seed] = float(roc_auc_score(y, frame["prediction"]))
    above = next(s for s, v in points.items() if 0.70 < v < 0.72)
    below = next(s for s, v in points.items() if 0.68 < v < 0.70)
    verdicts = []
    for seed in (above, below):
        y, frame = _holdout(seed)
        intervals = value_intervals(spec, y, frame[["prediction"]], frame, n_boot=200, seed=0)
        assert {("auc", None), ("auc", "region=eu"), ("auc", "region=us")} <= set(intervals)
        low, point, high, units = intervals[("auc", None)]
        assert low < point < high and units == len(y)
        assert point == pytest.approx(points[seed])
        report = evaluate_gate(
            spec.policy,
            candidate=evaluate(spec, y, frame[["prediction"]], frame),
            champion=None,
            baseline=BASE,
            deltas={},
            data_validated=True,
            intervals=intervals,
        )
        overall = next(c for c in report.checks if c.slice is None and c.name == "value_threshold")
        verdicts.append((report.passed, overall.status))
        point_rule = point >= 0.70
        assert point_rule == (seed == above)  # the point alone would pass one and fail the other
    assert verdicts == [(True, "undecided"), (True, "undecided")]


def test_change_threshold_is_judged_on_the_paired_interval() -> None:
    policy = PromotionPolicy(change_thresholds=(ChangeThreshold("log_loss", slack=-0.002),))

    def change(interval: Interval) -> GateReport:
        return evaluate_gate(
            policy,
            candidate=ev(log_loss=0.2030),
            champion=ev(log_loss=0.2000),
            baseline=BASE,
            deltas={},
            data_validated=True,
            change_intervals={("log_loss", None): interval},
        )

    # candidate − champion log loss = +0.003: a 0.003 regression, past the 0.002 slack by its point
    straddling = change(Interval(-0.001, 0.003, 0.007, 5000))
    (check,) = [c for c in straddling.checks if c.name == "change_threshold"]
    assert straddling.passed and check.undecided
    assert (check.low, check.high) == (-0.007, 0.001)  # as improvement: champion − candidate
    assert not change(Interval(0.0025, 0.003, 0.0035, 5000)).passed  # surely worse than the slack
    assert not gate(champion=ev(auc=0.70), candidate=ev(auc=0.66)).passed  # no interval: the point


def test_beat_baseline_is_judged_on_the_paired_interval() -> None:
    policy = PromotionPolicy(beat_baseline=("log_loss",))

    def beat(interval: Interval | None) -> GateReport:
        intervals = {} if interval is None else {("log_loss", "baseline"): interval}
        return evaluate_gate(
            policy,
            candidate=ev(log_loss=0.3010),  # a hair worse than the baseline's 0.30 by its point
            champion=None,
            baseline=BASE,
            deltas={},
            data_validated=True,
            baseline_intervals=intervals,
        )

    # candidate − baseline log loss: +0.001 (worse); as improvement the interval flips sign.
    straddling = beat(Interval(-0.004, 0.001, 0.006, 3000))
    (check,) = [c for c in straddling.checks if c.name == "beat_baseline"]
    assert straddling.passed and check.undecided and check.status == "undecided"
    assert (check.low, check.high) == (-0.006, 0.004)
    surely_worse = beat(Interval(0.0005, 0.001, 0.0015, 3000))
    assert not surely_worse.passed and "below 0" in surely_worse.reason
    assert not beat(None).passed  # no interval: the point decides, as before


def test_baseline_intervals_separate_a_real_win_from_a_tie() -> None:
    """Paired bootstrap on a real holdout: a copy of the baseline ties it, a better model beats it."""
    spec = dataclasses.replace(get_spec("churn"), policy=PromotionPolicy(beat_baseline=("auc",)))
    y, frame = _holdout(3, n=3000)
    rng = np.random.default_rng(1)
    stored = attach_predictions(frame, frame[["prediction"]], "baseline")
    tie = frame[["prediction"]] + rng.normal(0, 1e-3, (len(frame), 1))
    better = pd.DataFrame({"prediction": 0.5 * frame["prediction"] + 0.5 * y})
    for candidate, expected in ((tie, "undecided"), (better, "pass")):
        intervals = baseline_intervals(spec, y, candidate, stored, n_boot=200, seed=0)
        low, point, high, units = intervals[("auc", "baseline")]
        assert units == len(y) and low <= point <= high
        report = evaluate_gate(
            spec.policy,
            candidate=evaluate(spec, y, candidate, frame),
            champion=None,
            baseline=evaluate(spec, y, frame[["prediction"]], frame),
            deltas={},
            data_validated=True,
            baseline_intervals=intervals,
        )
        (check,) = [c for c in report.checks if c.name == "beat_baseline"]
        assert report.passed and check.status == expected, (expected, check)
