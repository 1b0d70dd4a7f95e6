"""product_recs' candidates: collaborative filtering, the user's own products, the shelves of the
streamers the user watches and popularity, each candidate row with its features at one cut-off.

Everything here reads a :class:`~tasks.models.catalog.product_recs.data.CommerceData` and a cut-off
and looks only at interactions strictly before it, so training (daily cut-offs) and scoring
(``as_of``) make candidates and features the very same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tasks.featurestore.definitions import DAY_S
from tasks.models.catalog.product_recs.affinity import (
    affinity_candidates,
    cowatch,
    shelf_share,
    streamer_affinity,
    streamers_per_user,
)
from tasks.models.catalog.product_recs.data import CommerceData, codes_of, shelf_items
from tasks.models.families.collaborative import (
    ItemCooccurrence,
    MatrixFactorisation,
    interaction_matrix,
    top_n,
)

# Computed per candidate row at the cut-off, from validated data before it (the product's buyers,
# orders and views come from the store's product_popularity view instead).
CANDIDATE_FEATURES: tuple[str, ...] = (
    "cooc_score",
    "cooc_rank",
    "svd_score",
    "svd_rank",
    "history_rank",
    "shelf_rank",
    "affinity_rank",
    "streamer_affinity",
    "shelf_share",
    "user_streamer_share",
    "cowatch_score",
    "cowatch_rank",
    "expected_share",
    "days_since_user_streamer",
    "popularity",
    "popularity_rank",
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


def candidate_rows(
    data: CommerceData, cutoff: int, query_users: np.ndarray, config: RecsConfig
) -> pd.DataFrame:
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

    # Streamer affinity: the shelves the user is likely to see next, also of streamers never
    # watched (category interest × the streamer's share of its category), ranked by the
    # product's expected share of the user's purchases.
    affinity = streamer_affinity(data, cutoff, query_users)
    streamer_known = np.where(data.item_listed_ts[known] < cutoff, data.item_streamer[known], -1)
    share_known = shelf_share(data, cutoff, cutoff - config.history_days * DAY_S, known)
    aff_q, aff_item, aff_rank, _ = affinity_candidates(
        affinity, streamer_known, share_known, config.per_source
    )
    sources["affinity_rank"] = (aff_q, aff_item, aff_rank)
    # Co-watch: the shelves of the streamers most watched by the viewers of the user's streamers.
    cowatched = cowatch(data, cutoff, query_users, config.neighbours)
    co_q, co_item, co_rank = _cowatch_candidates(cowatched, streamer_known, share_known, config.per_source)
    sources["cowatch_rank"] = (co_q, co_item, co_rank)

    # Popularity: orders over the baseline window, ties broken by product id.
    recent = (hist.is_order == 1) & (hist.ts >= cutoff - config.popularity_days * DAY_S)
    counts = np.bincount(local_item[recent], minlength=n_items).astype("float64")
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
    for name in ("cooc_rank", "svd_rank", "history_rank", "shelf_rank", "affinity_rank", "cowatch_rank"):
        sq, sc, sr = sources.get(name, (np.zeros(0, np.int64),) * 3)
        source_keys = sq * n_items + sc
        order = np.argsort(source_keys, kind="stable")
        out[name] = _find(source_keys[order], sr[order].astype("float64"), keys, np.nan)
    out["cooc_score"] = cooc_all[q, it]
    out["svd_score"] = svd_all[q, it]
    streamer_affinity_ = affinity.score(q, streamer_known[it])
    own = _watch_share(data, cutoff, query_users[q], streamer_known[it])
    out["streamer_affinity"] = streamer_affinity_
    out["shelf_share"] = share_known[it]
    out["user_streamer_share"] = own
    cw = np.asarray(cowatched[q, np.maximum(streamer_known[it], 0)]).ravel() if len(q) else np.zeros(0)
    out["cowatch_score"] = np.where(streamer_known[it] >= 0, cw, np.nan)
    out["expected_share"] = affinity.watch_share(streamer_affinity_, own) * share_known[it]
    out["days_since_user_streamer"] = _days_since_watch(data, cutoff, query_users[q], streamer_known[it])
    out["popularity"] = counts[it]
    out["popularity_rank"] = pop_rank[it]
    _add_context(out, data, hist, cutoff, config)
    out["user_type"] = np.where(is_warm[q], "warm", "cold")
    out["catalog_size"] = np.int64(n_items)
    return out


def _cowatch_candidates(
    cowatched: sp.csr_matrix, streamer_of: np.ndarray, item_share: np.ndarray, per_source: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, local item, rank): the shelves of each user's best co-watched streamers.

    Products ranked by co-watch score × shelf share; as many streamers as the affinity source.
    """
    empty = np.zeros(0, dtype=np.int64)
    on_shelf = streamer_of >= 0
    if cowatched.nnz == 0 or not on_shelf.any():
        return empty, empty, empty
    k = streamers_per_user(per_source, np.bincount(streamer_of[on_shelf]))
    has_shelf = np.zeros(cowatched.shape[1], dtype=bool)
    has_shelf[streamer_of[on_shelf]] = True
    coo = cowatched.tocoo()
    keep = has_shelf[coo.col] & (coo.data > 0)
    q, streamer, score = coo.row[keep], coo.col[keep], coo.data[keep]
    q, streamer, _ = _ranked(q, streamer, -score, k)
    value = np.asarray(cowatched[q, streamer]).ravel() if len(q) else np.zeros(0)
    rep, items = shelf_items(streamer_of, streamer)
    expected = value[rep] * np.nan_to_num(item_share[items], nan=0.0)
    return _ranked(q[rep], items, -expected, per_source)


