"""Ranking metrics over queries: rows are (query, candidate), label = relevance (0/1), prediction = score.

Rows are grouped by the evaluation-frame column "query_id"; every metric is the weighted mean
over queries of a per-query value (bootstrap weights are constant within a query, so the
first row's weight is the query's). Candidates are ranked by score, descending; ties keep row
order. "n_relevant" (optional) is the query's relevant items in total, also those candidate
generation missed, so recall is honest about them.
"""

from __future__ import annotations

import numpy as np

from tasks.models.metrics.common import Array, Cols, Metric, MetricDef, group_index, higher, safe_div


def _ranked(cols: Cols) -> tuple[Array, Array, Array, Array]:
    """(query code, rank from 1, relevance, first-row index per query) with rows sorted per query."""
    y = np.asarray(cols["label"], dtype="float64")
    p = np.asarray(cols["prediction"], dtype="float64")
    codes, first = group_index(np.asarray(cols["query_id"]))
    order = np.lexsort((np.arange(len(p)), -p, codes))
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1]
    rank = np.arange(len(p)) - np.repeat(starts, np.diff(np.r_[starts, len(p)])) + 1
    out_rank = np.empty(len(p), dtype=np.int64)
    out_rank[order] = rank
    return codes, out_rank, y, first


def _per_query(values: Array, codes: Array, n_groups: int) -> Array:
    return np.bincount(codes, weights=values, minlength=n_groups)


def _mean_over_queries(per_query: Array, first: Array, w: Array) -> Array:
    if len(first) == 0:
        return np.full(w.shape[0], np.nan)
    wq = w[:, first]
    ok = np.isfinite(per_query)
    return safe_div(wq[:, ok] @ per_query[ok], wq[:, ok].sum(axis=1))


def _n_relevant(cols: Cols, y: Array, codes: Array, first: Array) -> Array:
    if "n_relevant" in cols:
        return np.asarray(cols["n_relevant"], dtype="float64")[first]
    return _per_query(y, codes, len(first))


def hit_rate_at(k: int) -> Metric:
    """The HitRate@k metric."""

    def hit_rate(cols: Cols, w: Array) -> Array:
        codes, rank, y, first = _ranked(cols)
        hits = _per_query(y * (rank <= k), codes, len(first)) > 0
        return _mean_over_queries(hits.astype("float64"), first, w)

    hit_rate.__doc__ = f"Share of queries with a relevant item in the top {k}."
    return hit_rate


def recall_at(k: int) -> Metric:
    """The Recall@k metric."""

    def recall(cols: Cols, w: Array) -> Array:
        codes, rank, y, first = _ranked(cols)
        found = _per_query(y * (rank <= k), codes, len(first))
        return _mean_over_queries(safe_div(found, _n_relevant(cols, y, codes, first)), first, w)

    recall.__doc__ = f"Relevant items found in the top {k} over all relevant items of the query."
    return recall


def ndcg_at(k: int) -> Metric:
    """The NDCG@k metric."""

    def ndcg(cols: Cols, w: Array) -> Array:
        codes, rank, y, first = _ranked(cols)
        dcg = _per_query(np.where(rank <= k, y / np.log2(rank + 1), 0.0), codes, len(first))
        n_rel = np.minimum(_n_relevant(cols, y, codes, first), k).astype(np.int64)
        discounts = np.r_[0.0, np.cumsum(1 / np.log2(np.arange(2, k + 2)))]
        return _mean_over_queries(safe_div(dcg, discounts[n_rel]), first, w)

    ndcg.__doc__ = f"Normalised discounted cumulative gain at {k} (binary relevance)."
    return ndcg


def mrr(cols: Cols, w: Array) -> Array:
    """Mean reciprocal rank of the first relevant candidate (0 when none is relevant)."""
    codes, rank, y, first = _ranked(cols)
    best = np.full(len(first), np.inf)
    np.minimum.at(best, codes[y > 0], rank[y > 0])
    return _mean_over_queries(np.where(np.isfinite(best), 1 / best, 0.0), first, w)


def catalog_coverage_10(cols: Cols, w: Array) -> Array:
    """Distinct items shown in any top 10 over the catalogue size (the same for every replicate)."""
    _, rank, _, _ = _ranked(cols)
    if "item_id" not in cols or len(rank) == 0:
        return np.full(w.shape[0], np.nan)
    items = np.asarray(cols["item_id"])
    shown = len(np.unique(items[rank <= 10]))
    size = float(np.asarray(cols["catalog_size"], dtype="float64")[0]) if "catalog_size" in cols else 0.0
    size = size if size > 0 else float(len(np.unique(items)))
    return np.full(w.shape[0], shown / size)


METRICS: dict[str, MetricDef] = {
    "ndcg_10": higher(ndcg_at(10)),
    "recall_20": higher(recall_at(20)),
    "recall_10": higher(recall_at(10)),
    "hit_rate_1": higher(hit_rate_at(1)),
    "hit_rate_5": higher(hit_rate_at(5)),
    "hit_rate_10": higher(hit_rate_at(10)),
    "hit_rate_20": higher(hit_rate_at(20)),
    "mrr": higher(mrr),
    "catalog_coverage_10": higher(catalog_coverage_10, bootstrap=False),
}
