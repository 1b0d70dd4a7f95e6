"""What every metric module shares: the signature, safe division and group (query) weights.

A metric is ``fn(cols, w) -> values``: ``cols`` maps column names ("label", "prediction",
prediction extras such as "lower"/"upper", and every evaluation-frame column) to 1-D arrays
of n rows; ``w`` is (k, n) row weights of k bootstrap replicates (one row of ones for the point
estimate). The result has shape (k,). Undefined values are NaN, never exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

Array = np.ndarray
Cols = Mapping[str, Array]
Metric = Callable[[Cols, Array], Array]


def safe_div(num: Array, den: Array) -> Array:
    """num / den where den > 0, else NaN (elementwise)."""
    num, den = np.asarray(num, dtype="float64"), np.asarray(den, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_mean(values: Array, w: Array) -> Array:
    """Row-weighted mean of per-row values for each replicate (NaN rows are skipped)."""
    ok = np.isfinite(values)
    return safe_div(w[:, ok] @ values[ok], w[:, ok].sum(axis=1))


def group_index(groups: Array) -> tuple[Array, Array]:
    """(group code of every row, index of each group's first row), groups in first-seen order."""
    _, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    return codes.reshape(-1), first
