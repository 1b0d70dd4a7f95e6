"""What every metric module shares: the signature, safe division and group (query) weights.

A metric is ``fn(cols, w) -> values``: ``cols`` maps column names ("label", "prediction",
prediction extras such as "lower"/"upper", and every evaluation-frame column) to 1-D arrays
of n rows; ``w`` is (k, n) row weights of k bootstrap replicates (one row of ones for the point
estimate). The result has shape (k,). Undefined values are NaN, never exceptions.

Each module registers its metrics as ``MetricDef`` entries: the function with its direction
(higher or lower is better, or a target value such as 1) and whether a bootstrap interval of it
means anything, so a metric's direction is declared where the metric is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

Array = np.ndarray
Cols = Mapping[str, Array]
Metric = Callable[[Cols, Array], Array]


@dataclass(frozen=True)
class MetricDef:
    """A registered metric: its function, which way is better, and whether it can be bootstrapped.

    ``higher_is_better`` is None for a metric with a target value rather than a direction (the
    ratio of predictions to outcomes is best at 1): such a metric is only ever bounded by value
    thresholds. ``bootstrap`` is False when resampling rows leaves the value unchanged or
    meaningless (a catalogue-wide coverage, a fit-time stability, an O(n²) clustering score).
    """

    compute: Metric
    higher_is_better: bool | None
    bootstrap: bool = True

    def __call__(self, cols: Cols, w: Array) -> Array:
        """The metric's values for each replicate's row weights."""
        return self.compute(cols, w)


def higher(compute: Metric, *, bootstrap: bool = True) -> MetricDef:
    """A metric for which a larger value is better."""
    return MetricDef(compute, True, bootstrap)


def lower(compute: Metric, *, bootstrap: bool = True) -> MetricDef:
    """A metric for which a smaller value is better."""
    return MetricDef(compute, False, bootstrap)


def on_target(compute: Metric) -> MetricDef:
    """A metric with a target value, not a direction (bounded by value thresholds only)."""
    return MetricDef(compute, None)


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
