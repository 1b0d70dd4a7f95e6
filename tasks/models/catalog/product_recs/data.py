"""product_recs' data: commerce interactions, watch time and the catalogue, encoded as integer codes.

The model's inputs come through the feature store: every user's orders and product-card views
(``user_product_events``) and watch time per streamer (``user_streamer_watch``), one row per
user and day, read with ``get_historical_features`` at each day's end, so that training and
scoring see exactly the days the store's point-in-time, TTL and freshness rules allow. The
label builder reads the purchases it labels, and the catalogue, from validated raw tables.
``load_commerce`` reads everything from raw tables (for imported shops benchmarked outside
the store).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Select, and_, case, func, select

from tasks.featurestore.definitions import DAY_S
from tasks.models.families.event_logs import read_logs, unpack
from tasks.warehouse import raw_table, validated_between, validated_dates

RAW_SOURCES = ("raw_orders", "raw_product_views", "raw_products", "raw_watch_sessions")
PRODUCT_EVENTS = ("user_product_events:orders_1d", "user_product_events:product_views_1d")
STREAMER_WATCH = ("user_streamer_watch:streamer_seconds_1d",)
FEATURE_REFS: tuple[str, ...] = (*PRODUCT_EVENTS, *STREAMER_WATCH)


@dataclass
class CommerceData:
    """Commerce interactions and catalogue context in one time range, keys as integer codes.

    ``users``/``items``/``streamers``/``categories`` map a code to its text key (sorted);
    per-item arrays are indexed by item code; a streamer or category code of -1 is unknown.
    """

    users: np.ndarray
    items: np.ndarray
    streamers: np.ndarray
    categories: np.ndarray
    orders: pd.DataFrame  # user, item, event_ts, unit_price
    label_orders: pd.DataFrame  # the purchases labels are read from (the orders themselves by default)
    views: pd.DataFrame  # user, item, event_ts
    watch: pd.DataFrame  # user, streamer, day_ts, seconds (one row per user, streamer and day)
    item_listed_ts: np.ndarray  # int64; NO_TS when the item is not in the catalogue
    item_streamer: np.ndarray
    item_category: np.ndarray
    item_price: np.ndarray  # catalogue price, NaN when not listed
    streamer_category: np.ndarray  # per streamer: code of the stream category it is watched in, -1
    stream_categories: np.ndarray  # code -> stream category


NO_TS = np.iinfo(np.int64).max
_ORDER_COLUMNS = ("user_key", "product_id", "event_ts", "unit_price")
_VIEW_COLUMNS = ("user_key", "product_id", "event_ts")
_PRODUCT_COLUMNS = ("product_id", "listed_ts", "streamer_id", "category", "price")
_WATCH_COLUMNS = ("user_key", "streamer_id", "day_ts", "seconds", "category")


def codes_of(vocabulary: np.ndarray, keys: Any) -> np.ndarray:
    """Codes of keys in a sorted vocabulary; -1 for a key outside it."""
    values = np.asarray(pd.Series(keys, dtype=object).fillna("").astype(str), dtype=object)
    if len(vocabulary) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(vocabulary, values), len(vocabulary) - 1)
    return np.where(vocabulary[pos] == values, pos, -1).astype(np.int64)


def shelf_items(streamer_of: np.ndarray, streamers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every shelf item of each given streamer: (position in ``streamers``, item code) pairs.

    ``streamer_of[item]`` is the streamer code that sells the item; the join is a sort and two
    binary searches, so it stays vectorised at any catalogue size.
    """
    by_streamer = np.argsort(streamer_of, kind="stable")
    shelf_streamer = streamer_of[by_streamer]
    first = np.searchsorted(shelf_streamer, streamers, side="left")
    sizes = np.searchsorted(shelf_streamer, streamers, side="right") - first
    rep = np.repeat(np.arange(len(streamers)), sizes)
    offsets = np.arange(len(rep)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return rep, by_streamer[np.repeat(first, sizes) + offsets]


def _vocabulary(*columns: Any) -> np.ndarray:
    """The sorted text keys found in the columns (missing values left out)."""
    keys: set[str] = set()
    for column in columns:
        keys.update(str(v) for v in pd.Series(column, dtype=object).dropna())
    return np.asarray(sorted(keys), dtype=object)


def commerce_data(
    orders: pd.DataFrame,
    views: pd.DataFrame,
    products: pd.DataFrame,
    watch: pd.DataFrame,
    label_orders: pd.DataFrame | None = None,
) -> CommerceData:
    """Encode text-keyed frames (columns as load_commerce reads them) into CommerceData.

    ``label_orders`` (the orders columns) are the purchases labels count; without them the
    orders are.
    """
    orders = orders.reindex(columns=list(_ORDER_COLUMNS))
    future = None if label_orders is None else label_orders.reindex(columns=list(_ORDER_COLUMNS))
    label_users: Any = [] if future is None else future["user_key"]
    label_items: Any = [] if future is None else future["product_id"]
    views = views.reindex(columns=list(_VIEW_COLUMNS))
    products = products.reindex(columns=list(_PRODUCT_COLUMNS))
    watch = watch.reindex(columns=list(_WATCH_COLUMNS))
    users = _vocabulary(orders["user_key"], views["user_key"], label_users)
    items = _vocabulary(orders["product_id"], views["product_id"], products["product_id"], label_items)
    streamers = _vocabulary(products["streamer_id"])
    categories = _vocabulary(products["category"])

    def events(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(
            {
                "user": codes_of(users, frame["user_key"]),
                "item": codes_of(items, frame["product_id"]),
                "event_ts": frame["event_ts"].to_numpy("int64"),
            }
        )
        if "unit_price" in frame.columns:
            out["unit_price"] = pd.to_numeric(frame["unit_price"]).to_numpy("float64", na_value=np.nan)
        order = np.lexsort((out["item"].to_numpy(), out["user"].to_numpy(), out["event_ts"].to_numpy()))
        return out.iloc[order].reset_index(drop=True)

    n = len(items)
    listed = np.full(n, NO_TS, dtype=np.int64)
    streamer = np.full(n, -1, dtype=np.int64)
    category = np.full(n, -1, dtype=np.int64)
    price = np.full(n, np.nan)
    if len(products):
        code = codes_of(items, products["product_id"])
        listed[code] = products["listed_ts"].to_numpy("int64")
        has_streamer = products["streamer_id"].notna().to_numpy()
        streamer[code[has_streamer]] = codes_of(streamers, products["streamer_id"][has_streamer])
        has_category = products["category"].notna().to_numpy()
        category[code[has_category]] = codes_of(categories, products["category"][has_category])
        price[code] = pd.to_numeric(products["price"]).to_numpy("float64", na_value=np.nan)
    stream_categories = _vocabulary(watch["category"])
    watched = pd.DataFrame(
        {
            "user": codes_of(users, watch["user_key"]),  # -1: a viewer who never shopped (counts for totals)
            "streamer": codes_of(streamers, watch["streamer_id"]),
            "day_ts": watch["day_ts"].to_numpy("int64"),
            "seconds": pd.to_numeric(watch["seconds"]).to_numpy("float64"),
            "category": codes_of(stream_categories, watch["category"]),
        }
    )
    # Watching matters only for streamers with a shelf.
    watched = watched[watched["streamer"] >= 0].reset_index(drop=True)
    streamer_category = np.full(len(streamers), -1, dtype=np.int64)
    by_streamer = watched[watched["category"] >= 0].groupby("streamer")["category"].min()
    streamer_category[by_streamer.index.to_numpy("int64")] = by_streamer.to_numpy("int64")
    encoded = events(orders)
    return CommerceData(
        users=users,
        items=items,
        streamers=streamers,
        categories=categories,
        orders=encoded,
        label_orders=encoded if future is None else events(future),
        views=events(views),
        watch=watched,
        item_listed_ts=listed,
        item_streamer=streamer,
        item_category=category,
        item_price=price,
        streamer_category=streamer_category,
        stream_categories=stream_categories,
    )


def _frame(conn: Connection, query: Select[Any], columns: Sequence[str]) -> pd.DataFrame:
    rows = conn.execute(query).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))