def _watch_share(data: CommerceData, cutoff: int, user: np.ndarray, streamer: np.ndarray) -> np.ndarray:
    """The user's share of their last 28 days' watch seconds spent on the streamer (NaN off-shelf)."""
    n_str = max(len(data.streamers), 1)
    day = data.watch["day_ts"].to_numpy()
    rows = data.watch[(day < cutoff) & (day >= cutoff - 28 * DAY_S) & (data.watch["user"].to_numpy() >= 0)]
    viewer, seconds = rows["user"].to_numpy(), rows["seconds"].to_numpy("float64")
    uniq, pair_seconds = _keyed(viewer * n_str + rows["streamer"].to_numpy(), seconds)
    users, user_seconds = _keyed(viewer, seconds)
    mine = _find(uniq, pair_seconds, user * n_str + np.maximum(streamer, 0), 0.0)
    total = _find(users, user_seconds, user, 0.0)
    share = mine / np.where(total > 0, total, 1.0)
    return np.where(streamer >= 0, share, np.nan)


def _days_since_watch(data: CommerceData, cutoff: int, user: np.ndarray, streamer: np.ndarray) -> np.ndarray:
    """Days since the user last watched the streamer over the last 28 days, NaN if not then.

    The platform favours streamers a viewer saw lately, so recency says more than minutes do.
    """
    n_str = max(len(data.streamers), 1)
    day = data.watch["day_ts"].to_numpy()
    rows = data.watch[(day < cutoff) & (day >= cutoff - 28 * DAY_S) & (data.watch["user"].to_numpy() >= 0)]
    keys = rows["user"].to_numpy() * n_str + rows["streamer"].to_numpy()
    uniq, last = _keyed(keys, rows["day_ts"].to_numpy(), "max")
    found = _find(uniq, last, user * n_str + np.maximum(streamer, 0), np.nan)
    return np.where(streamer >= 0, (cutoff - found) / DAY_S, np.nan)


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
    rep, items = shelf_items(streamer_of, streamer)
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
    codes = codes_of(data.users, list(users))
    frame = candidate_rows(data, cutoff, np.unique(codes[codes >= 0]), config)
    return with_keys(data, frame)


def with_keys(data: CommerceData, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with their text keys (user_key, product_id) in front of the integer codes."""
    user, item = frame["user"].to_numpy("int64"), frame["item"].to_numpy("int64")
    keys = pd.DataFrame({"user_key": data.users[user], "product_id": data.items[item]}, index=frame.index)
    return pd.concat([keys, frame], axis=1)
