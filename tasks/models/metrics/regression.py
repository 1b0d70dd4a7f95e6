"""Regression metrics for non-negative, heavy-tailed targets (label = amount, prediction = mean)."""

from __future__ import annotations

import numpy as np

from tasks.models.metrics.common import Array, Cols, MetricDef, higher, lower, on_target, safe_div

TWEEDIE_POWER = 1.5
FLOOR = 1e-9  # predictions are floored here for the deviance (it needs mu > 0)


def _yp(cols: Cols) -> tuple[Array, Array]:
    return np.asarray(cols["label"], dtype="float64"), np.asarray(cols["prediction"], dtype="float64")


def rmse(cols: Cols, w: Array) -> Array:
    """Root mean squared error."""
    y, p = _yp(cols)
    return np.sqrt(safe_div(w @ (p - y) ** 2, w.sum(axis=1)))


def mae(cols: Cols, w: Array) -> Array:
    """Mean absolute error."""
    y, p = _yp(cols)
    return safe_div(w @ np.abs(p - y), w.sum(axis=1))


def rmse_log1p(cols: Cols, w: Array) -> Array:
    """RMSE on log1p of target and prediction (negatives clipped to 0): errors in orders of magnitude."""
    y, p = _yp(cols)
    d = np.log1p(np.clip(p, 0, None)) - np.log1p(np.clip(y, 0, None))
    return np.sqrt(safe_div(w @ d**2, w.sum(axis=1)))


def tweedie_deviance(cols: Cols, w: Array) -> Array:
    """Mean Tweedie deviance with power 1.5 (compound Poisson-gamma: zeros and a heavy tail)."""
    y, p = _yp(cols)
    mu = np.clip(p, FLOOR, None)
    y = np.clip(y, 0, None)
    q = TWEEDIE_POWER
    dev = 2 * (
        np.power(y, 2 - q) / ((1 - q) * (2 - q))
        - y * np.power(mu, 1 - q) / (1 - q)
        + np.power(mu, 2 - q) / (2 - q)
    )
    return safe_div(w @ dev, w.sum(axis=1))


def _gini(y: Array, s: Array, w: Array) -> Array:
    """Weighted Gini of y ordered by s (descending): area between the cumulative y share and the diagonal."""
    order = np.argsort(-s, kind="stable")
    sy, sw = y[order], w[:, order]
    total_w = sw.sum(axis=1, keepdims=True)
    total_y = (sw * sy).sum(axis=1, keepdims=True)
    cum_w = np.cumsum(sw, axis=1) / np.where(total_w > 0, total_w, 1.0)
    cum_y = np.cumsum(sw * sy, axis=1) / np.where(total_y > 0, total_y, 1.0)
    # Trapezoids over the population share; a random order gives 0.5 area, the diagonal.
    prev_w = np.concatenate([np.zeros((w.shape[0], 1)), cum_w[:, :-1]], axis=1)
    prev_y = np.concatenate([np.zeros((w.shape[0], 1)), cum_y[:, :-1]], axis=1)
    area = ((cum_w - prev_w) * (cum_y + prev_y) / 2).sum(axis=1)
    return np.where(total_y[:, 0] > 0, area - 0.5, np.nan)


def gini_normalized(cols: Cols, w: Array) -> Array:
    """Gini of the prediction's ordering over the Gini of the perfect ordering (1 = perfect ranking)."""
    y, p = _yp(cols)
    if len(y) == 0:
        return np.full(w.shape[0], np.nan)
    return safe_div(_gini(y, p, w), _gini(y, y, w))


def pred_obs_ratio(cols: Cols, w: Array) -> Array:
    """Sum of predictions over sum of outcomes."""
    y, p = _yp(cols)
    return safe_div(w @ p, w @ y)


METRICS: dict[str, MetricDef] = {
    "rmse": lower(rmse),
    "mae": lower(mae),
    "rmse_log1p": lower(rmse_log1p),
    "tweedie_deviance": lower(tweedie_deviance),
    "gini_normalized": higher(gini_normalized),
    "pred_obs_ratio": on_target(pred_obs_ratio),
}
