"""Ranking models on platforms where nothing changed: entity inputs are profiled over distinct
entities, and what that does and does not fix (test plan O2's unshifted control, for recommenders).

A ranking frame has one row per (user, candidate). product_recs' candidates differ per user, so per
row a product that is a candidate of many users weighs more than one of few: over distinct products
the false drift of ``shelf_share`` between two scoring frames two days apart goes (PSI 0.32 → 0.08).

stream_recs' scoring frame crosses every active user with every live streamer, so every streamer
weighs the same per row and per streamer: the distances are the same either way. But a moment has
about 30 live streamers, and PSI over ten bins of 30 values is noise: two samples of 30 from one
distribution give a median PSI of 1.35 (of 100: 0.26; of 300: 0.08). Drift verdicts hold a binned
distance to the chi-square test of the same bins' counts (tasks/monitoring/drift.py, "Size and
significance"): over 30 distinct streamers the streamer inputs' PSI of up to 1.26 is within
sampling noise (p 0.35-0.85), while per row, each streamer counted once per user, the same
distances look significant and drift.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tasks.lifecycle import monitoring_reference, predict_chunks, scoring_frame
from tasks.models.catalog import stream_recs as sr
from tasks.models.training import build_training_set, fit_candidate
from tasks.monitoring.drift import DRIFT, OK, DriftReport, compare_frame
from tasks.monitoring.profile import profile_frame
from tasks.monitoring.reference import input_keys, profile_pair
from tasks.settings import get_settings
from tests.models.catalog.test_product_recs import AS_OF as PRODUCT_AS_OF
from tests.models.catalog.test_product_recs import landed, platform, pr  # noqa: F401 (fixtures)
from tests.models.catalog.test_stream_recs import land_platform
from tests.models.warehouse import START, fresh_warehouse

DAYS = 9
SCORED_AT = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
TRAINED_AT = SCORED_AT - dt.timedelta(days=2)
SMALL = {"max_depth": 3, "learning_rate": 0.2, "n_estimators": 60}  # the spec's shape, fewer trees


def _psi(report: DriftReport, columns: set[str]) -> dict[str, float]:
    rows = report.results
    return {r.feature: float(r.value or 0.0) for r in rows if r.feature in columns and r.statistic == "psi"}


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DriftReport]]:
    """300 users, 250 streamers (about 30 live at a time), 9 days, unshifted; stream_recs trained at
    day 7 with its reference taken as training takes it, and the frame of day 9 compared with that
    reference's serving pair (per entity, as monitoring now does) and per row (as it did)."""
    with (
        fresh_warehouse("sqlite", tmp_path_factory.mktemp("ranking-drift")) as backend,
        pytest.MonkeyPatch.context() as patch,
    ):
        for key, value in backend.env.items():
            patch.setenv(key, value)
        land_platform(get_settings(), backend.engine, days=DAYS, end=SCORED_AT.date())
        yield _stream_reports(backend.engine)


def _stream_reports(engine: Engine) -> dict[str, DriftReport]:
    spec = dataclasses.replace(sr.stream_recs, params=SMALL)
    training_set = build_training_set(engine, spec, TRAINED_AT)
    trained = fit_candidate(spec, training_set)
    evaluation = predict_chunks(spec, trained.pipeline, trained.holdout)
    reference = monitoring_reference(engine, spec, TRAINED_AT, training_set.frame, trained, evaluation)
    assert reference.serving is not None, reference.serving_note
    pair = reference.serving
    streamer_side = {c for c, k in input_keys(spec).items() if k == "streamer_id"}
    assert {c: pair.keys[c] for c in streamer_side} == dict.fromkeys(streamer_side, "streamer_id")
    assert reference.training.keys == pair.keys  # the training frame has the keys too

    current = scoring_frame(engine, spec, SCORED_AT)
    assert current["streamer_id"].nunique() < len(current) / 10  # each live streamer on many rows
    then = scoring_frame(engine, spec, TRAINED_AT)
    per_row = profile_pair(
        then, predict_chunks(spec, trained.pipeline, then)["prediction"], spec.input_columns, ()
    )
    return {
        "per_entity": compare_frame(pair.inputs, current, spec.drift, keys=pair.keys),
        "per_row": compare_frame(per_row.inputs, current, spec.drift),
    }


STREAMER_SIDE = {"streamer_activity__live_hours_7d", *sr.STREAMER_INPUTS}


def test_stream_recs_streamer_inputs_weigh_the_same_per_row_and_per_streamer(
    streams: dict[str, DriftReport],
) -> None:
    """Every live streamer is a candidate of every user: the same PSI either way (see the notes)."""
    before, after = _psi(streams["per_row"], STREAMER_SIDE), _psi(streams["per_entity"], STREAMER_SIDE)
    print(f"\nstream_recs streamer-side PSI, per row {before}\nper streamer {after}")
    assert after == pytest.approx(before)


def test_stream_recs_streamer_inputs_do_not_drift_on_an_unchanged_platform(
    streams: dict[str, DriftReport],
) -> None:
    """O2's control: between the serving reference and a later frame no streamer input drifts over
    distinct streamers; per row, the same distances over users × streamers rows are called drift."""
    report, per_row = streams["per_entity"], streams["per_row"]
    assert not {c for c in STREAMER_SIDE if report.features[c] == DRIFT}, _psi(report, STREAMER_SIDE)
    assert {c for c in STREAMER_SIDE if per_row.features[c] == DRIFT}, _psi(per_row, STREAMER_SIDE)
    noisy = [r for r in report.results if r.feature in STREAMER_SIDE and r.statistic == "psi" and r.value]
    assert any(r.value >= 0.25 and "within sampling noise" in r.detail for r in noisy if r.value), noisy


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_product_recs_shelf_share_drifts_per_row_not_per_product(platform: object) -> None:  # noqa: F811
    """product_recs' scoring frames two days apart on an unshifted platform: a product's share of
    its shelf, per row, drifts (products that are candidates of many users weigh more); over
    distinct products it does not, and no product input drifts that did not per row."""
    engine: Engine = platform.engine  # type: ignore[attr-defined]
    spec = pr.product_recs
    keys = input_keys(spec)
    product_side = {c for c, k in keys.items() if k == "product_id"}
    then = scoring_frame(engine, spec, PRODUCT_AS_OF - dt.timedelta(days=2))
    current = scoring_frame(engine, spec, PRODUCT_AS_OF)
    assert then["product_id"].nunique() < len(then) / 10
    columns = spec.input_columns
    per_row = compare_frame(profile_frame(then, columns), current)
    per_product = compare_frame(profile_frame(then, columns, keys=keys), current, keys=keys)
    before, after = _psi(per_row, product_side), _psi(per_product, product_side)
    print(f"\nproduct_recs product-side PSI, per row {before}\nper product {after}")
    assert per_row.features["shelf_share"] == DRIFT and per_product.features["shelf_share"] == OK
    assert {c for c in product_side if per_product.features[c] == DRIFT} <= {
        c for c in product_side if per_row.features[c] == DRIFT
    }
