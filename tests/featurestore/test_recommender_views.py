"""The recommenders' views: per-user daily histories and product popularity, checked against raw rows."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from tasks.db import write_tx
from tasks.featurestore import FEATURE_VIEWS, backfill, get_historical_features
from tasks.models.catalog.product_recs.data import commerce_from_store, load_commerce
from tests.featurestore.helpers import DAY, days, epoch, load, set_status

D = DAY
VIEWS = (
    "user_product_events",
    "user_streamer_watch",
    "product_popularity",
    "user_session_log",
    "user_follow_log",
    "user_profile",
)


def at(n: int, hour: float = 0.0) -> int:
    """Epoch seconds n days after D (negative: before) at that hour."""
    return epoch(D + dt.timedelta(days=n), hour)


def order(user: str, product: str, ts: int, price: float) -> dict[str, Any]:
    return {"event_ts": ts, "user_key": user, "product_id": product, "quantity": 1, "unit_price": price,
            "amount": price, "commission": 0.1 * price}  # fmt: skip


def card_view(user: str, product: str, ts: int) -> dict[str, Any]:
    return {"event_ts": ts, "user_key": user, "product_id": product}


def session(user: str, streamer: str, ts: int, seconds: int, category: str) -> dict[str, Any]:
    return {"event_ts": ts, "user_key": user, "stream_id": f"{streamer}-{ts}", "streamer_id": streamer,
            "category": category, "region": "eu", "device": "ios", "end_ts": ts + seconds,
            "duration_s": seconds}  # fmt: skip


ORDERS = [
    order("u1", "p1", at(-1, 3), 25.0),
    order("u1", "p2", at(0, 5), 10.0),
    order("u2", "p1", at(0, 23.5), 25.0),
    order("u1", "p3", at(1, 2), 5.0),  # the next day: never part of D's rows
]
VIEWED = [
    card_view("u1", "p1", at(-1, 2)),
    card_view("u2", "p2", at(0, 1)),
    card_view("u2", "p1", at(-10)),
    card_view("u3", "p1", at(1, 1)),
]
WATCHED = [
    session("u1", "s1", at(0, 23), 7_200, "gaming"),  # runs past midnight: D counts its first hour
    session("u1", "s2", at(0, 10), 600, "music"),
    session("u1", "s1", at(0, 12), 1_200, "gaming"),
    session("u2", "s1", at(-1, 8), 1_200, "gaming"),
    session("u1", "s1", at(1, 1), 300, "gaming"),
]


FOLLOWS: list[dict[str, Any]] = [
    {"event_ts": at(-5), "user_key": "u1", "streamer_id": "s2"},
    {"event_ts": at(0, 12), "user_key": "u1", "streamer_id": "s1"},
    {"event_ts": at(1, 2), "user_key": "u2", "streamer_id": "s1"},
]
SOURCES = ("raw_orders", "raw_product_views", "raw_watch_sessions")


def _load(engine: Engine) -> None:
    with write_tx(engine) as conn:
        load(conn, "raw_orders", ORDERS)
        load(conn, "raw_product_views", VIEWED)
        load(conn, "raw_watch_sessions", WATCHED)
        shelf = [("p1", "s1"), ("p2", "s2")]
        listing = {"event_ts": at(-30), "category": "fashion", "price": 20.0, "commission_rate": 0.1}
        load(conn, "raw_products", [{**listing, "product_id": p, "streamer_id": s} for p, s in shelf])
        load(conn, "raw_follows", FOLLOWS)
        profile = {"device": "ios", "age_band": "25-34", "channel": "organic"}
        load(
            conn,
            "raw_users",
            [{**profile, "event_ts": at(-40), "user_key": u, "region": "eu"} for u in ("u1", "u2")],
        )
        stream = {
            "stream_id": "st1",
            "streamer_id": "s1",
            "category": "gaming",
            "region": "eu",
            "is_commerce": 0,
        }
        load(conn, "raw_streams", [{**stream, "event_ts": at(0, 9), "end_ts": at(1, 3)}])
        for table in (*SOURCES, "raw_products", "raw_follows", "raw_users", "raw_streams"):
            set_status(conn, table, days(D - dt.timedelta(days=60), 63))
    for name in VIEWS:
        backfill(
            engine, FEATURE_VIEWS[name], D - dt.timedelta(days=5), D + dt.timedelta(days=1), created_ts=0
        )


def _by_hand_events(rows: list[dict[str, Any]], user: str, start: int, end: int, fields: list[str]) -> list:
    """The user's raw rows in [start, end), time-ordered, as the view's JSON lists hold them."""
    mine = sorted((r for r in rows if r["user_key"] == user and start <= r["event_ts"] < end),
                  key=lambda r: (r["event_ts"], r["product_id"]))  # fmt: skip
    return [[r[f] for f in fields] for r in mine]


def _lists(frame: pd.DataFrame, column: str) -> list[Any]:
    return [None if v is None else json.loads(v) for v in frame[column]]


def test_daily_product_events_equal_the_raw_rows_of_the_day_and_never_a_later_one(engine: Engine) -> None:
    _load(engine)
    refs = ["user_product_events:orders_1d", "user_product_events:product_views_1d"]
    users = ["u1", "u2", "u3"]
    end_of_d = at(1)
    got = get_historical_features(engine, pd.DataFrame({"user_key": users, "event_ts": [end_of_d] * 3}), refs)
    orders = _lists(got, "user_product_events__orders_1d")
    views = _lists(got, "user_product_events__product_views_1d")
    for i, user in enumerate(["u1", "u2"]):
        assert orders[i] == _by_hand_events(
            ORDERS, user, at(0), at(1), ["product_id", "event_ts", "unit_price"]
        )
        assert views[i] == _by_hand_events(VIEWED, user, at(0), at(1), ["product_id", "event_ts"])
    assert orders[0] == [["p2", at(0, 5), 10.0]] and views[0] == []
    assert orders[2] is None and views[2] is None  # u3 did nothing on D (its view is on D + 1)
    # Mid-day D only the day before is known: D's row is built at D's end, even for events before noon.
    noon = get_historical_features(engine, pd.DataFrame({"user_key": ["u1"], "event_ts": [at(0, 12)]}), refs)
    assert _lists(noon, "user_product_events__orders_1d") == [[["p1", at(-1, 3), 25.0]]]
    # Nothing at or after the event time is ever returned, whatever the time asked.
    for t in (at(0), at(0, 6), at(1), at(1, 3), at(2)):
        frame = get_historical_features(engine, pd.DataFrame({"user_key": users, "event_ts": [t] * 3}), refs)
        for column in ("user_product_events__orders_1d", "user_product_events__product_views_1d"):
            for events in _lists(frame, column):
                assert all(e[1] < t for e in events or []), (t, column, events)


def test_daily_watch_time_per_streamer_counts_a_session_on_its_start_day_only(engine: Engine) -> None:
    _load(engine)
    refs = ["user_streamer_watch:streamer_seconds_1d"]
    frame = pd.DataFrame({"user_key": ["u1", "u1", "u2"], "event_ts": [at(1), at(2), at(1)]})
    got = _lists(get_historical_features(engine, frame, refs), "user_streamer_watch__streamer_seconds_1d")
    # D: 3600 s of the session that runs past midnight (not 7200) plus the 1200 s one; s2's 600 s.
    assert got[0] == [["s1", 4_800.0, "gaming"], ["s2", 600.0, "music"]]
    assert got[1] == [["s1", 300.0, "gaming"]]  # D + 1: only what started on D + 1
    # u2 watched on D - 1 only: at D's end that row is a day old, still inside the one-day TTL; a
    # second later it is stale and nothing comes back.
    assert got[2] == [["s1", 1_200.0, "gaming"]]
    later = get_historical_features(engine, pd.DataFrame({"user_key": ["u2"], "event_ts": [at(1) + 1]}), refs)
    assert _lists(later, "user_streamer_watch__streamer_seconds_1d") == [None]


def test_product_popularity_by_hand(engine: Engine) -> None:
    _load(engine)
    refs = ["product_popularity:buyers_28d", "product_popularity:orders_7d", "product_popularity:views_7d"]
    got = get_historical_features(
        engine, pd.DataFrame({"product_id": ["p1", "p2", "p3"], "event_ts": [at(1)] * 3}), refs
    ).set_index("product_id")
    for product in ("p1", "p2"):
        orders = [o for o in ORDERS if o["product_id"] == product and at(-27) <= o["event_ts"] < at(1)]
        week = [o for o in orders if o["event_ts"] >= at(-6)]
        seen = [v for v in VIEWED if v["product_id"] == product and at(-6) <= v["event_ts"] < at(1)]
        row = got.loc[product]
        assert row["product_popularity__buyers_28d"] == len({o["user_key"] for o in orders})
        assert row["product_popularity__orders_7d"] == len(week)
        assert row["product_popularity__views_7d"] == len(seen)
    assert (
        got.loc["p1", "product_popularity__buyers_28d"],
        got.loc["p1", "product_popularity__views_7d"],
    ) == (2, 1)
    assert got["product_popularity__orders_7d"].isna()["p3"]  # first sold on D + 1


def test_product_recs_reads_through_the_store_what_it_would_read_from_raw_tables(engine: Engine) -> None:
    _load(engine)
    start, end = at(-1), at(1)
    from_store = commerce_from_store(engine, start, end, start)
    with engine.connect() as conn:
        from_raw = load_commerce(conn, start, end, start)
    for field in ("users", "items", "streamers"):
        assert list(getattr(from_store, field)) == list(getattr(from_raw, field)), field
    for field in ("orders", "views", "watch"):
        store_frame, raw_frame = getattr(from_store, field), getattr(from_raw, field)
        columns = sorted(raw_frame.columns)
        order = [c for c in ("event_ts", "day_ts", "user", "item", "streamer") if c in columns]
        pd.testing.assert_frame_equal(
            store_frame[columns].sort_values(order).reset_index(drop=True),
            raw_frame[columns].sort_values(order).reset_index(drop=True),
            check_dtype=False,
        )
    assert len(from_store.orders) == 3 and from_store.watch["seconds"].sum() == 1_200 + 4_800 + 600


def _ids(table: str, rows: list[dict[str, Any]], keep: Any) -> list[str]:
    """The event ids (as the helpers number them) of the rows kept, in time order."""
    chosen = [(r["event_ts"], f"{table}-{i}") for i, r in enumerate(rows) if keep(r)]
    return [event_id for _, event_id in sorted(chosen)]


def test_session_log_knows_a_session_one_second_after_it_starts_and_only_that_days(engine: Engine) -> None:
    _load(engine)
    refs = ["user_session_log:sessions_1d"]
    times = [at(0, 12), at(0, 12) + 1, at(1), at(1, 1) + 1]
    got = get_historical_features(engine, pd.DataFrame({"user_key": ["u1"] * 4, "event_ts": times}), refs)
    logs = _lists(got, "user_session_log__sessions_1d")
    u1 = [(r["event_ts"], f"raw_watch_sessions-{i}") for i, r in enumerate(WATCHED) if r["user_key"] == "u1"]
    # Mid-day the day's sessions so far; at midnight D's last row (its 23:00 session) is still
    # inside the one-day TTL; after 01:00 on D + 1 only that day's session.
    since = [at(0), at(0), at(0), at(1)]
    for t, first, log in zip(times, since, logs, strict=True):
        assert [e[0] for e in log] == [i for ts, i in sorted(u1) if first <= ts < t], t
        assert all(e[4] < t for e in log)  # the session starting at t is not history yet
    assert logs[0][0][1:] == ["s2-" + str(at(0, 10)), "s2", "music", at(0, 10)]


def test_stream_recs_history_through_the_store_equals_the_raw_rows_before_the_end(engine: Engine) -> None:
    from tasks.models.catalog import stream_recs as sr

    _load(engine)
    end = at(0, 12) + 1
    with engine.connect() as conn:
        history = sr.load_history(conn, end, end)
    first = end - sr.LOOKBACK_DAYS * 86_400
    assert list(history.sessions["event_id"]) == _ids(
        "raw_watch_sessions", WATCHED, lambda r: first <= r["event_ts"] < end
    )
    assert list(history.sessions.columns) == [
        "event_id",
        "user_key",
        "stream_id",
        "streamer_id",
        "category",
        "event_ts",
    ]
    follows = history.follows
    assert follows[["user_key", "streamer_id", "event_ts"]].values.tolist() == [
        [r["user_key"], r["streamer_id"], r["event_ts"]] for r in FOLLOWS if r["event_ts"] < end
    ]
    assert dict(zip(history.users["user_key"], history.users["region"], strict=True)) == {
        "u1": "eu",
        "u2": "eu",
    }
    assert list(history.streams["stream_id"]) == ["st1"]
