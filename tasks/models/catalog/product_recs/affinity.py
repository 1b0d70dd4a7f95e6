"""product_recs' streamer affinity: which shelves a user is likely to see next, also never-watched ones.

In live commerce a product is bought while its streamer is on screen, and most purchases come
from streamers the user has not watched before: people pick streams by the kind of content they
like and by how popular a streamer is. So the chance that a user watches streamer s is
estimated, from watch time before the cut-off only, as

    affinity(u, s) = share of u's watch time in s's category  ×  s's share of its category's watch time

with the user's shares smoothed towards the platform's category mix by a prior worth one typical
(user, streamer, day) watch, so a user with one short session is not all-in on one category.
A product's share of its shelf's orders (Laplace-smoothed, so an unsold product keeps a share)
turns the streamer's affinity into the product's: ``expected = affinity × shelf_share``.

Within one category the affinity orders streamers as their category shares do, so a user's K
best streamers are always among the K best of each category: candidates come from a dense
(users × categories·K) block, never a users × streamers matrix, which keeps 200,000 users cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from tasks.featurestore.definitions import DAY_S
from tasks.models.catalog.product_recs.data import CommerceData, shelf_items
from tasks.models.families.collaborative import ItemCooccurrence, interaction_matrix

SHARE_DAYS = 7  # the streamer's recent audience (popularity grows with followers)
INTEREST_DAYS = 28  # the user's category mix


@dataclass
class StreamerAffinity:
    """Per query user the smoothed category mix, per streamer its share of its category."""

    user_category: np.ndarray  # (queries, categories), rows sum to 1
    streamer_share: np.ndarray  # (streamers,), 0 for a streamer nobody watched
    streamer_category: np.ndarray  # (streamers,), -1 when unknown
    repeat_share: float  # the share of last week's watch time spent on streamers seen before it

    def score(self, query: np.ndarray, streamer: np.ndarray) -> np.ndarray:
        """affinity(u, s) for pairs of query row and streamer code (NaN where s is unknown)."""
        streamer = np.asarray(streamer, dtype=np.int64)
        if self.user_category.shape[1] == 0 or len(self.streamer_category) == 0:
            return np.full(len(streamer), np.nan)  # no streamer or no watched category at all
        ok = streamer >= 0
        cat = np.where(ok, self.streamer_category[np.maximum(streamer, 0)], -1)
        ok &= cat >= 0
        interest = self.user_category[np.asarray(query, dtype=np.int64), np.maximum(cat, 0)]
        share = self.streamer_share[np.maximum(streamer, 0)]
        return np.where(ok, interest * share, np.nan)

    def watch_share(self, affinity: np.ndarray, own_share: np.ndarray) -> np.ndarray:
        """The expected share of the user's next watch time on the streamer.

        People return to streamers they watch and discover others by taste and popularity: the
        mix weight is the platform's own repeat share (measured before the cut-off).
        """
        return self.repeat_share * np.nan_to_num(own_share) + (1.0 - self.repeat_share) * affinity


def streamer_affinity(data: CommerceData, cutoff: int, query_users: np.ndarray) -> StreamerAffinity:
    """The affinity model from watch time before the cut-off (sorted unique query user codes)."""
    n_cat = len(data.stream_categories)
    day = data.watch["day_ts"].to_numpy()
    category = data.watch["category"].to_numpy()
    seconds = data.watch["seconds"].to_numpy("float64")
    streamer = data.watch["streamer"].to_numpy()
    user = data.watch["user"].to_numpy()
    known = category >= 0

    streamer_category = np.asarray(data.streamer_category, dtype=np.int64)
    # Streamers keep weekly schedules: the audience on the coming day's weekday over the past
    # weeks says who will be live; the last week's audience, mixed in, keeps rising streamers.
    weekday = (
        known & (day < cutoff) & (day >= cutoff - INTEREST_DAYS * DAY_S) & ((cutoff - day) % (7 * DAY_S) == 0)
    )
    recent = known & (day < cutoff) & (day >= cutoff - SHARE_DAYS * DAY_S)
    share = 0.5 * _category_share(
        streamer[weekday], category[weekday], seconds[weekday], streamer_category, n_cat
    )
    share += 0.5 * _category_share(
        streamer[recent], category[recent], seconds[recent], streamer_category, n_cat
    )

    month = known & (day < cutoff) & (day >= cutoff - INTEREST_DAYS * DAY_S)
    mix = np.bincount(category[month], weights=seconds[month], minlength=n_cat)
    mix = mix / mix.sum() if mix.sum() > 0 else np.full(n_cat, 1.0 / max(n_cat, 1))
    # The prior: one typical (user, streamer, day) watch, spread as the platform's category mix.
    prior = float(np.median(seconds[month])) if month.any() else 0.0
    n_q = len(query_users)
    counts = np.zeros((n_q, n_cat))
    mine = month & (user >= 0)
    q = np.searchsorted(query_users, user[mine])
    hit = (q < n_q) & (query_users[np.minimum(q, max(n_q - 1, 0))] == user[mine]) if n_q else q < 0
    np.add.at(counts, (q[hit], category[mine][hit]), seconds[mine][hit])
    counts += prior * mix[None, :]
    totals = counts.sum(axis=1, keepdims=True)
    user_category = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), mix[None, :])
    return StreamerAffinity(user_category, share, streamer_category, _repeat_share(data, cutoff))


def _repeat_share(data: CommerceData, cutoff: int) -> float:
    """Of the last SHARE_DAYS' watch seconds, the share on (user, streamer) pairs seen in the weeks before.

    The mix weight between a user's own streamers and new ones, computed from the data by this
    rule at every cut-off (0.5 when there is no watch time to measure it on).
    """
    watch = data.watch[data.watch["user"].to_numpy() >= 0]
    day = watch["day_ts"].to_numpy()
    n_str = max(len(data.streamers), 1)
    keys = watch["user"].to_numpy() * n_str + watch["streamer"].to_numpy()
    seconds = watch["seconds"].to_numpy("float64")
    last = (day < cutoff) & (day >= cutoff - SHARE_DAYS * DAY_S)
    before = (day < cutoff - SHARE_DAYS * DAY_S) & (day >= cutoff - INTEREST_DAYS * DAY_S)
    total = seconds[last].sum()
    if total <= 0 or not before.any():
        return 0.5
    return float(seconds[last & np.isin(keys, keys[before])].sum() / total)


def _category_share(
    streamer: np.ndarray, category: np.ndarray, seconds: np.ndarray, streamer_category: np.ndarray, n_cat: int
) -> np.ndarray:
    """Each streamer's share of its category's watch seconds in the given rows (0 if none)."""
    n_str = len(streamer_category)
    by_streamer = np.bincount(streamer, weights=seconds, minlength=n_str)
    by_category = np.bincount(category, weights=seconds, minlength=n_cat)
    cat_total = by_category[np.maximum(streamer_category, 0)] if n_cat else np.zeros(n_str)
    ok = (streamer_category >= 0) & (cat_total > 0)
    return np.where(ok, by_streamer / np.where(ok, cat_total, 1.0), 0.0)


def shelf_share(data: CommerceData, cutoff: int, history_start: int, items: np.ndarray) -> np.ndarray:
    """Each item's Laplace-smoothed share of its streamer's orders in [history_start, cutoff).

    NaN for an item on no shelf.
    """
    listed = data.item_listed_ts < cutoff
    streamer_of = np.where(listed, data.item_streamer, -1)
    ts = data.orders["event_ts"].to_numpy()
    window = (ts >= history_start) & (ts < cutoff)
    ordered = np.bincount(data.orders["item"].to_numpy()[window], minlength=len(data.items)).astype("float64")
    on_shelf = streamer_of >= 0
    n_str = max(len(data.streamers), 1)
    shelf_orders = np.bincount(streamer_of[on_shelf], weights=ordered[on_shelf], minlength=n_str)
    shelf_size = np.bincount(streamer_of[on_shelf], minlength=n_str).astype("float64")
    s = streamer_of[items]
    has = s >= 0
    safe = np.maximum(s, 0)
    value = (ordered[items] + 1.0) / (shelf_orders[safe] + np.maximum(shelf_size[safe], 1.0))
    return np.where(has, value, np.nan)


def cowatch(data: CommerceData, cutoff: int, query_users: np.ndarray, neighbours: int) -> sp.csr_matrix:
    """(queries × streamers) co-watch scores: item-kNN on the users × streamers watch-time matrix.

    Viewers of one streamer watch the same others (the same time zone, region and taste), which
    category affinity alone cannot tell apart among many streamers of a category. Each query
    user's row spreads their own 28-day watch shares over each watched streamer's nearest
    neighbours; a user who watched nothing has an empty row.
    """
    n_str = max(len(data.streamers), 1)
    day = data.watch["day_ts"].to_numpy()
    user = data.watch["user"].to_numpy()
    rows = data.watch[(day < cutoff) & (day >= cutoff - INTEREST_DAYS * DAY_S) & (user >= 0)]
    viewers, local_user = np.unique(rows["user"].to_numpy(), return_inverse=True)
    minutes = rows["seconds"].to_numpy("float64") / 60.0
    matrix = interaction_matrix(local_user, rows["streamer"].to_numpy(), minutes, (len(viewers), n_str))
    n_q = len(query_users)
    if matrix.nnz == 0 or n_q == 0:
        return sp.csr_matrix((n_q, n_str))
    similarity = ItemCooccurrence(neighbours).fit(matrix).similarity
    assert similarity is not None
    pos = np.minimum(np.searchsorted(viewers, query_users), len(viewers) - 1)
    found = viewers[pos] == query_users
    picked = matrix[pos].multiply(found[:, None]).tocsr()
    sums = np.asarray(picked.sum(axis=1)).ravel()
    picked = sp.diags(np.where(sums > 0, 1.0 / np.where(sums > 0, sums, 1.0), 0.0)) @ picked
    return (picked @ similarity).tocsr()


def streamers_per_user(per_source: int, shelf_sizes: np.ndarray) -> int:
    """How many best streamers' shelves make about per_source products: per_source / mean shelf size."""
    sizes = shelf_sizes[shelf_sizes > 0]
    if len(sizes) == 0:
        return 0
    return max(1, int(np.ceil(per_source / float(sizes.mean()))))


