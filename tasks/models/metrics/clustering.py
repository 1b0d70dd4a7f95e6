"""Clustering metrics (user_segments): filled in with the segmentation model."""

from __future__ import annotations

from tasks.models.metrics.common import Metric

METRICS: dict[str, Metric] = {}
NO_BOOTSTRAP: set[str] = set()
