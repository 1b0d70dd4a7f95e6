"""Every catalog view materialises on a small hand-made dataset, with hand-checked values."""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd
import pytest
from sqlalchemy import Engine

from tasks.db import write_tx
from tasks.featurestore import FEATURE_VIEWS, backfill, freshness, get_historical_features
from tasks.featurestore.views import CATEGORY_VOCABULARY
from tasks.schema import RAW_TABLES
from tests.featurestore.helpers import DAY, days, epoch, gift, load, set_status

D = DAY


def ago(n: int, hour: float = 0.0) -> int:
    """Epoch seconds n days before D at that hour."""
    return epoch(D - dt.timedelta(days=n), hour)


def watch(user: str, ts: int, seconds: int, streamer: str, category: str) -> dict[str, object]:
    return {
        "event_ts": ts,
        "user_key": user,
        "stream_id": "st1",
        "streamer_id": streamer,
        "category": category,
        "region": "eu",
        "device": "ios",
        "end_ts": ts + seconds,
        "duration_s": seconds,
    }


def impression(user: str, ts: int, clicked: int) -> dict[str, object]:
    return {
        "event_ts": ts,
        "user_key": user,
        "ad_id": "a1",
        "stream_id": "st1",
        "position": 1,
        "hour": 12,
        "device": "ios",
        "region": "eu",
        "clicked": clicked,
        "converted": 0,
    }


def _load_dataset(engine: Engine) -> None:
    with write_tx(engine) as conn:
        load(
            conn,
            "raw_watch_sessions",
            [
                watch("u1", ago(0, 10), 1800, "s1", "gaming"),
                watch("u1", ago(3, 9), 600, "s2", "music"),
                watch("u1", ago(20), 3600, "s1", "gaming"),
                watch("u2", ago(1, 8), 1200, "s1", "just_chatting"),
            ],
        )
        load(
            conn,
            "raw_ad_impressions",
            [impression("u1", ago(0, 12), 1), impression("u1", ago(2), 0), impression("u1", ago(10), 1)],
        )
        order = {"order_ref": "o1", "stream_id": "st1", "streamer_id": "s1", "region": "eu"}
        load(
            conn,
            "raw_orders",
            [
                {
                    **order,
                    "event_ts": ago(1, 3),
                    "user_key": "u1",
                    "product_id": "p1",
                    "quantity": 1,
                    "unit_price": 25.0,
                    "amount": 25.0,
                    "commission": 2.5,
                }
            ],
        )
        view = {"product_id": "p1", "stream_id": "st1", "streamer_id": "s1"}
        load(
            conn,
            "raw_product_views",
            [
                {**view, "event_ts": ago(1, 2), "user_key": "u1"},
                {**view, "event_ts": ago(5), "user_key": "u1"},
                {**view, "event_ts": ago(0, 1), "user_key": "u2"},
            ],
        )
        load(conn, "raw_gifts", [gift("u1", ago(0, 11), 5.0), gift("u1", ago(10), 3.0)])
        member = {"streamer_id": "s1", "plan": "basic"}
        load(
            conn,
            "raw_memberships",
            [
                {**member, "event_ts": ago(20), "user_key": "u1", "action": "subscribe", "fee": 5.0},
                {**member, "event_ts": ago(30), "user_key": "u2", "action": "subscribe", "fee": 5.0},
                {**member, "event_ts": ago(2), "user_key": "u2", "action": "cancel", "fee": 0.0},
            ],
        )
        load(
            conn,
            "raw_paid_content",
            [{"event_ts": ago(3), "user_key": "u1", "content_id": "c1", "streamer_id": "s1", "price": 9.5}],
        )
        profile = {"device": "ios", "age_band": "25-34", "channel": "organic"}
        load(
            conn,
            "raw_users",
            [
                {**profile, "event_ts": ago(100, 12), "user_key": "u1", "region": "eu"},
                {**profile, "event_ts": ago(0, 8), "user_key": "u2", "region": "na"},
            ],
        )
        load(
            conn,
            "raw_follows",
            [
                {"event_ts": ago(2), "user_key": "u1", "streamer_id": "s1"},
                {"event_ts": ago(30), "user_key": "u2", "streamer_id": "s1"},
                {"event_ts": ago(0, 7), "user_key": "u2", "streamer_id": "s2"},  # the follow log's day
            ],
        )
        stream = {
            "stream_id": "st1",
            "streamer_id": "s1",
            "category": "gaming",
            "region": "eu",
            "is_commerce": 1,
        }
        load(conn, "raw_streams", [{**stream, "event_ts": ago(0, 9), "end_ts": ago(0, 12)}])
        traffic = [(7, 5, 70.0), (1, 5, 24.0), (0, 4, 4.0), (0, 5, 90.0), (0, 5.5, 110.0)]
        load(
            conn,
            "raw_traffic",
            [
                {"event_ts": ago(n, h), "region": "eu", "concurrent_viewers": v, "bandwidth_mbps": 2 * v}
                for n, h, v in traffic
            ],
        )
        for table in RAW_TABLES:
            set_status(conn, table, days(D - dt.timedelta(days=9), 10))


