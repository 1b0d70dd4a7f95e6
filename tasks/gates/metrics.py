"""What the gate reads of an evaluation: finite metric values, and the structural shape of an evaluation.

Which way a metric is better is declared with the metric (tasks.models.metrics); the gate asks there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from tasks.models.metrics import higher_is_better

__all__ = ["EvaluationLike", "Interval", "finite_metric", "higher_is_better"]


class Interval(NamedTuple):
    """A metric's bootstrap interval on the n units (rows, or queries) it was computed on."""

    low: float
    point: float
    high: float
    n: int


def finite_metric(metrics: Mapping[str, float] | None, metric: str) -> float | None:
    """The metric as a finite float, or None when it is missing, NaN or infinite."""
    if metrics is None or metric not in metrics:
        return None
    try:
        value = float(metrics[metric])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class EvaluationLike(Protocol):
    """What the gate reads of ``tasks.models.evaluation.Evaluation``."""

    @property
    def metrics(self) -> Mapping[str, float]:
        """Overall metric values."""
        ...

    @property
    def by_slice(self) -> Mapping[str, Mapping[str, Mapping[str, float]]]:
        """slice column -> value -> metric -> value."""
        ...

    @property
    def n(self) -> int:
        """Examples evaluated."""
        ...
