"""Forecast metrics: label = actual, prediction = point forecast (P50), lower/upper = P10/P90.

MASE divides each row's absolute error by its series' in-sample seasonal-naive MAE (the
evaluation-frame column "scale"), so errors of series on different scales average fairly.
"""

from __future__ import annotations

import numpy as np

from tasks.models.metrics.common import Array, Cols, MetricDef, higher, lower, safe_div, weighted_mean


def _yp(cols: Cols) -> tuple[Array, Array]:
    return np.asarray(cols["label"], dtype="float64"), np.asarray(cols["prediction"], dtype="float64")


def _column(cols: Cols, name: str, n: int) -> Array:
    if name not in cols:
        return np.full(n, np.nan)
    return np.asarray(cols[name], dtype="float64")


def mase(cols: Cols, w: Array) -> Array:
    """Mean absolute scaled error (below 1 beats the in-sample seasonal naive)."""
    y, p = _yp(cols)
    scale = _column(cols, "scale", len(y))
    scaled = np.where(scale > 0, np.abs(y - p) / np.where(scale > 0, scale, 1.0), np.nan)
    return weighted_mean(scaled, w)


def smape(cols: Cols, w: Array) -> Array:
    """Symmetric MAPE on a 0-2 scale: mean 2|y - p| / (|y| + |p|), 0 where both are 0."""
    y, p = _yp(cols)
    den = np.abs(y) + np.abs(p)
    values = np.where(den > 0, 2 * np.abs(y - p) / np.where(den > 0, den, 1.0), 0.0)
    return safe_div(w @ values, w.sum(axis=1))


def coverage_80(cols: Cols, w: Array) -> Array:
    """Share of actuals inside [P10, P90] (target 0.8)."""
    y, _ = _yp(cols)
    lower, upper = _column(cols, "lower", len(y)), _column(cols, "upper", len(y))
    inside = np.where(np.isfinite(lower) & np.isfinite(upper), ((y >= lower) & (y <= upper)) * 1.0, np.nan)
    return weighted_mean(inside, w)


def coverage_p90(cols: Cols, w: Array) -> Array:
    """Share of actuals at or below P90 (target 0.9)."""
    y, _ = _yp(cols)
    upper = _column(cols, "upper", len(y))
    below = np.where(np.isfinite(upper), (y <= upper) * 1.0, np.nan)
    return weighted_mean(below, w)


def _pinball(y: Array, q: Array, tau: float, w: Array) -> Array:
    loss = np.where(y >= q, tau * (y - q), (1 - tau) * (q - y))
    return weighted_mean(loss, w)


def pinball_p90(cols: Cols, w: Array) -> Array:
    """Pinball (quantile) loss of P90."""
    y, _ = _yp(cols)
    return _pinball(y, _column(cols, "upper", len(y)), 0.9, w)


def pinball_p50(cols: Cols, w: Array) -> Array:
    """Pinball loss of the median forecast (half the MAE)."""
    y, p = _yp(cols)
    return _pinball(y, p, 0.5, w)


METRICS: dict[str, MetricDef] = {
    "mase": lower(mase),
    "smape": lower(smape),
    "coverage_80": higher(coverage_80),
    "coverage_p90": higher(coverage_p90),
    "pinball_p90": lower(pinball_p90),
    "pinball_p50": lower(pinball_p50),
}