def load_commerce(
    conn: Connection, start_ts: int, end_ts: int, watch_start_ts: int | None = None
) -> CommerceData:
    """Validated orders, views and daily watch time in [start_ts, end_ts), catalogue listed before end_ts."""
    orders_t, views_t, _, watch_t = (raw_table(t) for t in RAW_SOURCES)
    orders = _frame(
        conn,
        select(orders_t.c.user_key, orders_t.c.product_id, orders_t.c.event_ts, orders_t.c.unit_price).where(
            validated_between(orders_t, start_ts, end_ts)
        ),
        _ORDER_COLUMNS,
    )
    views = _frame(
        conn,
        select(views_t.c.user_key, views_t.c.product_id, views_t.c.event_ts).where(
            validated_between(views_t, start_ts, end_ts)
        ),
        _VIEW_COLUMNS,
    )
    products = load_catalogue(conn, end_ts)
    first = start_ts if watch_start_ts is None else watch_start_ts
    # Seconds watched on the session's start day only: the part of a session running past
    # midnight would leak into a cut-off at that midnight (daily cut-offs see whole days).
    midnight = watch_t.c.event_ts - watch_t.c.event_ts % DAY_S + DAY_S
    same_day = case((watch_t.c.end_ts > midnight, midnight - watch_t.c.event_ts), else_=watch_t.c.duration_s)
    watch = _frame(
        conn,
        select(
            watch_t.c.user_key,
            watch_t.c.streamer_id,
            watch_t.c.event_date,
            func.sum(same_day),
            func.min(watch_t.c.category),
        )
        .where(validated_between(watch_t, first, end_ts))
        .group_by(watch_t.c.user_key, watch_t.c.streamer_id, watch_t.c.event_date),
        ("user_key", "streamer_id", "event_date", "seconds", "category"),
    )
    days = pd.to_datetime(watch["event_date"])
    watch["day_ts"] = ((days - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).astype("int64")
    # commerce_data sorts every event frame, so the order rows come back in does not matter.
    return commerce_data(orders, views, products, watch)


# --- through the feature store -------------------------------------------------------------------


def _within_day(events: pd.DataFrame) -> pd.DataFrame:
    """Events inside the day their row describes (a row never vouches for another day's events)."""
    ts = events["event_ts"].to_numpy("int64")
    day_end = events["row_ts"].to_numpy("int64")
    return events[(ts < day_end) & (ts >= day_end - DAY_S)].drop(columns="row_ts")


def store_history(
    engine: Engine, start_ts: int, end_ts: int, watch_start_ts: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Orders and product views in [start_ts, end_ts) and daily watch time in [watch_start_ts, end_ts),
    read through the feature store (columns as load_commerce reads them)."""
    products = read_logs(engine, PRODUCT_EVENTS, start_ts, end_ts)
    order_col, view_col = (r.replace(":", "__") for r in PRODUCT_EVENTS)
    orders = _within_day(unpack(products, "user_key", order_col, ("product_id", "event_ts", "unit_price")))
    views = _within_day(unpack(products, "user_key", view_col, ("product_id", "event_ts")))
    watched = read_logs(engine, STREAMER_WATCH, watch_start_ts, end_ts)
    watch_col = STREAMER_WATCH[0].replace(":", "__")
    watch = unpack(watched, "user_key", watch_col, ("streamer_id", "seconds", "category"))
    watch["day_ts"] = watch.pop("row_ts") - DAY_S
    return orders, views, watch


def load_catalogue(conn: Connection, end_ts: int) -> pd.DataFrame:
    """Every product of a validated catalogue partition listed before end_ts: first listing, shelf, price."""
    products_t = raw_table("raw_products")
    return _frame(
        conn,
        select(
            products_t.c.product_id,
            func.min(products_t.c.event_ts),
            func.min(products_t.c.streamer_id),
            func.min(products_t.c.category),
            func.min(products_t.c.price),
        )
        .where(
            and_(
                products_t.c.event_date.in_(validated_dates(products_t.name)), products_t.c.event_ts < end_ts
            )
        )
        .group_by(products_t.c.product_id),
        _PRODUCT_COLUMNS,
    )


def load_label_orders(conn: Connection, start_ts: int, end_ts: int) -> pd.DataFrame:
    """Validated orders in [start_ts, end_ts): the purchases the labels count."""
    orders_t = raw_table("raw_orders")
    return _frame(
        conn,
        select(orders_t.c.user_key, orders_t.c.product_id, orders_t.c.event_ts, orders_t.c.unit_price).where(
            validated_between(orders_t, start_ts, end_ts)
        ),
        _ORDER_COLUMNS,
    )


def commerce_from_store(
    engine: Engine,
    start_ts: int,
    end_ts: int,
    watch_start_ts: int,
    labels: tuple[int, int] | None = None,
    catalogue_end_ts: int | None = None,
) -> CommerceData:
    """CommerceData with interactions in [start_ts, end_ts) from the feature store, the catalogue
    listed before catalogue_end_ts (default end_ts) and, given a (start, end) range, the validated
    raw orders in it as the purchases labels count."""
    orders, views, watch = store_history(engine, start_ts, end_ts, watch_start_ts)
    with engine.connect() as conn:
        products = load_catalogue(conn, end_ts if catalogue_end_ts is None else catalogue_end_ts)
        future = None if labels is None else load_label_orders(conn, *labels)
    return commerce_data(orders, views, products, watch, label_orders=future)
