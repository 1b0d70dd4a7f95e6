"""Clustering metrics (user_segments): silhouette, Davies–Bouldin and the fit-time bootstrap stability.

``cols["prediction"]`` is each row's segment id. The space the segments are judged in:
``emb_0``, ``emb_1``, ... when the caller supplies coordinates; otherwise the user_segments
behaviour space (log1p activity and spend) built from the evaluated rows' feature columns and
standardised on those rows. So the candidate, the champion re-scored on the same holdout, and
the value-tier baseline (whose prediction column holds its tier ids) are all measured in one
space that depends on no model's fitted scaler. ``stability`` is the model's fit-time bootstrap
stability, carried as a constant prediction column (NaN for a baseline, which has none).

All three describe one fitted partition, not an average over rows, so they get no bootstrap CI.
Weights are multiplicities (a bootstrap count of 2 is two copies of the row).
"""

from __future__ import annotations

import numpy as np

from tasks.models.metrics.common import Array, Cols, MetricDef, higher, lower, safe_div

MAX_ROWS = 10_000  # silhouette is O(n²): larger frames are judged on a fixed random subset
CHUNK = 1_024  # rows of the distance matrix held at once


def coordinates(cols: Cols) -> Array | None:
    """(n, d) coordinates of the evaluated rows, or None when the columns to build them are absent."""
    # Imported here: the catalog imports the evaluation framework, which imports this registry.
    from tasks.models.catalog.user_segments import USER_DIMENSIONS, has_columns, space_matrix, standardise

    if "emb_0" in cols:
        d = 0
        while f"emb_{d}" in cols:
            d += 1
        return np.column_stack([np.asarray(cols[f"emb_{i}"], dtype="float64") for i in range(d)])
    if has_columns(cols, USER_DIMENSIONS):
        return standardise(space_matrix(cols, USER_DIMENSIONS))
    return None


def _segments(cols: Cols) -> tuple[Array, int] | None:
    """Segment codes 0..K-1 of the rows (None when a prediction is missing)."""
    raw = np.asarray(cols["prediction"], dtype="float64")
    if raw.size == 0 or not np.isfinite(raw).all():
        return None
    _, codes = np.unique(raw, return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1


def _inputs(cols: Cols, w: Array) -> tuple[Array, Array, int, Array] | None:
    seg = _segments(cols)
    x = coordinates(cols)
    if seg is None or x is None or not np.isfinite(x).all():
        return None
    codes, k = seg
    w = np.atleast_2d(np.asarray(w, dtype="float64"))
    if len(codes) > MAX_ROWS:
        keep = np.sort(np.random.default_rng(0).choice(len(codes), MAX_ROWS, replace=False))
        codes, x, w = codes[keep], x[keep], w[:, keep]
    return x, codes, k, w


def _silhouette_one(x: Array, codes: Array, k: int, w: Array) -> float:
    """Weighted silhouette: with weights of 1 the same value as sklearn's silhouette_score."""
    rows = np.flatnonzero(w > 0)
    sizes = np.bincount(codes, weights=w, minlength=k)
    if np.count_nonzero(sizes) < 2 or len(rows) < 2:
        return float("nan")
    one_hot = np.zeros((len(codes), k))
    one_hot[np.arange(len(codes)), codes] = w  # weighted membership of every row
    sq = (x**2).sum(axis=1)
    values = np.zeros(len(rows))
    for start in range(0, len(rows), CHUNK):
        idx = rows[start : start + CHUNK]
        d2 = sq[idx, None] + sq[None, :] - 2.0 * x[idx] @ x.T
        dist = np.sqrt(np.maximum(d2, 0.0))
        dist[np.arange(len(idx)), idx] = 0.0  # a row's distance to itself, exactly
        sums = dist @ one_hot  # (m, k): weighted distance sums to each segment
        own = codes[idx]
        # A row's own copies (its weight) sit at distance 0; the others are the other members.
        others = sizes[own] - 1.0
        a = safe_div(sums[np.arange(len(idx)), own], others)
        mean_to = safe_div(sums, np.broadcast_to(sizes, sums.shape))
        mean_to[np.isnan(mean_to)] = np.inf  # an empty segment is nobody's neighbour
        mean_to[np.arange(len(idx)), own] = np.inf
        b = mean_to.min(axis=1)
        s = safe_div(b - a, np.maximum(a, b))
        values[start : start + len(idx)] = np.where(others > 0, np.nan_to_num(s), 0.0)  # singleton: 0
    return float(np.average(values, weights=w[rows]))


def silhouette(cols: Cols, w: Array) -> Array:
    """Mean silhouette width in [-1, 1] (higher: tighter, better separated segments)."""
    got = _inputs(cols, w)
    if got is None:
        return np.full(np.atleast_2d(w).shape[0], np.nan)
    x, codes, k, w = got
    return np.array([_silhouette_one(x, codes, k, row) for row in w])


def _davies_bouldin_one(x: Array, codes: Array, k: int, w: Array) -> float:
    sizes = np.bincount(codes, weights=w, minlength=k)
    present = np.flatnonzero(sizes > 0)
    if len(present) < 2:
        return float("nan")
    one_hot = np.zeros((len(codes), k))
    one_hot[np.arange(len(codes)), codes] = w
    centroids = (one_hot.T @ x)[present] / sizes[present, None]
    spread = np.linalg.norm(x[:, None, :] - centroids[None, :, :], axis=2)  # (n, present)
    member = one_hot[:, present]
    scatter = (member * spread).sum(axis=0) / sizes[present]
    gaps = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=2)
    gaps[gaps == 0] = np.inf  # as sklearn: the diagonal (and coinciding centroids) never count
    ratio = (scatter[:, None] + scatter[None, :]) / gaps
    return float(np.mean(ratio.max(axis=1)))


def davies_bouldin(cols: Cols, w: Array) -> Array:
    """Davies–Bouldin index, ≥ 0 (lower: segments compact relative to their separation)."""
    got = _inputs(cols, w)
    if got is None:
        return np.full(np.atleast_2d(w).shape[0], np.nan)
    x, codes, k, w = got
    return np.array([_davies_bouldin_one(x, codes, k, row) for row in w])


def stability(cols: Cols, w: Array) -> Array:
    """The model's fit-time bootstrap stability (mean ARI between refits); NaN without that column."""
    w = np.atleast_2d(np.asarray(w, dtype="float64"))
    if "stability" not in cols:
        return np.full(w.shape[0], np.nan)
    values = np.asarray(cols["stability"], dtype="float64")
    ok = np.isfinite(values)
    return safe_div(w[:, ok] @ values[ok], w[:, ok].sum(axis=1))


METRICS: dict[str, MetricDef] = {
    "silhouette": higher(silhouette, bootstrap=False),
    "davies_bouldin": lower(davies_bouldin, bootstrap=False),
    "stability": higher(stability, bootstrap=False),
}
