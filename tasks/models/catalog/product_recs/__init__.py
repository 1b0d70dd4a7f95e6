"""product_recs: which products to show a user in live commerce (two-stage ranking), as a ModelSpec.

Stage one generates candidates per user from collaborative filtering on the user × product
interaction matrix (orders, and product-card views at a lower weight) built ONLY from
validated interactions before the cut-off: item-item co-occurrence (item-kNN) and a truncated
SVD (PureSVD), joined by the user's own recent products, the shelves of the streamers the user
watches most (what live commerce puts on screen) and the most popular products. Stage two
re-ranks the candidates with XGBoost ``rank:ndcg`` on user, product, streamer and user ×
product features, all computed from data before the cut-off.

Examples: a query is (user, cut-off) for every user who buys in [cut-off, cut-off + horizon);
its rows are the candidates, label 1 when the user bought the product in that window.
``n_relevant`` counts every product the user bought there, also those candidate generation
missed, so recall is honest. Cut-offs are daily (midnight UTC), the horizon one day: the
user's next purchases. The baseline is the candidate's popularity (orders over the 28 days
before the cut-off).

Scoring recomputes the collaborative state (co-occurrence, factors, popularity) from data
before ``as_of`` instead of freezing it in the model: the re-ranker was trained on features
computed that way at every cut-off, so recomputing keeps training and scoring identical and
the recommendations current (new products and users enter the next day, not at retraining).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Select, and_, case, func, select
from xgboost import XGBRanker

from tasks.featurestore.definitions import DAY_S
from tasks.models.families.collaborative import (
    ItemCooccurrence,
    MatrixFactorisation,
    interaction_matrix,
    top_n,
)
from tasks.models.metrics import ranking
from tasks.models.plots import plot_hit_rate_at_k, plot_ranking_metrics_at_k
from tasks.models.spec import (
    ChangeThreshold,
    LabelWindow,
    ModelSpec,
    PromotionPolicy,
    ScoringTarget,
    SignificanceRule,
    ValueThreshold,
)
from tasks.schema import partition_status
from tasks.warehouse import raw_table, validated_dates

TOP_K = 20  # products published per user
METRICS = ("ndcg_10", "recall_20", "hit_rate_10", "catalog_coverage_10")
LABEL_SOURCES = ("raw_orders", "raw_product_views", "raw_products", "raw_watch_sessions")
GROUP = "query_id"
# No feature-store views: the commerce views (user_commerce, product_activity) are built only
# where product-card views are ingested (their primary source), so an orders-only warehouse
# (an imported shop such as Online Retail II) could not train or score; their measures are
# computed here, point in time, from the same validated raw tables.
FEATURE_REFS: tuple[str, ...] = ()
# Computed per candidate row at the cut-off, from validated raw data before it.
CANDIDATE_FEATURES: tuple[str, ...] = (
    "cooc_score",
    "cooc_rank",
    "svd_score",
    "svd_rank",
    "history_rank",
    "shelf_rank",
    "popularity",
    "popularity_rank",
    "product_buyers_28d",
    "product_orders_7d",
    "product_views_7d",
    "log_price",
    "user_product_orders",
    "user_product_views",
    "days_since_user_product",
    "user_streamer_minutes_7d",
    "user_streamer_minutes_28d",
    "user_streamer_interactions",
    "user_streamer_category_share",
    "streamer_minutes_7d",
    "shelf_size",
    "user_category_share",
    "user_interactions",
    "user_orders_28d",
    "user_views_28d",
    "user_distinct_products",
    "days_since_user_commerce",
)
CONTEXT = (*CANDIDATE_FEATURES, GROUP)
KS = (1, 5, 10, 20)  # cut-offs of the ranking-by-K picture


@dataclass(frozen=True)
class RecsConfig:
    """How candidates and their features are made; one config for training and scoring alike."""

    history_days: int = 56  # interactions the collaborative models and user features see
    popularity_days: int = 28  # the popularity baseline's window
    cutoff_step_days: int = 1  # one cut-off per day
    per_source: int = 50  # candidates from each of co-occurrence, SVD and popularity
    history_candidates: int = 30  # the user's own most recent products
    shelf_streamers: int = 3  # whose shelves (products) each user is shown: the most watched
    neighbours: int = 50  # item-kNN neighbourhood size
    factors: int = 24  # SVD rank
    view_weight: float = 0.25  # a product-card view counts this much of an order
    seed: int = 7


CONFIG = RecsConfig()


# --- validated raw data, as integer codes ---------------------------------------------------------


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


def _codes(vocabulary: np.ndarray, keys: Any) -> np.ndarray:
    """Codes of keys in a sorted vocabulary; -1 for a key outside it."""
    values = np.asarray(pd.Series(keys, dtype=object).fillna("").astype(str), dtype=object)
    if len(vocabulary) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(vocabulary, values), len(vocabulary) - 1)
    return np.where(vocabulary[pos] == values, pos, -1).astype(np.int64)


def _vocabulary(*columns: Any) -> np.ndarray:
    keys: set[str] = set()
    for column in columns:
        keys.update(str(v) for v in pd.Series(column, dtype=object).dropna())
    return np.asarray(sorted(keys), dtype=object)


def commerce_data(
    orders: pd.DataFrame, views: pd.DataFrame, products: pd.DataFrame, watch: pd.DataFrame
) -> CommerceData:
    """Encode text-keyed frames (columns as load_commerce reads them) into CommerceData."""
    orders = orders.reindex(columns=list(_ORDER_COLUMNS))
    views = views.reindex(columns=list(_VIEW_COLUMNS))
    products = products.reindex(columns=list(_PRODUCT_COLUMNS))
    watch = watch.reindex(columns=list(_WATCH_COLUMNS))
    users = _vocabulary(orders["user_key"], views["user_key"])
    items = _vocabulary(orders["product_id"], views["product_id"], products["product_id"])
    streamers = _vocabulary(products["streamer_id"])
    categories = _vocabulary(products["category"])

    def events(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(
            {
                "user": _codes(users, frame["user_key"]),
                "item": _codes(items, frame["product_id"]),
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
        code = _codes(items, products["product_id"])
        listed[code] = products["listed_ts"].to_numpy("int64")
        has_streamer = products["streamer_id"].notna().to_numpy()
        streamer[code[has_streamer]] = _codes(streamers, products["streamer_id"][has_streamer])
        has_category = products["category"].notna().to_numpy()
        category[code[has_category]] = _codes(categories, products["category"][has_category])
        price[code] = pd.to_numeric(products["price"]).to_numpy("float64", na_value=np.nan)
    stream_categories = _vocabulary(watch["category"])
    watched = pd.DataFrame(
        {
            "user": _codes(users, watch["user_key"]),  # -1: a viewer who never shopped (counts for totals)
            "streamer": _codes(streamers, watch["streamer_id"]),
            "day_ts": watch["day_ts"].to_numpy("int64"),
            "seconds": pd.to_numeric(watch["seconds"]).to_numpy("float64"),
            "category": _codes(stream_categories, watch["category"]),
        }
    )
    # Watching matters only for streamers with a shelf.
    watched = watched[watched["streamer"] >= 0].reset_index(drop=True)
    streamer_category = np.full(len(streamers), -1, dtype=np.int64)
    by_streamer = watched[watched["category"] >= 0].groupby("streamer")["category"].min()
    streamer_category[by_streamer.index.to_numpy("int64")] = by_streamer.to_numpy("int64")
    return CommerceData(
        users=users,
        items=items,
        streamers=streamers,
        categories=categories,
        orders=events(orders),
        views=events(views),
        watch=watched,
        item_listed_ts=listed,
        item_streamer=streamer,
        item_category=category,
        item_price=price,
        streamer_category=streamer_category,
        stream_categories=stream_categories,
    )


def _date(ts: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def _frame(conn: Connection, query: Select[Any], columns: Sequence[str]) -> pd.DataFrame:
    rows = conn.execute(query).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))


def _in_range(table: Any, start_ts: int, end_ts: int) -> Any:
    return and_(
        table.c.event_date.between(_date(start_ts), _date(end_ts - 1)),  # partition pruning
        table.c.event_date.in_(validated_dates(table.name)),
        table.c.event_ts >= start_ts,
        table.c.event_ts < end_ts,
    )


def load_commerce(
    conn: Connection, start_ts: int, end_ts: int, watch_start_ts: int | None = None
) -> CommerceData:
    """Validated orders, views and daily watch time in [start_ts, end_ts), catalogue listed before end_ts."""
    orders_t, views_t, products_t, watch_t = (raw_table(t) for t in LABEL_SOURCES)
    orders = _frame(
        conn,
        select(orders_t.c.user_key, orders_t.c.product_id, orders_t.c.event_ts, orders_t.c.unit_price).where(
            _in_range(orders_t, start_ts, end_ts)
        ),
        _ORDER_COLUMNS,
    )
    views = _frame(
        conn,
        select(views_t.c.user_key, views_t.c.product_id, views_t.c.event_ts).where(
            _in_range(views_t, start_ts, end_ts)
        ),
        _VIEW_COLUMNS,
    )
    products = _frame(
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
        .where(_in_range(watch_t, first, end_ts))
        .group_by(watch_t.c.user_key, watch_t.c.streamer_id, watch_t.c.event_date),
        ("user_key", "streamer_id", "event_date", "seconds", "category"),
    )
    days = pd.to_datetime(watch["event_date"])
    watch["day_ts"] = ((days - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).astype("int64")
    # commerce_data sorts every event frame, so the order rows come back in does not matter.
    return commerce_data(orders, views, products, watch)


# --- candidates and their features at one cut-off ---------------------------------------------


@dataclass
class _History:
    """Interactions in [cutoff − history_days, cutoff): global codes, time and kind (1 = order)."""

    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    is_order: np.ndarray
    price: np.ndarray  # unit price of orders, NaN for views


def _history(data: CommerceData, cutoff: int, config: RecsConfig) -> _History:
    start = cutoff - config.history_days * DAY_S
    parts = []
    for frame, kind in ((data.orders, 1), (data.views, 0)):
        ts = frame["event_ts"].to_numpy()
        rows = frame[(ts >= start) & (ts < cutoff)]
        price = rows["unit_price"].to_numpy("float64") if kind else np.full(len(rows), np.nan)
        parts.append(
            (rows["user"].to_numpy(), rows["item"].to_numpy(), rows["event_ts"].to_numpy(), kind, price)
        )
    return _History(
        user=np.concatenate([p[0] for p in parts]).astype(np.int64),
        item=np.concatenate([p[1] for p in parts]).astype(np.int64),
        ts=np.concatenate([p[2] for p in parts]).astype(np.int64),
        is_order=np.concatenate([np.full(len(p[0]), p[3]) for p in parts]).astype(np.int64),
        price=np.concatenate([p[4] for p in parts]),
    )


def _keyed(keys: np.ndarray, values: np.ndarray, reducer: str = "sum") -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and the sum (or max) of values per key."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    if reducer == "sum":
        return uniq, np.bincount(inverse, weights=values, minlength=len(uniq))
    out = np.full(len(uniq), -np.inf)
    np.maximum.at(out, inverse, values.astype("float64"))
    return uniq, out


def _find(uniq: np.ndarray, values: np.ndarray, keys: np.ndarray, default: float) -> np.ndarray:
    """values[key] for each key found in the sorted uniq, else default."""
    if len(uniq) == 0:
        return np.full(len(keys), default, dtype="float64")
    pos = np.minimum(np.searchsorted(uniq, keys), len(uniq) - 1)
    return np.where(uniq[pos] == keys, values[pos], default).astype("float64")


def _candidates(data: CommerceData, cutoff: int, query_users: np.ndarray, config: RecsConfig) -> pd.DataFrame:
    """Candidate rows (user, item codes + features) for sorted unique user codes at the cut-off."""
    hist = _history(data, cutoff, config)
    # The items known at the cut-off: listed in the catalogue before it or interacted with before
    # it. Nothing else can become a candidate, so no product first seen later ever does.
    known = np.union1d(np.flatnonzero(data.item_listed_ts < cutoff), hist.item)
    hist_users = np.unique(hist.user)
    n_q, n_items = len(query_users), len(known)
    if n_items == 0 or n_q == 0:
        return pd.DataFrame(columns=["user", "item", *CANDIDATE_FEATURES, "user_type", "catalog_size"])
    local_user = np.searchsorted(hist_users, hist.user)
    local_item = np.searchsorted(known, hist.item)
    weight = np.where(hist.is_order == 1, 1.0, config.view_weight)
    matrix = interaction_matrix(local_user, local_item, weight, (len(hist_users), n_items))
    if len(hist_users):
        pos = np.minimum(np.searchsorted(hist_users, query_users), len(hist_users) - 1)
        is_warm = hist_users[pos] == query_users
    else:
        pos, is_warm = np.zeros(n_q, dtype=np.int64), np.zeros(n_q, dtype=bool)
    warm = np.flatnonzero(is_warm)

    sources: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    cooc_all = np.full((n_q, n_items), np.nan)
    svd_all = np.full((n_q, n_items), np.nan)
    if len(warm):
        cooc_all[warm] = ItemCooccurrence(config.neighbours).fit(matrix).score(matrix[pos[warm]])
        svd_all[warm] = MatrixFactorisation(config.factors, config.seed).fit(matrix).score(pos[warm])
        for name, scores in (("cooc_rank", cooc_all[warm]), ("svd_rank", svd_all[warm])):
            r, c, rank = top_n(scores, config.per_source)
            sources[name] = (warm[r], c, rank)

    # The user's own products, most recent first (repeat purchases are common).
    pair_keys = local_user * n_items + local_item
    pairs, last_ts = _keyed(pair_keys, hist.ts, "max")
    q_of_user = np.full(len(hist_users), -1)
    q_of_user[pos[warm]] = warm
    q_mine = q_of_user[pairs // n_items]
    mine = q_mine >= 0
    q_mine, item_mine, ts_mine = q_mine[mine], (pairs % n_items)[mine], last_ts[mine]
    sources["history_rank"] = _ranked(q_mine, item_mine, -ts_mine, config.history_candidates)

    # The shelves of the streamers each user watched most over 28 days (live commerce sells
    # what is on screen); empty where products have no streamer.
    shelf_q, shelf_item, shelf_order = _shelf(data, cutoff, query_users, known, config)
    sources["shelf_rank"] = _ranked(shelf_q, shelf_item, shelf_order, config.per_source)

    # Popularity: orders over the baseline window, ties broken by product id.
    recent = (hist.is_order == 1) & (hist.ts >= cutoff - config.popularity_days * DAY_S)
    counts = np.bincount(local_item[recent], minlength=n_items).astype("float64")
    n_buyers = np.bincount(np.unique(pair_keys[recent]) % n_items, minlength=n_items).astype("float64")
    pop_order = np.lexsort((np.arange(n_items), -counts))
    pop_rank = np.empty(n_items)
    pop_rank[pop_order] = np.arange(1, n_items + 1)
    top_pop = pop_order[: config.per_source]
    top_pop = top_pop[counts[top_pop] > 0]
    sources["popular"] = (
        np.repeat(np.arange(n_q), len(top_pop)),
        np.tile(top_pop, n_q),
        np.tile(np.arange(1, len(top_pop) + 1), n_q),
    )

    keys = np.unique(np.concatenate([q * n_items + c for q, c, _ in sources.values()]))
    q, it = keys // n_items, keys % n_items
    out = pd.DataFrame({"user": query_users[q], "item": known[it]})
    for name in ("cooc_rank", "svd_rank", "history_rank", "shelf_rank"):
        sq, sc, sr = sources.get(name, (np.zeros(0, np.int64),) * 3)
        source_keys = sq * n_items + sc
        order = np.argsort(source_keys, kind="stable")
        out[name] = _find(source_keys[order], sr[order].astype("float64"), keys, np.nan)
    out["cooc_score"] = cooc_all[q, it]
    out["svd_score"] = svd_all[q, it]
    out["popularity"] = counts[it]
    out["popularity_rank"] = pop_rank[it]
    out["product_buyers_28d"] = n_buyers[it]
    week = hist.ts >= cutoff - 7 * DAY_S
    for name, kind in (("product_orders_7d", 1), ("product_views_7d", 0)):
        out[name] = np.bincount(local_item[week & (hist.is_order == kind)], minlength=n_items)[it].astype(
            "float64"
        )
    _add_context(out, data, hist, cutoff, config)
    out["user_type"] = np.where(is_warm[q], "warm", "cold")
    out["catalog_size"] = np.int64(n_items)
    return out


def _ranked(
    query: np.ndarray, item: np.ndarray, order_key: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, item, rank) of each query's first `limit` items by order_key, then item code."""
    order = np.lexsort((item, order_key, query))
    query, item = query[order], item[order]
    rank = np.arange(len(query)) - np.searchsorted(query, query) + 1
    keep = rank <= limit
    return query[keep], item[keep], rank[keep]