def test_catalog_names_follow_the_convention() -> None:
    windowed = re.compile(r"^[a-z0-9_]+_(\d+[dh]|lag_\d+h|total)$")
    states = {"membership_active", "region", "device", "age_band", "channel", "days_since_signup"}
    states |= {"history_end_ts", "capacity_limit"}  # a history row's end; the serving limit in force
    assert len(FEATURE_VIEWS) >= 12
    assert any(v.transform is not None for v in FEATURE_VIEWS.values())
    for view in FEATURE_VIEWS.values():
        for feature in view.features:
            assert windowed.match(feature.name) or feature.name in states, feature.name
        assert view.description


def test_every_catalog_view_materialises_with_hand_checked_values(engine: Engine) -> None:
    _load_dataset(engine)
    for view in FEATURE_VIEWS.values():
        backfill(engine, view, D, D, created_ts=epoch(D, 30))
    report = {r["view"]: r for r in freshness(engine)}
    assert set(report) == set(FEATURE_VIEWS)
    assert all(r["rows"] > 0 and r["partitions_built"] == 1 for r in report.values())
    assert report["region_traffic"]["latest_feature_ts"] == epoch(D, 6)

    user_refs = [
        "user_watch:watch_minutes_1d",
        "user_watch:watch_minutes_7d",
        "user_watch:watch_minutes_28d",
        "user_watch:sessions_7d",
        "user_watch:distinct_streamers_28d",
        "user_watch:days_since_active_28d",
        "user_category_mix:gaming_share_28d",
        "user_category_mix:music_share_28d",
        "user_ads:ad_impressions_7d",
        "user_ads:ad_clicks_28d",
        "user_ads:ad_ctr_smoothed_7d",
        "user_commerce:orders_28d",
        "user_commerce:spend_28d",
        "user_commerce:product_views_28d",
        "user_gifts:gifts_count_28d",
        "user_gifts:gifts_sum_7d",
        "user_membership:membership_active",
        "user_membership:membership_fees_28d",
        "user_paid_content:paid_content_spend_28d",
        "user_profile:region",
        "user_profile:days_since_signup",
    ]
    entities = pd.DataFrame({"user_key": ["u1", "u2", "nobody"], "event_ts": [epoch(D, 30)] * 3})
    got = get_historical_features(engine, entities, user_refs)
    u1, u2, nobody = (got.iloc[i] for i in range(3))
    assert (u1["user_watch__watch_minutes_1d"], u1["user_watch__watch_minutes_7d"]) == (30.0, 40.0)
    assert u1["user_watch__watch_minutes_28d"] == 100.0
    assert (u1["user_watch__sessions_7d"], u1["user_watch__distinct_streamers_28d"]) == (2, 2)
    assert u1["user_watch__days_since_active_28d"] == pytest.approx(14 / 24)
    assert u1["user_category_mix__gaming_share_28d"] == pytest.approx(0.9)
    assert u1["user_category_mix__music_share_28d"] == pytest.approx(0.1)
    assert u2["user_category_mix__gaming_share_28d"] == 0.0
    assert (u1["user_ads__ad_impressions_7d"], u1["user_ads__ad_clicks_28d"]) == (2, 2)
    assert u1["user_ads__ad_ctr_smoothed_7d"] == pytest.approx(2 / 22)
    assert (u1["user_commerce__orders_28d"], u1["user_commerce__spend_28d"]) == (1, 25.0)
    assert u1["user_commerce__product_views_28d"] == 2
    assert (u1["user_gifts__gifts_count_28d"], u1["user_gifts__gifts_sum_7d"]) == (2, 5.0)
    assert (u1["user_membership__membership_active"], u2["user_membership__membership_active"]) == (1, 0)
    assert (u1["user_membership__membership_fees_28d"], u2["user_membership__membership_fees_28d"]) == (
        5.0,
        0.0,
    )
    assert u1["user_paid_content__paid_content_spend_28d"] == 9.5
    assert (u1["user_profile__region"], u2["user_profile__region"]) == ("eu", "na")
    assert (u1["user_profile__days_since_signup"], u2["user_profile__days_since_signup"]) == (100, 0)
    assert nobody[user_refs and [c for c in got.columns if "__" in c]].isna().all()
    assert len(CATEGORY_VOCABULARY) == len(FEATURE_VIEWS["user_category_mix"].features)

    streamers = pd.DataFrame({"streamer_id": ["s1", "s2"], "event_ts": [epoch(D, 30)] * 2})
    refs = [f"streamer_activity:{f.name}" for f in FEATURE_VIEWS["streamer_activity"].features]
    s = get_historical_features(engine, streamers, [*refs, "streamer_followers:followers_total"])
    s1 = s.iloc[0]
    assert (s1["streamer_activity__unique_viewers_7d"], s1["streamer_activity__watch_minutes_7d"]) == (
        2,
        50.0,
    )
    assert (s1["streamer_activity__gifts_sum_7d"], s1["streamer_activity__gifts_count_7d"]) == (5.0, 1)
    assert (s1["streamer_activity__followers_gained_7d"], s1["streamer_activity__live_hours_7d"]) == (1, 3.0)
    assert s1["streamer_followers__followers_total"] == 2
    assert s.iloc[1]["streamer_activity__unique_viewers_7d"] == 1

    p = get_historical_features(
        engine,
        pd.DataFrame({"product_id": ["p1"], "event_ts": [epoch(D, 30)]}),
        ["product_activity:conversion_7d"],
    )
    assert p.iloc[0]["product_activity__conversion_7d"] == pytest.approx(1 / 3)
    a = get_historical_features(
        engine, pd.DataFrame({"ad_id": ["a1"], "event_ts": [epoch(D, 30)]}), ["ad_activity:ctr_7d"]
    )
    assert a.iloc[0]["ad_activity__ctr_7d"] == 0.5

    t = get_historical_features(
        engine,
        pd.DataFrame({"region": ["eu"], "event_ts": [epoch(D, 6.5)]}),
        [f"region_traffic:{f.name}" for f in FEATURE_VIEWS["region_traffic"].features],
    ).iloc[0]
    assert t["region_traffic__concurrent_viewers_1h"] == 100.0
    assert t["region_traffic__concurrent_viewers_lag_1h"] == 4.0
    assert t["region_traffic__concurrent_viewers_lag_24h"] == 24.0
    assert t["region_traffic__concurrent_viewers_lag_168h"] == 70.0
    assert t["region_traffic__bandwidth_mbps_lag_168h"] == 140.0
