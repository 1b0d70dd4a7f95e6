"""The forecasters' history views (traffic_history, growth_history): values against raw rows by hand,
inputs equal to the raw-panel computation, and scoring refused on stale or untrusted history."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, event

from tasks.db import write_tx
from tasks.featurestore import FEATURE_VIEWS, get_historical_features, materialize_views
from tasks.featurestore.views import GROWTH_MEASURES, HISTORY_DAYS, HISTORY_HOURS
from tasks.models.catalog.capacity_plan import LIMIT, capacity_plan, capacity_scoring_frame
from tasks.models.catalog.traffic_forecast import (
    DIRECT,
    HISTORY_LAGS,
    _panel,
    traffic_forecast,
    traffic_scoring_frame,
)
from tasks.models.catalog.user_growth import growth_scoring_frame, user_growth
from tasks.models.families.forecasting import BASE, CALENDAR_INPUTS, LEVEL_INPUTS, direct_rows
from tasks.models.scoring_frame import StaleFeatures
from tasks.models.training import build_training_set
from tests.featurestore.helpers import set_status
from tests.models.families.test_forecasting import AS_OF, DAYS, START, load_validated, platform_frames

HOUR, DAY = 3_600, 86_400
CREATED = 1_700_000_000


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    """Raw users, watch sessions and traffic of a small platform (14 days)."""
    return platform_frames()


def _load(engine: Engine, frames: dict[str, pd.DataFrame], days: int = DAYS) -> None:
    load_validated(engine, frames)
    views = [FEATURE_VIEWS["traffic_history"], FEATURE_VIEWS["growth_history"]]
    materialize_views(engine, views, created_ts=CREATED, start=START, end=START + dt.timedelta(days=days - 1))


def _read(engine: Engine, view: str, key: str, value: str, ts: int, features: list[str]) -> pd.Series:
    """One entity's features read point-in-time at ts."""
    refs = [f"{view}:{f}" for f in features]
    entity = pd.DataFrame({key: [value], "event_ts": [ts]})
    row = get_historical_features(engine, entity, refs).iloc[0]
    return pd.Series({f: row[f"{view}__{f}"] for f in features})


def test_traffic_history_at_a_point_in_time_equals_the_raw_hours(
    engine: Engine, frames: dict[str, pd.DataFrame]
) -> None:
    _load(engine, frames)
    traffic = frames["raw_traffic"]
    end = int(dt.datetime.combine(START + dt.timedelta(days=10), dt.time(7), dt.UTC).timestamp())
    names = ["history_end_ts", *(f"lag_{k}h" for k in range(1, HISTORY_HOURS + 1)), "capacity_limit"]
    # Read 40 minutes after the hour end: the row that ended at it, nothing later.
    row = _read(engine, "traffic_history", "series", "eu/viewers", end + 40 * 60, names)
    eu = traffic[traffic["region"] == "eu"]
    for k in (1, 2, 23, 24, 25, 100, 167, 168):
        hour = eu[(eu["event_ts"] >= end - k * HOUR) & (eu["event_ts"] < end - (k - 1) * HOUR)]
        assert row[f"lag_{k}h"] == pytest.approx(hour["concurrent_viewers"].mean()), k
    assert row["history_end_ts"] == end
    assert (
        row["capacity_limit"] == eu[eu["event_ts"] < end].sort_values("event_ts")["capacity_viewers"].iloc[-1]
    )
    bandwidth = _read(engine, "traffic_history", "series", "eu/bandwidth", end, ["lag_1h", "capacity_limit"])
    last_hour = eu[(eu["event_ts"] >= end - HOUR) & (eu["event_ts"] < end)]
    assert bandwidth["lag_1h"] == pytest.approx(last_hour["bandwidth_mbps"].mean())
    assert pd.isna(bandwidth["capacity_limit"])  # the limit is sized in viewers only
    # Two days in, the hours before the first simulated one are missing, not zero.
    early = START + dt.timedelta(days=2)
    early_end = int(dt.datetime.combine(early, dt.time(0), dt.UTC).timestamp())
    first = _read(engine, "traffic_history", "series", "eu/viewers", early_end, ["lag_48h", "lag_49h"])
    assert np.isfinite(first["lag_48h"]) and pd.isna(first["lag_49h"])