def affinity_candidates(
    affinity: StreamerAffinity,
    streamer_of: np.ndarray,
    item_share: np.ndarray,
    per_source: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(query, item, rank, expected) of each user's best per_source items by affinity × shelf share.

    ``streamer_of`` and ``item_share`` are per candidate item (local codes; streamer -1 = none).
    """
    empty = np.zeros(0, dtype=np.int64)
    n_q = affinity.user_category.shape[0]
    on_shelf = streamer_of >= 0
    if n_q == 0 or not on_shelf.any():
        return empty, empty, empty, empty.astype("float64")
    shelves = np.unique(streamer_of[on_shelf])
    sizes = np.bincount(streamer_of[on_shelf])
    k = streamers_per_user(per_source, sizes)
    cat = affinity.streamer_category[shelves]
    share = affinity.streamer_share[shelves]
    shelves, cat, share = shelves[cat >= 0], cat[cat >= 0], share[cat >= 0]
    # The k best shelves of each category, by share (ties: lower streamer code).
    order = np.lexsort((shelves, -share, cat))
    cat_sorted = cat[order]
    rank_in_cat = np.arange(len(order)) - np.searchsorted(cat_sorted, cat_sorted)
    top = order[rank_in_cat < k]
    block_streamers, block_cat = shelves[top], cat[top]
    scores = affinity.user_category[:, block_cat] * affinity.streamer_share[block_streamers][None, :]
    k = min(k, len(block_streamers))
    if k < len(block_streamers):
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        best = np.tile(np.arange(len(block_streamers)), (n_q, 1))
    q = np.repeat(np.arange(n_q), best.shape[1])
    chosen = block_streamers[best.ravel()]
    aff = scores[q, best.ravel()]
    rep, items = shelf_items(streamer_of, chosen)  # join (query, streamer) to its shelf items
    expected = aff[rep] * np.nan_to_num(item_share[items], nan=0.0)
    q_items = q[rep]
    order = np.lexsort((items, -expected, q_items))
    q_items, items, expected = q_items[order], items[order], expected[order]
    rank = np.arange(len(q_items)) - np.searchsorted(q_items, q_items) + 1
    keep = (rank <= per_source) & (expected > 0)
    return q_items[keep], items[keep], rank[keep], expected[keep]