def _shelf(
    data: CommerceData, cutoff: int, query_users: np.ndarray, known: np.ndarray, config: RecsConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, local item, order key) for the listed products of each user's most-watched streamers."""
    empty = np.zeros(0, dtype=np.int64)
    streamer_of = np.where(data.item_listed_ts[known] < cutoff, data.item_streamer[known], -1)
    if not (streamer_of >= 0).any() or data.watch.empty:
        return empty, empty, empty.astype("float64")
    day = data.watch["day_ts"].to_numpy()
    rows = data.watch[(day < cutoff) & (day >= cutoff - 28 * DAY_S)]
    n_str = len(data.streamers)
    keys, seconds = _keyed(rows["user"].to_numpy() * n_str + rows["streamer"].to_numpy(),
                           rows["seconds"].to_numpy("float64"))  # fmt: skip
    user, streamer = keys // n_str, keys % n_str
    q = np.searchsorted(query_users, user)
    found = (q < len(query_users)) & (query_users[np.minimum(q, len(query_users) - 1)] == user)
    q, streamer, seconds = q[found], streamer[found], seconds[found]
    q, streamer, rank = _ranked(q, streamer, -seconds, config.shelf_streamers)
    # Every shelf item of each chosen streamer: join (query, streamer) to (streamer, item).
    by_streamer = np.argsort(streamer_of, kind="stable")
    shelf_streamer = streamer_of[by_streamer]
    first = np.searchsorted(shelf_streamer, streamer, side="left")
    last = np.searchsorted(shelf_streamer, streamer, side="right")
    sizes = last - first
    rep = np.repeat(np.arange(len(q)), sizes)
    offsets = np.arange(len(rep)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    items = by_streamer[np.repeat(first, sizes) + offsets]
    return q[rep], items, rank[rep].astype("float64")


def _add_context(
    out: pd.DataFrame, data: CommerceData, hist: _History, cutoff: int, config: RecsConfig
) -> None:
    """Product, user and user × product features at the cut-off, added to the candidate rows in place."""
    user, item = out["user"].to_numpy(), out["item"].to_numpy()
    n_items, n_users = len(data.items), len(data.users)
    listed = data.item_listed_ts[item] < cutoff  # catalogue facts count only once listed
    catalog_price = np.where(listed, data.item_price[item], np.nan)
    ordered = hist.is_order == 1
    paid = pd.Series(hist.price[ordered]).groupby(hist.item[ordered]).median()
    paid_price = paid.reindex(item).to_numpy("float64")
    price = np.where(np.isnan(catalog_price), paid_price, catalog_price)
    out["log_price"] = np.log1p(np.clip(price, 0.0, None))

    pair_keys = hist.user * n_items + hist.item
    cand_pairs = user * n_items + item
    uniq, orders = _keyed(pair_keys, hist.is_order.astype("float64"))
    _, total = _keyed(pair_keys, np.ones(len(pair_keys)))
    _, last = _keyed(pair_keys, hist.ts, "max")
    out["user_product_orders"] = _find(uniq, orders, cand_pairs, 0.0)
    out["user_product_views"] = _find(uniq, total - orders, cand_pairs, 0.0)
    out["days_since_user_product"] = (cutoff - _find(uniq, last, cand_pairs, np.nan)) / DAY_S

    interactions = np.bincount(hist.user, minlength=n_users).astype("float64")
    distinct = np.bincount(uniq // n_items, minlength=n_users).astype("float64")
    user_last = np.full(n_users, np.nan)
    if len(hist.user):
        user_last_ts = np.full(n_users, -np.inf)
        np.maximum.at(user_last_ts, hist.user, hist.ts.astype("float64"))
        user_last = np.where(np.isfinite(user_last_ts), user_last_ts, np.nan)
    out["user_interactions"] = interactions[user]
    last_28d = hist.ts >= cutoff - 28 * DAY_S
    for name, kind in (("user_orders_28d", 1), ("user_views_28d", 0)):
        counts = np.bincount(hist.user[last_28d & (hist.is_order == kind)], minlength=n_users)
        out[name] = counts[user].astype("float64")
    out["user_distinct_products"] = distinct[user]
    out["days_since_user_commerce"] = (cutoff - user_last[user]) / DAY_S

    # The product's streamer: what the user watched of it, and viewed or bought from its shelf.
    n_str = max(len(data.streamers), 1)
    streamer = np.where(listed, data.item_streamer[item], -1)
    has_streamer = streamer >= 0
    cand_streamer = user * n_str + np.maximum(streamer, 0)
    day = data.watch["day_ts"].to_numpy()
    for days in (7, 28):
        rows = data.watch[(day < cutoff) & (day >= cutoff - days * DAY_S)]
        keys = rows["user"].to_numpy() * n_str + rows["streamer"].to_numpy()
        uniq_w, seconds = _keyed(keys, rows["seconds"].to_numpy("float64"))
        minutes = _find(uniq_w, seconds / 60.0, cand_streamer, 0.0)
        out[f"user_streamer_minutes_{days}d"] = np.where(has_streamer, minutes, np.nan)
    # Exposure: how much the streamer is watched at all, and how many products share its shelf
    # (a viewer opens one of them at random).
    week = data.watch[(day < cutoff) & (day >= cutoff - 7 * DAY_S)]
    streamer_seconds = np.bincount(
        week["streamer"].to_numpy(), weights=week["seconds"].to_numpy(), minlength=n_str
    )
    out["streamer_minutes_7d"] = np.where(
        has_streamer, streamer_seconds[np.maximum(streamer, 0)] / 60.0, np.nan
    )
    listed_streamer = np.where(data.item_listed_ts < cutoff, data.item_streamer, -1)
    shelf_size = np.bincount(listed_streamer[listed_streamer >= 0], minlength=n_str).astype("float64")
    out["shelf_size"] = np.where(has_streamer, shelf_size[np.maximum(streamer, 0)], np.nan)
    # Interest: the user's share of 28-day watch time in the stream category the streamer is watched in.
    month = data.watch[(day < cutoff) & (day >= cutoff - 28 * DAY_S) & (data.watch["category"] >= 0)]
    n_wc = max(len(data.stream_categories), 1)
    uniq_uc, cat_seconds = _keyed(month["user"].to_numpy() * n_wc + month["category"].to_numpy(),
                                  month["seconds"].to_numpy("float64"))  # fmt: skip
    user_seconds = np.zeros(n_users)
    mine = month["user"].to_numpy() >= 0
    np.add.at(user_seconds, month["user"].to_numpy()[mine], month["seconds"].to_numpy("float64")[mine])
    streamer_category = np.r_[data.streamer_category, -1]  # a trailing -1: safe with no streamer at all
    s_cat = np.where(has_streamer, streamer_category[np.where(has_streamer, streamer, -1)], -1)
    watched = _find(uniq_uc, cat_seconds, user * n_wc + np.maximum(s_cat, 0), 0.0)
    share = watched / np.where(user_seconds[user] > 0, user_seconds[user], np.nan)
    out["user_streamer_category_share"] = np.where(s_cat >= 0, share, np.nan)
    hist_streamer = np.where(data.item_listed_ts[hist.item] < cutoff, data.item_streamer[hist.item], -1)
    known = hist_streamer >= 0
    uniq_s, shelf = _keyed(hist.user[known] * n_str + hist_streamer[known], np.ones(int(known.sum())))
    out["user_streamer_interactions"] = np.where(
        has_streamer, _find(uniq_s, shelf, cand_streamer, 0.0), np.nan
    )

    n_cat = max(len(data.categories), 1)
    category = np.where(listed, data.item_category[item], -1)
    hist_category = np.where(data.item_listed_ts[hist.item] < cutoff, data.item_category[hist.item], -1)
    known = hist_category >= 0
    uniq_c, per_cat = _keyed(hist.user[known] * n_cat + hist_category[known], np.ones(int(known.sum())))
    share = _find(uniq_c, per_cat, user * n_cat + np.maximum(category, 0), 0.0) / np.maximum(
        interactions[user], 1.0
    )
    out["user_category_share"] = np.where(category >= 0, share, np.nan)


def candidates_at(
    data: CommerceData, cutoff: int, users: Sequence[str], config: RecsConfig = CONFIG
) -> pd.DataFrame:
    """Candidate rows (user_key, product_id, features) at the cut-off; unknown users get none."""
    codes = _codes(data.users, list(users))
    frame = _candidates(data, cutoff, np.unique(codes[codes >= 0]), config)
    return _with_keys(data, frame)


def _with_keys(data: CommerceData, frame: pd.DataFrame) -> pd.DataFrame:
    user, item = frame["user"].to_numpy("int64"), frame["item"].to_numpy("int64")
    keys = pd.DataFrame({"user_key": data.users[user], "product_id": data.items[item]}, index=frame.index)
    return pd.concat([keys, frame], axis=1)


# --- label frames ----------------------------------------------------------------------------


def cutoffs_in(window: LabelWindow, config: RecsConfig = CONFIG) -> list[int]:
    """Midnight-UTC cut-offs c in the window whose evaluation window [c, c + horizon) ends by end_ts."""
    step = config.cutoff_step_days * DAY_S
    first = -(-window.start_ts // DAY_S) * DAY_S
    horizon = max(window.horizon_s, DAY_S)
    return list(range(first, window.end_ts - horizon + 1, step))


LABEL_COLUMNS = (
    "example_id", "event_ts", "target_ts", "label", "user_key", "product_id", GROUP,
    "n_relevant", "item_id", "catalog_size", "user_type",
)  # fmt: skip


def build_examples(
    data: CommerceData, cutoffs: Sequence[int], horizon_s: int, config: RecsConfig = CONFIG
) -> pd.DataFrame:
    """One query per (user, cut-off) with a purchase in [cut-off, cut-off + horizon); rows = candidates."""
    frames = []
    ts = data.orders["event_ts"].to_numpy()
    n_items = len(data.items)
    for cutoff in cutoffs:
        future = data.orders[(ts >= cutoff) & (ts < cutoff + horizon_s)]
        if future.empty:
            continue
        bought = np.unique(future["user"].to_numpy() * n_items + future["item"].to_numpy())
        users = np.unique(bought // n_items)
        rows = _candidates(data, cutoff, users, config)
        if rows.empty:
            continue
        keys = rows["user"].to_numpy("int64") * n_items + rows["item"].to_numpy("int64")
        rows["label"] = np.isin(keys, bought).astype("int64")
        n_relevant = np.bincount(np.searchsorted(users, bought // n_items), minlength=len(users))
        rows["n_relevant"] = n_relevant[np.searchsorted(users, rows["user"].to_numpy())].astype("int64")
        rows["event_ts"] = np.int64(cutoff)
        # The last second the label window covers: a later split starting at cutoff + horizon
        # does not overlap it, so time_split's purge keeps these rows.
        rows["target_ts"] = np.int64(cutoff + horizon_s - 1)
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=[*LABEL_COLUMNS, *CANDIDATE_FEATURES])
    return _finish(_with_keys(data, pd.concat(frames, ignore_index=True)))


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Deterministic order, query ids ascending in that order, stable example ids; codes dropped."""
    frame = frame.sort_values(["event_ts", "user_key", "product_id"], kind="stable").reset_index(drop=True)
    keys = frame["user_key"].astype(str) + "@" + frame["event_ts"].astype(str)
    frame[GROUP] = pd.factorize(keys, sort=False)[0].astype("int64")
    frame["example_id"] = keys + ":" + frame["product_id"].astype(str)
    frame["item_id"] = frame["product_id"]
    frame["catalog_size"] = frame["catalog_size"].astype("int64")
    return frame.drop(columns=["user", "item"])


def _commerce_for(conn: Connection, first_cutoff: int, end_ts: int, config: RecsConfig) -> CommerceData:
    start = first_cutoff - config.history_days * DAY_S
    return load_commerce(conn, start, end_ts, watch_start_ts=first_cutoff - 28 * DAY_S)


def make_label_builder(config: RecsConfig = CONFIG) -> Any:
    """The spec's build_labels for a config: daily cut-offs over the window, next-horizon purchases."""

    def build_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
        cutoffs = cutoffs_in(window, config)
        horizon = max(window.horizon_s, DAY_S)
        if not cutoffs:
            return pd.DataFrame(columns=[*LABEL_COLUMNS, *CANDIDATE_FEATURES])
        data = _commerce_for(conn, cutoffs[0], window.end_ts, config)
        return build_examples(data, cutoffs, horizon, config)

    return build_labels


# --- scoring -----------------------------------------------------------------------------------


def scoring_users(data: CommerceData, as_of: int, config: RecsConfig = CONFIG) -> list[str]:
    """Users with a view or an order over the popularity window before as_of (the commerce audience)."""
    start = as_of - config.popularity_days * DAY_S
    codes = [
        frame.loc[(frame["event_ts"] >= start) & (frame["event_ts"] < as_of), "user"].to_numpy()
        for frame in (data.orders, data.views)
    ]
    return [str(k) for k in data.users[np.unique(np.concatenate(codes)).astype(np.int64)]]


FRESH_DAYS = 2  # scoring refuses commerce data whose newest validated day is older than this


def check_fresh(conn: Connection, as_of: int) -> None:
    """StaleFeatures unless orders or product views hold a validated partition in the last FRESH_DAYS days."""
    from tasks.models.scoring_frame import StaleFeatures

    ps = partition_status
    newest = conn.execute(
        select(func.max(ps.c.partition_date)).where(
            and_(
                ps.c.table_name.in_(LABEL_SOURCES[:2]),
                ps.c.status == "validated",
                ps.c.partition_date < _date(as_of - 1) + dt.timedelta(days=1),
            )
        )
    ).scalar_one()
    if newest is None or newest < _date(as_of - 1) - dt.timedelta(days=FRESH_DAYS - 1):
        raise StaleFeatures(
            f"product_recs: the newest validated partition of {' or '.join(LABEL_SOURCES[:2])} "
            f"({newest or 'none'}) is more than {FRESH_DAYS} days before as_of "
            f"{dt.datetime.fromtimestamp(as_of, dt.UTC).isoformat()}; ingest and validate recent data first"
        )


def make_scoring_frame_builder(config: RecsConfig = CONFIG) -> Any:
    """The spec's build_scoring_frame: candidates and features of every commerce user at as_of."""

    def build_scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
        from tasks.models.training import epoch_seconds

        ts = epoch_seconds(as_of)
        with engine.connect() as conn:
            check_fresh(conn, ts)
            data = _commerce_for(conn, ts, ts, config)
        users = np.unique(_codes(data.users, scoring_users(data, ts, config)))
        rows = _candidates(data, ts, users, config)
        rows["event_ts"] = np.int64(ts)
        rows["n_relevant"] = np.int64(0)
        return _finish(_with_keys(data, rows))

    return build_scoring_frame


def format_scores(spec: ModelSpec, frame: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The top K products per user: entity_key = user_key, item = product_id, rank 1..K, score."""
    scored = pd.DataFrame(
        {
            "query": frame[GROUP].to_numpy("int64"),
            "row": np.arange(len(frame)),
            "entity_key": frame["user_key"].astype(str).to_numpy(),
            "item": frame["product_id"].astype(str).to_numpy(),
            "score": np.asarray(predictions["prediction"], dtype="float64"),
        }
    )
    scored = scored.sort_values(["query", "score", "row"], ascending=[True, False, True], kind="stable")
    scored["rank"] = scored.groupby("query").cumcount() + 1
    top = scored[scored["rank"] <= TOP_K]
    return top[["entity_key", "item", "rank", "score"]].reset_index(drop=True)


# --- the re-ranker -------------------------------------------------------------------------------

RANKER_DEFAULTS: dict[str, Any] = {
    "n_estimators": 400,
    "learning_rate": 0.05,
    "max_depth": 4,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "early_stopping_rounds": 40,
    # One sampled pair per relevant row, averaged: on sparse purchase labels it beat top-k pairs.
    "lambdarank_pair_method": "mean",
    "lambdarank_num_pair_per_sample": 1,
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


class ProductRanker:
    """XGBoost rank:ndcg over candidate rows grouped by ``query_id``; scores in (0, 1) by a sigmoid.

    ``fit`` drops queries without a bought candidate (they carry no ranking signal) and sorts
    rows by query, as XGBoost requires; ``eval_set`` drives early stopping on NDCG@10.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, group_column: str = GROUP) -> None:
        self.params = dict(params or {})
        self.group_column = group_column
        self.features_: list[str] = []
        self.model_: XGBRanker | None = None
        self.best_iteration: int | None = None

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.features_ if c not in X.columns]
        if missing:
            raise ValueError(f"ranker input lacks columns {missing}")
        return pd.DataFrame(
            {c: pd.to_numeric(X[c]).to_numpy("float64", na_value=np.nan) for c in self.features_},
            index=X.index,
        )

    def _grouped(self, X: pd.DataFrame, y: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        labels = np.asarray(y, dtype="float64")
        qid = X[self.group_column].to_numpy("int64")
        positive = pd.Series(labels).groupby(qid).transform("max").to_numpy() > 0
        order = np.argsort(qid[positive], kind="stable")
        rows = np.flatnonzero(positive)[order]
        return self._matrix(X.iloc[rows]), labels[rows], qid[rows]

    def fit(
        self, X: pd.DataFrame, y: Any, eval_set: Sequence[tuple[pd.DataFrame, Any]] | None = None
    ) -> ProductRanker:
        """Fit the ranker; early stopping on the first eval_set pair when it holds a bought candidate."""
        if self.group_column not in X.columns:
            raise ValueError(f"ranker input lacks the query column {self.group_column!r}")
        self.features_ = [c for c in X.columns if c != self.group_column]
        x_train, y_train, q_train = self._grouped(X, y)
        if len(y_train) == 0:
            raise ValueError("no query with a bought candidate to learn from")
        params = {**RANKER_DEFAULTS, **{k: v for k, v in self.params.items() if k != "seed"}}
        evals = []
        if eval_set:
            x_valid, y_valid, q_valid = self._grouped(*eval_set[0])
            if len(y_valid):
                evals = [(x_valid, y_valid, q_valid)]
        if not evals:
            params["early_stopping_rounds"] = None
        model = XGBRanker(
            objective="rank:ndcg",
            eval_metric="ndcg@10",
            tree_method="hist",
            n_jobs=int(self.params.get("n_jobs", 1)),
            random_state=int(self.params.get("seed", 0)),
            **params,
        )
        kwargs: dict[str, Any] = {"qid": q_train, "verbose": False}
        if evals:
            kwargs["eval_set"] = [(e[0], e[1]) for e in evals]
            kwargs["eval_qid"] = [e[2] for e in evals]
        model.fit(x_train, y_train, **kwargs)
        self.model_ = model
        best = getattr(model, "best_iteration", None) if evals else None
        self.best_iteration = None if best is None else int(best)
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Raw ranking margins (best iteration when early-stopped)."""
        if self.model_ is None:
            raise ValueError("ProductRanker is not fitted")
        return np.asarray(self.model_.predict(self._matrix(X)), dtype="float64")

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Scores in (0, 1): the sigmoid of the margin, so order within a query is the ranker's."""
        return _sigmoid(self.decision_function(X))

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """The prediction frame the lifecycle reads: one "prediction" column."""
        return pd.DataFrame({"prediction": self.predict(X)}, index=X.index)

    def get_booster(self) -> Any:
        """The fitted booster (for feature-importance pictures)."""
        if self.model_ is None:
            raise ValueError("ProductRanker is not fitted")
        return self.model_.get_booster()


def make_estimator(params: Mapping[str, Any]) -> ProductRanker:
    """A fresh re-ranker for the spec's params."""
    return ProductRanker(params)


# --- evaluation helpers: metrics at any K, pictures -------------------------------------------


def ranking_at_k(frame: pd.DataFrame, score: str | np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """NDCG@K, Recall@K and HitRate@K for each K, by the metric registry's definitions (ties: row order)."""
    values = frame[score].to_numpy("float64") if isinstance(score, str) else np.asarray(score, "float64")
    cols = {c: frame[c].to_numpy() for c in ("label", GROUP, "n_relevant") if c in frame.columns}
    cols["prediction"] = values
    ones = np.ones((1, len(frame)))
    out: dict[str, float] = {}
    for k in ks:
        for name, factory in (
            ("ndcg", ranking.ndcg_at),
            ("recall", ranking.recall_at),
            ("hit_rate", ranking.hit_rate_at),
        ):
            out[f"{name}_{k}"] = float(factory(k)(cols, ones)[0])
    return out


def ranking_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Ranking metrics by K, model vs popularity, and hit rate by K per user type (ModelSpec.plots)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {"prediction": "model", "baseline_prediction": "popularity"}
    return [
        plot_ranking_metrics_at_k(frame, folder / "ranking_at_k.png", names, KS),
        plot_hit_rate_at_k(frame, folder / "hit_rate_at_k_by_user_type.png", names, "user_type", KS),
    ]


# --- the spec ------------------------------------------------------------------------------------

POLICY = PromotionPolicy(
    value_thresholds=(
        ValueThreshold("ndcg_10", lower=0.04),
        ValueThreshold("recall_20", lower=0.10),
        ValueThreshold("hit_rate_10", lower=0.08),
    ),
    change_thresholds=(
        ChangeThreshold("ndcg_10", slack=-0.01),
        ChangeThreshold("recall_20", slack=-0.02),
    ),
    significance=(SignificanceRule("ndcg_10", against="baseline", confidence=0.95, min_delta=0.0),),
    beat_baseline=("ndcg_10",),
)

product_recs = ModelSpec(
    name="product_recs",
    kind="ranking",
    description=(
        "Which products to show a user in live commerce: candidates from item-kNN co-occurrence, "
        "truncated SVD, the user's own products, the shelves of the streamers they watch and "
        "popularity, re-ranked by XGBoost rank:ndcg; one query per (user, day) with a purchase."
    ),
    build_labels=make_label_builder(CONFIG),
    feature_refs=FEATURE_REFS,
    context_features=CONTEXT,
    categorical=(),
    make_estimator=make_estimator,
    params={"n_estimators": 400, "learning_rate": 0.05, "max_depth": 4},
    baseline="column:popularity",
    metrics=METRICS,
    primary_metric="ndcg_10",
    slices=("user_type",),
    policy=POLICY,
    scoring=ScoringTarget(entity="user", key="user_key", score_range=(0.0, 1.0)),
    label_sources=LABEL_SOURCES,
    horizon_days=1,
    training_days=21,
    split=(0.7, 0.15, 0.15),
    seed=7,
    build_scoring_frame=make_scoring_frame_builder(CONFIG),
    format_scores=format_scores,
    plots=ranking_plots,
)
