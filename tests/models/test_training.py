"""Training sets, time splits, deterministic training and the oracle report on a simulated warehouse."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tasks.featurestore import feature_table, get_view
from tasks.models.catalog import MODELS, UnknownModel, get_spec
from tasks.models.estimator import as_estimator
from tasks.models.evaluation import (
    baseline_predictions,
    champion_rows,
    evaluate,
    evaluation_frame,
    oracle_report,
    predict,
    stored_predictions,
)
from tasks.models.scoring_frame import StaleFeatures, build_scoring_frame
from tasks.models.training import (
    CROSS_FITTED,
    NoTrainingData,
    build_training_set,
    fit_candidate,
    forward_fold,
    time_split,
)
from tests.models.conftest import AS_OF, Warehouse


def test_catalog_names_and_unknown_model() -> None:
    assert {"ad_ctr", "ad_cvr"} <= set(MODELS)
    with pytest.raises(UnknownModel, match="declared models: ad_ctr, ad_cvr"):
        get_spec("nope")
    for spec in MODELS.values():
        assert not spec.policy.is_empty


def test_training_set_is_point_in_time(warehouse: Warehouse) -> None:
    frame = warehouse.training_set.frame
    assert warehouse.training_set.data_validated
    assert warehouse.training_set.validation_run_ids
    assert frame["example_id"].is_unique
    # Planted checks: a row from after the event (must never be seen); a row describing a
    # moment before it, as a backfill writes it (known at its feature_ts: used, as scoring
    # would use it too); and a later version of that row, rebuilt for late rows an hour after
    # the event (D6: not known at the event, never used for it).
    table = feature_table(get_view("user_ads"))
    with_history = frame[frame["user_ads__ad_clicks_28d"].notna()]
    example = with_history.iloc[len(with_history) // 2]
    base = {"user_key": example["user_key"], "partition_date": dt.date(2030, 1, 1)}
    before = int(example["event_ts"]) - 1
    planted = [
        {**base, "feature_ts": int(example["event_ts"]) + 1, "created_ts": 0, "ad_clicks_28d": 999_999},
        {**base, "feature_ts": before, "created_ts": before, "ad_clicks_28d": 888_888},
        {**base, "feature_ts": before, "created_ts": before + 3601, "ad_clicks_28d": 777_777},
    ]
    with warehouse.engine.begin() as conn:
        conn.execute(table.insert(), planted)
    try:
        again = build_training_set(warehouse.engine, get_spec("ad_ctr"), AS_OF)
        values = again.frame["user_ads__ad_clicks_28d"]
        row = again.frame.set_index("example_id").loc[example["example_id"]]
        assert row["user_ads__ad_clicks_28d"] == 888_888
        assert (values == 777_777).sum() == 0  # later events of the day read the 999_999 row
        assert (values == 999_999).sum() == (
            (again.frame.user_key == example["user_key"])
            & (again.frame.event_ts > example["event_ts"])
            & (again.frame.event_ts < (int(example["event_ts"]) // 86_400 + 1) * 86_400)
        ).sum()  # visible only to the user's later events of that day, as point-in-time allows
    finally:
        with warehouse.engine.begin() as conn:
            conn.execute(table.delete().where(table.c.partition_date == dt.date(2030, 1, 1)))


def test_no_examples_is_a_clear_error(warehouse: Warehouse) -> None:
    with pytest.raises(NoTrainingData, match="no labelled examples"):
        build_training_set(warehouse.engine, get_spec("ad_ctr"), dt.datetime(2020, 1, 1, tzinfo=dt.UTC))


def test_time_split_is_ordered(warehouse: Warehouse) -> None:
    train, valid, holdout = time_split(warehouse.training_set.frame, (0.7, 0.15, 0.15))
    assert train.event_ts.max() < valid.event_ts.min()
    assert valid.event_ts.max() < holdout.event_ts.min()
    assert len(train) + len(valid) + len(holdout) == len(warehouse.training_set.frame)
    assert abs(len(train) / len(warehouse.training_set.frame) - 0.7) < 0.02


def test_training_is_deterministic(warehouse: Warehouse) -> None:
    spec = get_spec("ad_ctr")
    again = fit_candidate(spec, warehouse.training_set)
    first = warehouse.trained
    assert again.training_fingerprint == first.training_fingerprint
    assert again.params == first.params
    np.testing.assert_array_equal(
        predict(spec, again.pipeline, first.holdout), predict(spec, first.pipeline, first.holdout)
    )
    other = fit_candidate(
        dataclasses.replace(spec, params={**spec.params, "max_depth": 3}), warehouse.training_set
    )
    assert other.training_fingerprint != first.training_fingerprint


def test_forward_fold_keeps_the_split_proportions_and_purges() -> None:
    frame = pd.DataFrame({"event_ts": np.arange(85), "target_ts": np.arange(85) + 3})
    early_train, early_valid = forward_fold(frame, (0.7, 0.15, 0.15))
    # The cut: the (lower) 0.7 / (0.7 + 0.15) quantile of event time, 69 of 0..84.
    assert early_valid["event_ts"].min() == 69 and len(early_valid) == 16
    assert early_train["target_ts"].max() < 69  # outcomes reaching the earlier validation: purged
    assert len(early_train) == 66


def test_forward_cross_fit_judges_the_validation_rows_with_an_earlier_fit(warehouse: Warehouse) -> None:
    spec = dataclasses.replace(get_spec("ad_ctr"), forward_cross_fit=True)
    trained = fit_candidate(spec, warehouse.training_set)
    plain = warehouse.trained
    crossed = trained.holdout[CROSS_FITTED].to_numpy(bool)
    assert trained.params["n_cross_fitted"] == crossed.sum() == len(plain.valid)
    assert set(trained.holdout.loc[crossed, "example_id"]) == set(plain.valid["example_id"])
    # The registered model is the plain fit; the mirror never saw the rows it judges.
    np.testing.assert_array_equal(
        predict(spec, trained.pipeline, plain.holdout), predict(spec, plain.pipeline, plain.holdout)
    )
    early_train, early_valid = forward_fold(plain.train, spec.split)
    assert early_valid["event_ts"].max() < plain.valid["event_ts"].min()
    columns = spec.input_columns
    earlier = spec.make_estimator({**spec.params, "seed": spec.seed})
    as_estimator(earlier, spec.kind).fit(
        early_train[columns], early_train["label"], eval_set=[(early_valid[columns], early_valid["label"])]
    )
    np.testing.assert_array_equal(  # the mirror is exactly the recipe fitted on the earlier fold
        predict(spec, trained.mirror, plain.valid), predict(spec, earlier, plain.valid)
    )
    frame = evaluation_frame(spec, trained.pipeline, trained.train, trained.holdout, trained.mirror)
    candidate = stored_predictions(frame, "candidate")["prediction"].to_numpy("float64")
    mirror_view = predict(spec, trained.mirror, trained.holdout[crossed])
    np.testing.assert_allclose(candidate[crossed], mirror_view)
    assert not np.allclose(mirror_view, predict(spec, trained.pipeline, trained.holdout[crossed]))
    assert champion_rows(frame).sum() == len(plain.holdout)  # a champion is judged on its own rows


def test_model_beats_base_rate_and_oracle_floor(warehouse: Warehouse) -> None:
    spec = get_spec("ad_ctr")
    trained = warehouse.trained
    pred = predict(spec, trained.pipeline, trained.holdout)
    model = evaluate(spec, trained.holdout["label"], pred, trained.holdout)
    base = evaluate(
        spec,
        trained.holdout["label"],
        baseline_predictions(spec, trained.train, trained.holdout),
        trained.holdout,
    )
    assert model.metrics["log_loss"] < base.metrics["log_loss"]
    assert set(model.by_slice) == {"region", "device", "user_type"}
    report = oracle_report(warehouse.engine, spec, trained.holdout, pred)
    print("oracle report (small warehouse):", {k: round(v, 4) for k, v in report.items()})
    assert report["coverage"] == 1.0
    assert report["auc_ratio"] > 0.8


def test_oracle_report_is_empty_without_oracle_rows(warehouse: Warehouse) -> None:
    holdout = warehouse.trained.holdout.assign(example_id="real-" + warehouse.trained.holdout["example_id"])
    assert oracle_report(warehouse.engine, get_spec("ad_ctr"), holdout, np.zeros(len(holdout))) == {}


def test_scoring_frame_covers_users_with_reference_context(warehouse: Warehouse) -> None:
    spec = get_spec("ad_ctr")
    frame = build_scoring_frame(warehouse.engine, spec, AS_OF)
    assert list(frame.columns) == ["user_key", *spec.input_columns]
    # users=400 is a base of 160 plus about 28 days of signups; 14 days in, some 280 users exist.
    assert frame["user_key"].is_unique and len(frame) > 250
    assert set(frame["position"]) == {1} and set(frame["hour"]) == {20}
    assert frame["ad_activity__ctr_7d"].isna().all()  # the reference ad has no delivery history
    assert frame["device"].notna().all()
    scores = predict(spec, warehouse.trained.pipeline, frame)
    assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
    with pytest.raises(StaleFeatures, match=r"user_ads.*TTL of 86400"):
        build_scoring_frame(warehouse.engine, spec, AS_OF + dt.timedelta(days=3))
