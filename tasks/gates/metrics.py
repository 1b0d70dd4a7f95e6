"""Metric direction (the one table of it), and the structural shape of an evaluation the gate reads."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

_HIGHER = (
    "auc",
    "pr_auc",
    "ndcg",
    "map",
    "mrr",
    "hit_rate",
    "recall",
    "precision",
    "silhouette",
    "lift",
    "gini",
    "coverage",
    "catalog_coverage",
    "ari",
    "stability",
)
_HIGHER_EXACT = frozenset({"stability", "accuracy", "f1", "r2", "coverage"})
_LOWER = (
    "log_loss",
    "ece",
    "normalized_entropy",
    "mase",
    "smape",
    "rmse",
    "mae",
    "mape",
    "pinball",
    "deviance",
    "brier",
    "tweedie_deviance",
    "davies_bouldin",
    "violation_rate",
    "overprovision",
    "cost",
)


def higher_is_better(metric: str) -> bool:
    """True when a larger value of the metric is better (auc, ndcg@10, recall…)."""
    base = metric.lower().split("@", 1)[0]
    if base in _HIGHER_EXACT or any(base == h or base.startswith(h + "_") for h in _HIGHER):
        return True
    if any(base == low or base.startswith(low + "_") for low in _LOWER):
        return False
    raise ValueError(f"unknown metric {metric!r}: its direction (higher or lower is better) is not declared")


def metric_value(metrics: Mapping[str, float] | None, metric: str) -> float | None:
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