def test_growth_history_at_a_point_in_time_equals_the_raw_days(
    engine: Engine, frames: dict[str, pd.DataFrame]
) -> None:
    _load(engine, frames)
    users, watch = frames["raw_users"], frames["raw_watch_sessions"]
    end = int(dt.datetime.combine(START + dt.timedelta(days=9), dt.time(), dt.UTC).timestamp())
    names = [
        "history_end_ts",
        *(f"{m}_lag_{k}d" for m in GROWTH_MEASURES for k in range(1, HISTORY_DAYS + 1)),
    ]
    row = _read(engine, "growth_history", "platform", "all", end + 5 * HOUR, names)
    assert row["history_end_ts"] == end
    for k in range(1, HISTORY_DAYS + 1):
        lo, hi = end - k * DAY, end - (k - 1) * DAY
        signups = users[(users["event_ts"] >= lo) & (users["event_ts"] < hi)]
        sessions = watch[(watch["event_ts"] >= lo) & (watch["event_ts"] < hi)]
        # Before the first session DAU is missing, not zero; signups before it still count.
        dau = row[f"dau_lag_{k}d"]
        assert pd.isna(dau) if sessions.empty else dau == sessions["user_key"].nunique(), k
        if signups.empty and sessions.empty:
            assert pd.isna(row[f"new_users_lag_{k}d"]) and pd.isna(row[f"campaign_lag_{k}d"]), k
            continue
        assert row[f"new_users_lag_{k}d"] == len(signups), k
        assert row[f"campaign_lag_{k}d"] == (signups["channel"] == "campaign").sum(), k
    assert pd.isna(row[f"dau_lag_{HISTORY_DAYS}d"]) and row["dau_lag_1d"] > 0
    assert row[f"new_users_lag_{HISTORY_DAYS}d"] >= 0  # signups from before the first session


def test_traffic_inputs_from_the_store_equal_the_raw_panel_computation(
    engine: Engine, frames: dict[str, pd.DataFrame]
) -> None:
    """Training reads history rows point-in-time at each origin; the derived inputs are the old ones."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(str(args[2])))
    _load(engine, frames)
    training = build_training_set(engine, traffic_forecast, AS_OF).frame
    # Neither the history builds nor the training set read a simulator-truth (oracle_*) table.
    assert any("traffic_history" in s for s in seen)
    assert not [s for s in seen if re.search(r"\b(FROM|JOIN)\s+\"?oracle_", s, re.IGNORECASE)]
    assert set(HISTORY_LAGS) <= set(training.columns) and "last_value" not in training.columns
    derived = traffic_forecast.make_estimator(traffic_forecast.params).inputs.transform(training)
    with engine.connect() as conn:
        panel = _panel(conn, int(training["event_ts"].min()) - 200 * HOUR, int(AS_OF.timestamp()))
    reference = direct_rows(panel, np.unique(training["event_ts"]), DIRECT, labelled=True)
    both = derived.merge(reference, on=["series", "event_ts", "horizon"], suffixes=("", "_raw"))
    assert len(both) == len(training) > 1000
    for column in (*LEVEL_INPUTS, BASE, *CALENDAR_INPUTS, "snaive_24h", "snaive_168h"):
        got, want = both[column].to_numpy("float64"), both[f"{column}_raw"].to_numpy("float64")
        assert np.allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True), column


def test_scoring_refuses_a_missing_or_untrusted_history_partition(
    engine: Engine, frames: dict[str, pd.DataFrame]
) -> None:
    _load(engine, frames, days=DAYS - 3)  # the last three days' history partitions were never built
    with pytest.raises(StaleFeatures, match="more than 48 h"):
        traffic_scoring_frame(engine, traffic_forecast, AS_OF)
    # Built through the last day, the frames start where the data ends.
    views = [FEATURE_VIEWS["traffic_history"], FEATURE_VIEWS["growth_history"]]
    last = START + dt.timedelta(days=DAYS - 1)
    materialize_views(engine, views, created_ts=CREATED, start=START, end=last)
    later = AS_OF + dt.timedelta(hours=2)
    assert traffic_scoring_frame(engine, traffic_forecast, later)["step"].min() == 1
    plan = capacity_scoring_frame(engine, capacity_plan, later)
    assert len(plan) == 6 * 46 and plan[LIMIT].gt(0).all()
    assert len(growth_scoring_frame(engine, user_growth, later)) == 2 * 14
    # Raw data re-validated (a new run) after the build: the history read is no longer trusted.
    with write_tx(engine) as conn:
        set_status(conn, "raw_traffic", [last], run_id="a-later-run")
    with pytest.raises(StaleFeatures, match="since changed"):
        traffic_scoring_frame(engine, traffic_forecast, later)
    with write_tx(engine) as conn:
        set_status(conn, "raw_users", [last], status="rejected")
    with pytest.raises(StaleFeatures, match="untrusted"):
        growth_scoring_frame(engine, user_growth, later)
