"""churn, subscription_propensity, paid_content_propensity and gift_revenue: specs, oracles, gates, plots.

Pure tests (no database): the DB-touching label tests live in test_user_outcome_labels.py and the
flows end to end in test_user_outcome_flows.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.featurestore.definitions import DAY_S, parse_ref
from tasks.featurestore.views import FEATURE_VIEWS as VIEWS
from tasks.gates import evaluate_gate
from tasks.models.catalog import MODELS as SPECS
from tasks.models.catalog import get_spec
from tasks.models.catalog.gift_revenue import make_tweedie_pipeline
from tasks.models.evaluation import baseline_frame, bootstrap_delta, evaluate
from tasks.models.families.snapshots import EVAL_SHARE, entity_fold, entity_split, snapshot_times
from tasks.models.families.user_truth import p_any_event, p_inactive
from tasks.models.metrics import higher_is_better
from tasks.models.plots import outcome_classifier_plots, revenue_plots
from tasks.models.spec import LabelWindow, ModelSpec
from tasks.models.training import SPLIT_COLUMN, cross_rows, split_examples

CLASSIFIERS = ("churn", "subscription_propensity", "paid_content_propensity")
MODELS = (*CLASSIFIERS, "gift_revenue")
RESERVED = ("prediction", "pred__", "baseline__")
T0 = 1_768_435_200  # 2026-01-15 00:00 UTC, a Thursday


@pytest.mark.parametrize("name", MODELS)
def test_spec_is_registered_and_complete(name: str) -> None:
    spec = get_spec(name)
    assert SPECS[name] is spec
    for ref in spec.feature_refs:
        parse_ref(ref, VIEWS)  # every feature exists in the feature-store catalog
    assert not {c for c in spec.input_columns if c.startswith(RESERVED)}
    policy = spec.policy
    assert policy.value_thresholds and policy.beat_baseline and policy.significance
    assert policy.change_thresholds and policy.require_validated_data
    checked = {t.metric for t in policy.value_thresholds} | set(policy.beat_baseline)
    assert checked <= set(spec.metrics)
    compared = {*policy.beat_baseline, *(c.metric for c in policy.change_thresholds)}
    for metric in compared | {r.metric for r in policy.significance}:
        higher_is_better(metric)  # every metric compared has a declared direction
    assert spec.horizon_days in (7, 14)
    assert spec.oracle is not None or spec.kind == "regression"  # the simulator has no true revenue
    assert spec.build_scoring_frame is not None and spec.plots is not None


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifiers_share_the_user_population_and_gate(name: str) -> None:
    spec = get_spec(name)
    assert spec.kind == "binary" and str(spec.baseline) == "base_rate" and spec.horizon_days == 14
    assert spec.scoring.entity == "user" and spec.scoring.score_range == (0.0, 1.0)
    assert {"auc", "pr_auc", "lift_top_decile", "ece", "log_loss"} <= set(spec.metrics)
    assert "log_loss" in spec.policy.beat_baseline
    assert {t.metric for t in spec.policy.value_thresholds} >= {"auc", "ece"}


def test_gift_revenue_is_a_tweedie_regression_against_last_week() -> None:
    spec = get_spec("gift_revenue")
    assert spec.kind == "regression" and spec.horizon_days == 7
    assert str(spec.baseline) == "column:gifts_last_7d" and spec.extra_baselines
    assert spec.scoring.entity == "streamer" and spec.scoring.score_range[0] == 0.0
    assert "tweedie_deviance" in spec.policy.beat_baseline
    # Significance against the run rate: last week's gifts are a degenerate bar (see the spec).
    assert [r.against for r in spec.policy.significance] == ["column:gifts_run_rate_7d"]
    booster = make_tweedie_pipeline(spec.params).steps[-1][1]
    assert booster.get_params()["objective"] == "reg:tweedie"


def test_snapshot_times_are_midnights_whose_horizon_is_complete() -> None:
    window = LabelWindow(T0 - 3 * DAY_S + 5, T0 + 14 * DAY_S, 14 * DAY_S)
    assert snapshot_times(window) == [T0 - 2 * DAY_S, T0 - DAY_S, T0]
    assert snapshot_times(LabelWindow(T0, T0 + 14 * DAY_S - 1, 14 * DAY_S)) == []


def test_truth_probabilities_follow_the_simulator() -> None:
    ts = np.full(4, T0)
    activity = np.array([0.5, 0.5, 0.1, 0.9])
    hazard = np.array([0.01, 0.01, 0.05, 0.001])
    churned = np.array([True, False, False, False])
    silent = p_inactive(activity, hazard, churned, ts, 14)
    assert silent[0] == 1.0 and np.all((silent > 0) & (silent <= 1))
    assert silent[2] > silent[1] > silent[3]  # less active, more hazard: likelier silent
    assert p_inactive(np.ones(1), np.zeros(1), np.zeros(1, bool), ts[:1], 14)[0] == 0.0
    buy = p_any_event(activity, hazard, churned, ts, 14, np.full(4, 0.02))
    assert buy[0] == 0.0 and buy[3] > buy[1] > buy[2] > 0
    assert p_any_event(activity, hazard, churned, ts, 14, np.zeros(4)).max() == 0.0


def _snapshots(n_users: int = 60, days: int = 10) -> pd.DataFrame:
    keys = [f"u{i:03d}" for i in range(n_users)]
    rows = [(k, T0 + d * DAY_S) for d in range(days) for k in keys]
    frame = pd.DataFrame(rows, columns=["user_key", "event_ts"])
    frame["example_id"] = frame["user_key"] + ":" + frame["event_ts"].astype(str)
    frame["label"] = np.arange(len(frame)) % 3 == 0
    return frame


def test_entities_of_the_training_split_never_reach_the_holdout() -> None:
    frame = _snapshots()
    kept = entity_split(frame, "user_key", 0.6)
    train, valid, holdout = split_examples(kept, (0.6, 0.15, 0.25))
    assert not set(train["user_key"]) & (set(valid["user_key"]) | set(holdout["user_key"]))
    assert holdout["event_ts"].min() > train["event_ts"].max()  # judged after every fitted row
    assert valid["event_ts"].max() < holdout["event_ts"].min()
    # Every evaluation user's snapshot from the boundary on is judged.
    evaluation = frame[entity_fold(frame["user_key"]) < EVAL_SHARE]
    late = evaluation[evaluation["event_ts"] >= holdout["event_ts"].min()]
    assert len(holdout) == len(late) > 0
    assert SPLIT_COLUMN not in holdout.columns
    # Cross-fitting: the training users' snapshots from the boundary on are the mirror model's
    # holdout; it fits on the validation users, so it never judges a user it was fitted on.
    cross = cross_rows(kept)
    assert len(cross) > 0 and not set(cross["user_key"]) & set(valid["user_key"])
    assert set(cross["user_key"]) <= set(train["user_key"]) | set(cross["user_key"])
    assert cross["event_ts"].min() > valid["event_ts"].max()
    assert len(train) + len(valid) + len(holdout) + len(cross) == len(frame)
    # Stable: the same users are held out on every run, whatever the row order.
    again = entity_split(frame.sample(frac=1.0, random_state=1), "user_key", 0.6)
    assert set(again["example_id"]) == set(kept["example_id"])
    assert np.array_equal(entity_fold(pd.Series(["a", "b"])), entity_fold(pd.Series(["a", "b"])))


def test_too_few_snapshot_days_leave_the_frame_unchanged() -> None:
    frame = _snapshots(days=1)
    assert entity_split(frame, "user_key", 0.6).equals(frame)


def _holdout(spec: ModelSpec, n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "region": rng.choice(["eu", "na", "sea"], n),
            "user_type": rng.choice(["new", "returning"], n),
            "category": rng.choice(["gaming", "music"], n),
        }
    )
    if spec.kind == "binary":
        frame["truth"] = rng.beta(0.5, 6.0, n)
        frame["label"] = (rng.random(n) < frame["truth"]).astype("int64")
    else:
        frame["truth"] = rng.gamma(0.5, 100.0, n) + 0.1
        # Naive baselines see noisy past weeks of the same expected revenue.
        frame["gifts_last_7d"] = rng.poisson(frame["truth"]).astype("float64")
        frame["gifts_run_rate_7d"] = np.maximum(rng.poisson(4 * frame["truth"]) / 4, 1.0)
        frame["label"] = rng.poisson(frame["truth"]).astype("float64")
    return frame


def _gate(spec: ModelSpec, frame: pd.DataFrame, candidate: np.ndarray) -> list[str]:
    """The failing checks of the spec's policy for a candidate on a first run (the gate's own steps)."""
    y = frame["label"].to_numpy("float64")
    train = frame.sample(frac=0.5, random_state=0)
    baselines = {
        name: evaluate(spec, y, baseline_frame(spec, name, train, frame), frame)
        for name in (spec.baseline, *spec.extra_baselines)
    }
    pred = pd.DataFrame({"prediction": candidate})
    named = {"baseline": spec.baseline, **{str(b): b for b in spec.extra_baselines}}
    deltas = {
        (rule.metric, rule.against): bootstrap_delta(
            spec,
            rule.metric,
            y,
            pred,
            baseline_frame(spec, named[rule.against], train, frame),
            rows=frame,
            seed=1,
        )
        for rule in spec.policy.significance
    }
    report = evaluate_gate(
        spec.policy,
        candidate=evaluate(spec, y, pred, frame),
        champion=None,
        baseline=baselines[spec.baseline],
        extra_baselines={k: v for k, v in baselines.items() if k != spec.baseline},
        deltas=deltas,
        data_validated=True,
        model=spec.name,
        candidate_version=1,
    )
    return [f"{c.name}:{c.metric}" for c in report.failed]


@pytest.mark.parametrize("name", MODELS)
def test_a_model_no_better_than_its_baseline_is_not_promoted(name: str) -> None:
    spec = get_spec(name)
    frame = _holdout(spec)
    if spec.kind == "binary":
        naive = np.full(len(frame), float(frame["label"].mean()))  # the base rate itself
    else:
        naive = frame["gifts_last_7d"].to_numpy("float64")  # last week's revenue itself
    failed = _gate(spec, frame, naive)
    assert any(f.startswith("beat_baseline") for f in failed)
    assert any(f.startswith("significance") for f in failed)


@pytest.mark.parametrize("name", MODELS)
def test_the_truth_itself_would_be_promoted(name: str) -> None:
    spec = get_spec(name)
    frame = _holdout(spec)
    assert _gate(spec, frame, frame["truth"].to_numpy("float64")) == []


def test_plots_are_written_from_the_stored_evaluation_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype("float64")
    frame = pd.DataFrame({"label": y, "prediction": 0.05 + 0.2 * y * rng.random(500)})
    frame["baseline_prediction"] = y.mean()
    files = outcome_classifier_plots(frame, tmp_path / "cls")
    assert {f.name for f in files} >= {"lift.png", "calibration.png"}
    revenue = pd.DataFrame({"label": rng.gamma(0.5, 50, 300), "prediction": rng.gamma(1.0, 30, 300)})
    revenue["baseline_prediction"] = revenue["label"].shift(1, fill_value=0.0)
    files += revenue_plots(revenue, tmp_path / "rev")
    assert {f.name for f in files} >= {"predicted_vs_actual.png"}
    assert all(f.stat().st_size > 1000 for f in files)
