"""Tests of the platform simulator: contract with the schema, determinism and behaviour."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from tasks.schema import ORACLE_TABLES, RAW_TABLES, identity_users
from tasks.simulate import SimConfig, simulate_platform
from tasks.simulate.config import campaign_windows
from tasks.vocabulary import (
    AGE_BANDS,
    CATEGORIES,
    DEVICES,
    ORGANIC_CHANNELS,
    PRODUCT_CATEGORIES,
    REGION_UTC_OFFSET,
    REGIONS,
)

DAY_S = 86_400


class MemorySink:
    """Keeps every write, in order, per table."""

    def __init__(self) -> None:
        self.writes: dict[str, list[pd.DataFrame]] = defaultdict(list)

    def write(self, table: str, frame: pd.DataFrame) -> None:
        self.writes[table].append(frame.copy())

    def table(self, name: str) -> pd.DataFrame:
        frames = self.writes.get(name, [])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _run(config: SimConfig) -> tuple[MemorySink, dict[str, int], list[tuple[str, int, int]]]:
    sink = MemorySink()
    calls: list[tuple[str, int, int]] = []
    rows = simulate_platform(config, sink, lambda *a: calls.append(a))
    return sink, rows, calls


@pytest.fixture(scope="module")
def run() -> tuple[MemorySink, dict[str, int], list[tuple[str, int, int]]]:
    # Several user chunks, so the chunked path is what the tests see.
    return _run(SimConfig(chunk_users=700))


@pytest.fixture(scope="module")
def sink(run: tuple[MemorySink, dict[str, int], list[tuple[str, int, int]]]) -> MemorySink:
    return run[0]


def _digest(sink: MemorySink) -> dict[str, str]:
    out = {}
    for name in sink.writes:
        frame = sink.table(name)
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        out[name] = hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()
    return out


def test_same_seed_same_frames_and_other_seed_differs() -> None:
    small = SimConfig(users=400, streamers=30, days=7, chunk_users=150)
    first, second = _digest(_run(small)[0]), _digest(_run(small)[0])
    assert first == second
    other = _digest(_run(SimConfig(users=400, streamers=30, days=7, chunk_users=150, seed=8))[0])
    assert set(other) == set(first)
    assert other["raw_watch_sessions"] != first["raw_watch_sessions"]
    assert other["raw_users"] != first["raw_users"]


def test_every_table_written_with_schema_columns(sink: MemorySink) -> None:
    for name, table in RAW_TABLES.items():
        assert sink.writes[name], f"{name} never written"
        expected = [c.name for c in table.columns if c.name != "event_date"]
        for frame in sink.writes[name]:
            assert list(frame.columns) == expected, name
    for name, table in ORACLE_TABLES.items():
        expected = [c.name for c in table.columns]
        for frame in sink.writes.get(name, []):
            assert list(frame.columns) == expected, name
    assert list(sink.table("identity_users").columns) == [c.name for c in identity_users.columns]


def test_row_counts_and_progress(run: tuple[MemorySink, dict[str, int], list[tuple[str, int, int]]]) -> None:
    sink, rows, calls = run
    assert rows == {name: sum(len(f) for f in frames) for name, frames in sink.writes.items()}
    days = [c for c in calls if c[0] == "simulate"]
    assert [c[1] for c in days] == list(range(1, 29)) and all(c[2] == 28 for c in days)


def test_event_ids_unique(sink: MemorySink) -> None:
    for name in [*RAW_TABLES, "oracle_ad_impressions"]:
        ids = sink.table(name)["event_id"]
        assert ids.is_unique, name
        assert ids.notna().all(), name
    assert sink.table("identity_users")["user_key"].is_unique


def test_each_write_holds_one_day(sink: MemorySink) -> None:
    for name in RAW_TABLES:
        for frame in sink.writes[name]:
            assert frame["event_ts"].dtype == np.int64, name
            assert (frame["event_ts"] // DAY_S).nunique() == 1, name
    for frame in sink.writes["oracle_ad_impressions"]:
        assert frame["event_date"].nunique() == 1
        assert type(frame["event_date"].iloc[0]) is datetime.date


def test_sessions_lie_inside_live_streams(sink: MemorySink) -> None:
    streams = sink.table("raw_streams")
    sessions = sink.table("raw_watch_sessions")
    joined = sessions.merge(
        streams[["stream_id", "streamer_id", "event_ts", "end_ts"]],
        on="stream_id",
        how="left",
        suffixes=("", "_stream"),
        validate="many_to_one",
    )
    assert joined["event_ts_stream"].notna().all()
    assert (joined["event_ts"] >= joined["event_ts_stream"]).all()
    assert (joined["end_ts"] <= joined["end_ts_stream"]).all()
    assert (joined["streamer_id"] == joined["streamer_id_stream"]).all()
    assert (joined["duration_s"] == joined["end_ts"] - joined["event_ts"]).all()
    assert (joined["duration_s"] > 0).all()
    # Streams follow the oracle schedule: live only from their start hour.
    oracle = sink.table("oracle_streamers").set_index("streamer_id")
    start_hour = (streams["event_ts"] % DAY_S) // 3600
    assert (start_hour == streams["streamer_id"].map(oracle["start_hour"])).all()


def test_ad_outcomes_and_delivery(sink: MemorySink) -> None:
    imp = sink.table("raw_ad_impressions")
    assert imp["clicked"].isin([0, 1]).all() and imp["converted"].isin([0, 1]).all()
    assert (imp["converted"] <= imp["clicked"]).all()
    assert imp["position"].between(1, 5).all()
    delivery = sink.table("raw_ad_delivery")
    assert (delivery["clicks"] <= delivery["impressions"]).all()
    assert (delivery["conversions"] <= delivery["clicks"]).all()
    assert delivery["ctr"].between(0, 1).all()
    assert delivery["impressions"].sum() == len(imp)
    assert delivery["clicks"].sum() == imp["clicked"].sum()
    ad_revenue = sink.table("raw_revenue").query("source == 'ad'")["amount"].sum()
    assert ad_revenue == pytest.approx(delivery["spend"].sum(), rel=1e-3)


def test_signups_spike_in_campaign_windows(sink: MemorySink) -> None:
    config = SimConfig()
    users = sink.table("raw_users")
    day = (users["event_ts"] - config.start_epoch) // DAY_S
    per_day = day[day >= 0].value_counts().reindex(range(config.days), fill_value=0)
    in_campaign = np.zeros(config.days, dtype=bool)
    for first, last in campaign_windows(config):
        in_campaign[first : last + 1] = True
    assert 2 <= len(campaign_windows(config)) <= 3
    assert per_day[in_campaign].mean() > 1.5 * per_day[~in_campaign].mean()
    assert (users.loc[day >= 0, "channel"] == "campaign").any()


def test_evening_busier_than_early_morning(sink: MemorySink) -> None:
    traffic = sink.table("raw_traffic")
    local = (traffic["event_ts"] // 3600 + traffic["region"].map(REGION_UTC_OFFSET)) % 24
    evening = traffic.loc[local.between(19, 22), "concurrent_viewers"].mean()
    early = traffic.loc[local.between(4, 6), "concurrent_viewers"].mean()
    assert evening > 2 * early


def test_traffic_grid_and_capacity(sink: MemorySink) -> None:
    config = SimConfig()
    traffic = sink.table("raw_traffic")
    assert len(traffic) == config.days * 24 * len(REGIONS)
    assert set(traffic["region"]) == set(REGIONS)
    assert (traffic["concurrent_viewers"] >= 0).all()
    bitrate = traffic["bandwidth_mbps"].sum() / traffic["concurrent_viewers"].sum()
    assert 2.5 <= bitrate <= 4.0
    typical_peak = (
        traffic.assign(day=traffic["event_ts"] // DAY_S)
        .groupby(["region", "day"])["concurrent_viewers"]
        .max()
        .groupby("region")
        .median()
    )
    # Capacity is re-sized once a day per region, from the previous days' peaks.
    daily = traffic.assign(day=traffic["event_ts"] // DAY_S).groupby(["region", "day"])["capacity_viewers"]
    assert (daily.nunique() == 1).all()
    assert (daily.first().groupby("region").median() > typical_peak).all()


def test_higher_true_p_click_clicks_more(sink: MemorySink) -> None:
    joined = sink.table("raw_ad_impressions").merge(
        sink.table("oracle_ad_impressions"), on="event_id", validate="one_to_one"
    )
    decile = pd.qcut(joined["p_click"], 10, labels=False)
    ctr = joined.groupby(decile)["clicked"].mean()
    assert ctr.iloc[-1] > 2 * ctr.iloc[0]
    assert joined["p_click"].between(0, 1).all() and joined["p_convert"].between(0, 1).all()


def test_churned_users_are_silent_after_churn(sink: MemorySink) -> None:
    oracle = sink.table("oracle_users")
    churned = oracle.dropna(subset=["churned_ts"]).set_index("user_key")["churned_ts"]
    assert len(churned) > 0
    for name in RAW_TABLES:
        frame = sink.table(name)
        if "user_key" not in frame.columns or name == "raw_users":
            continue
        limit = frame["user_key"].map(churned)
        late = frame["event_ts"] >= limit
        if "end_ts" in frame.columns:
            late |= frame["end_ts"] >= limit
        assert not late.fillna(False).any(), name


def test_no_events_before_signup(sink: MemorySink) -> None:
    signup = sink.table("raw_users").set_index("user_key")["event_ts"]
    for name in ("raw_watch_sessions", "raw_ad_impressions", "raw_gifts", "raw_memberships"):
        frame = sink.table(name)
        assert (frame["event_ts"] >= frame["user_key"].map(signup)).all(), name


def test_gifts_are_heavy_tailed(sink: MemorySink) -> None:
    gifts = sink.table("raw_gifts")
    amount = gifts["amount"].sort_values(ascending=False)
    top = amount.iloc[: max(1, len(amount) // 100)].sum()
    assert top > 0.1 * amount.sum()
    assert np.allclose(gifts["platform_share"], (gifts["amount"] * 0.3).round(2))


def test_commerce_and_memberships(sink: MemorySink) -> None:
    orders = sink.table("raw_orders")
    assert (orders["quantity"] >= 1).all()
    assert np.allclose(orders["amount"], orders["quantity"] * orders["unit_price"], atol=0.011)
    assert orders["order_ref"].is_unique
    products = sink.table("raw_products").set_index("product_id")
    rate = orders["product_id"].map(products["commission_rate"])
    assert np.allclose(orders["commission"], orders["amount"] * rate, atol=0.011)
    assert products["commission_rate"].between(0.05, 0.2).all()
    streams = sink.table("raw_streams").set_index("stream_id")
    assert (orders["stream_id"].map(streams["is_commerce"]) == 1).all()
    members = sink.table("raw_memberships")
    assert set(members["action"]) <= {"subscribe", "renew", "cancel"}
    assert {"subscribe", "renew", "cancel"} <= set(members["action"])
    assert (members.loc[members["action"] == "cancel", "fee"] == 0).all()


def test_revenue_ledger_points_at_its_events(sink: MemorySink) -> None:
    revenue = sink.table("raw_revenue")
    assert set(revenue["source"]) == {"ad", "commerce", "membership", "gift", "paid_content"}
    assert (revenue["amount"] > 0).all()
    sources = {
        "ad": "raw_ad_impressions",
        "commerce": "raw_orders",
        "membership": "raw_memberships",
        "gift": "raw_gifts",
        "paid_content": "raw_paid_content",
    }
    for source, table in sources.items():
        refs = revenue.loc[revenue["source"] == source, "ref_event_id"]
        assert refs.isin(sink.table(table)["event_id"]).all(), source
    gifts = sink.table("raw_gifts")["platform_share"].sum()
    assert revenue.query("source == 'gift'")["amount"].sum() == pytest.approx(gifts)


def test_no_raw_identifiers_outside_identity(sink: MemorySink) -> None:
    pattern = re.compile(r"u\d{7}|@example\.com")
    identity = sink.table("identity_users")
    assert identity["user_id"].str.fullmatch(r"u\d{7}").all()
    assert identity["email"].str.endswith("@example.com").all()
    keys = set(identity["user_key"])
    for name in [*RAW_TABLES, *ORACLE_TABLES]:
        frame = sink.table(name)
        for column in frame.columns:
            values = frame[column]
            if values.dtype.kind in "OUT" or str(values.dtype) == "str":
                assert not values.astype(str).str.contains(pattern).any(), (name, column)
        if "user_key" in frame.columns:
            assert frame["user_key"].str.fullmatch(r"[0-9a-f]{32}").all(), name
            assert set(frame["user_key"]) <= keys, name


def test_simulated_values_come_from_the_shared_vocabulary(sink: MemorySink) -> None:
    # The simulator and production code read one vocabulary (tasks/vocabulary.py).
    vocabulary = {
        "category": set(CATEGORIES),
        "ad_category": set(CATEGORIES),
        "region": set(REGIONS),
        "device": set(DEVICES),
        "age_band": set(AGE_BANDS),
        "channel": {*ORGANIC_CHANNELS, "campaign"},
    }
    seen: set[str] = set()
    for name in sink.writes:
        frame = sink.table(name)
        for column, allowed in vocabulary.items():
            if column in frame.columns:
                expected = set(PRODUCT_CATEGORIES) if name == "raw_products" else allowed
                assert set(frame[column].dropna().unique()) == expected, (name, column)
                seen.add(column)
    assert seen == set(vocabulary)
