"""Capacity-plan metrics (capacity_plan): filled in with the planning model."""

from __future__ import annotations

from tasks.models.metrics.common import Metric

METRICS: dict[str, Metric] = {}
NO_BOOTSTRAP: set[str] = set()
