"""Label frames of churn, the purchase propensities and gift_revenue on a tiny hand-made warehouse.

Outcomes read only [T, T + horizon); context and population read only days before T; only
validated partitions are read; a snapshot whose outcome window holds an untrusted partition is
dropped. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine

from tasks.featurestore.definitions import DAY_S
from tasks.models.catalog.churn import churn_labels
from tasks.models.catalog.gift_revenue import gift_labels
from tasks.models.catalog.paid_content_propensity import paid_content_labels
from tasks.models.catalog.subscription_propensity import subscription_labels
from tasks.models.families.snapshots import user_snapshots
from tasks.models.spec import LabelWindow
from tests.featurestore.helpers import epoch, gift, load, set_status

T_DAY = dt.date(2026, 2, 3)
T = epoch(T_DAY)  # the snapshot: 2026-02-03 00:00 UTC
JUST_BEFORE, HOUR = T - 1, 3600


def _day(ts: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def _session(user: str, ts: int) -> dict[str, Any]:
    return {"event_ts": ts, "user_key": user, "stream_id": "st1", "streamer_id": "s1", "category": "music",
            "region": "eu", "device": "ios", "end_ts": ts + 600, "duration_s": 600}  # fmt: skip


def _load(engine: Engine, table: str, rows: list[dict[str, Any]], status: str = "validated") -> None:
    with engine.begin() as conn:
        load(conn, table, rows, prefix=f"{status}-")
        set_status(conn, table, sorted({_day(r["event_ts"]) for r in rows}), status)


@pytest.fixture
def warehouse(engine: Engine) -> Engine:
    """Five users, two streamers; every row sits a second away from a window edge."""
    sessions = [
        _session("E", epoch(dt.date(2026, 1, 5), 10)),  # 29 days before T: not in the population
        _session("A", epoch(dt.date(2026, 1, 20), 12)),
        _session("A", JUST_BEFORE),  # the last second before T: context, not outcome
        _session("B", epoch(dt.date(2026, 1, 28), 10)),
        _session("B", T),  # the first second of the horizon: outcome, not context
        _session("C", epoch(dt.date(2026, 1, 28), 10)),
        _session("C", T + 14 * DAY_S),  # the first second after the horizon
        _session("D", T + 2 * DAY_S),  # first seen after T: not in the population
    ]
    _load(engine, "raw_watch_sessions", sessions)
    # A session in a quarantined partition is never read: F is in no population.
    _load(engine, "raw_watch_sessions", [_session("F", epoch(dt.date(2026, 1, 30), 9))], "quarantined")
    profile = {"device": "ios", "age_band": "18-24", "channel": "organic"}
    signups = [
        {"event_ts": epoch(dt.date(2026, 1, 2)), "user_key": u, "region": r, **profile}
        for u, r in zip("ABCDEF", ["eu", "na"] * 3, strict=True)
    ]
    signups[2]["event_ts"] = epoch(dt.date(2026, 1, 28), 9)  # C is new (signed up 6 days before T)
    _load(engine, "raw_users", signups)
    member = {"streamer_id": "s1", "plan": "basic", "fee": 4.99}
    _load(engine, "raw_memberships", [
        {"event_ts": JUST_BEFORE, "user_key": "A", "action": "subscribe", **member},
        {"event_ts": T + 14 * DAY_S - 1, "user_key": "B", "action": "subscribe", **member},
        {"event_ts": T + DAY_S, "user_key": "C", "action": "renew", **member},
    ])  # fmt: skip
    content = {"content_id": "c1", "streamer_id": "s1", "price": 2.99}
    _load(engine, "raw_paid_content", [
        {"event_ts": T, "user_key": "A", **content},
        {"event_ts": JUST_BEFORE, "user_key": "C", **content},
    ])  # fmt: skip
    _load(engine, "raw_streamers", [
        {"event_ts": epoch(dt.date(2026, 1, 5)), "streamer_id": "s1", "category": "music", "region": "eu"},
        {"event_ts": T + HOUR, "streamer_id": "s2", "category": "gaming", "region": "na"},
    ])  # fmt: skip
    _load(engine, "raw_gifts", [
        gift("A", epoch(dt.date(2026, 1, 26), 12), 3.0),  # history starts 8 days before T
        gift("A", T - 7 * DAY_S - 1, 7.0),  # in the 28 days before T, not in the last 7
        gift("B", T - 7 * DAY_S, 5.0),  # the first second of the last 7 days
        gift("B", T, 11.0),  # the first second of the horizon
        gift("C", T + 7 * DAY_S - 1, 13.0),  # the last second of the horizon
        gift("C", T + 7 * DAY_S, 17.0),  # the first second after it
    ])  # fmt: skip
    return engine


def _window(horizon_days: int) -> LabelWindow:
    return LabelWindow(T, T + horizon_days * DAY_S, horizon_days * DAY_S)


def _by_user(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("user_key").sort_index()


def test_population_and_context_use_only_validated_days_before_the_snapshot(warehouse: Engine) -> None:
    with warehouse.connect() as conn:
        frame = _by_user(user_snapshots(conn, [T]))
    assert list(frame.index) == ["A", "B", "C"]
    assert frame["active_days_7d"].to_dict() == {"A": 1.0, "B": 1.0, "C": 1.0}
    assert frame["active_days_28d"].to_dict() == {"A": 2.0, "B": 1.0, "C": 1.0}
    assert frame.loc["C", "user_type"] == "new" and frame.loc["A", "user_type"] == "returning"
    assert frame.loc["C", "active_share_28d"] == pytest.approx(1 / 6)  # seen on 1 of its 6 days
    assert set(frame["event_ts"]) == {T} and frame.loc["A", "example_id"] == "A:20260203"


def test_churn_label_looks_only_at_the_next_14_days(warehouse: Engine) -> None:
    with warehouse.connect() as conn:
        frame = _by_user(churn_labels(conn, _window(14)))
    assert frame["label"].to_dict() == {"A": 1, "B": 0, "C": 1}
    assert "future_active_days" not in frame.columns and "target_ts" not in frame.columns


def test_purchase_labels_look_only_at_the_next_14_days(warehouse: Engine) -> None:
    with warehouse.connect() as conn:
        subscribed = _by_user(subscription_labels(conn, _window(14)))
        bought = _by_user(paid_content_labels(conn, _window(14)))
    assert subscribed["label"].to_dict() == {"A": 0, "B": 1, "C": 0}  # a renewal is no purchase
    assert bought["label"].to_dict() == {"A": 1, "B": 0, "C": 0}


def test_gift_revenue_label_and_baseline_split_at_the_snapshot(warehouse: Engine) -> None:
    with warehouse.connect() as conn:
        frame = gift_labels(conn, _window(7)).set_index("streamer_id")
    assert list(frame.index) == ["s1"]  # s2 is onboarded after T
    row = frame.loc["s1"]
    assert row["label"] == pytest.approx(11.0 + 13.0)
    assert row["gifts_last_7d"] == pytest.approx(5.0)
    assert row["gifts_last_28d"] == pytest.approx(3.0 + 7.0 + 5.0)
    assert row["gift_count_28d"] == 3 and row["category"] == "music"
    assert row["gifts_run_rate_7d"] == pytest.approx(7 * 15.0 / 8)  # 8 days of gift history


def test_an_untrusted_day_in_the_horizon_drops_the_snapshot(warehouse: Engine) -> None:
    with warehouse.begin() as conn:
        set_status(conn, "raw_watch_sessions", [_day(T + 2 * DAY_S)], "failed")
    with warehouse.connect() as conn:
        assert churn_labels(conn, _window(14)).empty
        assert len(user_snapshots(conn, [T])) == 3  # scoring (no horizon) is unaffected
