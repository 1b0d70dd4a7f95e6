"""Binary-classifier metrics: label in {0, 1}, prediction = positive-class probability."""

from __future__ import annotations

import numpy as np

from tasks.models.metrics.common import Array, Cols, MetricDef, higher, lower, on_target, safe_div

ECE_BINS = 15
EPS = 1e-15  # probabilities are clipped to [EPS, 1 − EPS] for log loss
TOP_SHARE = 0.1  # "top decile" of lift


def _yp(cols: Cols) -> tuple[Array, Array]:
    return np.asarray(cols["label"], dtype="float64"), np.asarray(cols["prediction"], dtype="float64")


def _log_loss_of(y: Array, p: Array, w: Array) -> Array:
    q = np.clip(p, EPS, 1 - EPS)
    losses = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return safe_div(w @ losses, w.sum(axis=1))


def log_loss(cols: Cols, w: Array) -> Array:
    """Mean binary cross-entropy."""
    y, p = _yp(cols)
    return _log_loss_of(y, p, w)


def _base_entropy(y: Array, w: Array) -> Array:
    rate = safe_div(w @ y, w.sum(axis=1))
    r = np.clip(rate, EPS, 1 - EPS)
    entropy = -(r * np.log(r) + (1 - r) * np.log(1 - r))
    # One class only: the base rate predicts perfectly, so NE is undefined.
    return np.where((rate > 0) & (rate < 1), entropy, np.nan)


def normalized_entropy(cols: Cols, w: Array) -> Array:
    """Log loss over the entropy of the base rate (below 1 beats the base rate)."""
    y, p = _yp(cols)
    return safe_div(_log_loss_of(y, p, w), _base_entropy(y, w))


def auc_of(y: Array, p: Array, w: Array) -> Array:
    """Weighted ROC AUC (ties count one half) from one sort shared by every replicate."""
    order = np.argsort(p, kind="stable")
    sorted_p, sorted_y, sorted_w = p[order], y[order], w[:, order]
    if len(sorted_p) == 0:
        return np.full(w.shape[0], np.nan)
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    pos = np.add.reduceat(sorted_w * sorted_y, starts, axis=1)
    neg = np.add.reduceat(sorted_w * (1 - sorted_y), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    return safe_div(num, pos.sum(axis=1) * neg.sum(axis=1))


def auc(cols: Cols, w: Array) -> Array:
    """ROC AUC."""
    y, p = _yp(cols)
    return auc_of(y, p, w)


def pr_auc(cols: Cols, w: Array) -> Array:
    """Average precision: the mean precision at each positive, ranked by prediction (descending)."""
    y, p = _yp(cols)
    order = np.argsort(-p, kind="stable")
    sy, sw = y[order], w[:, order]
    tp = np.cumsum(sw * sy, axis=1)
    seen = np.cumsum(sw, axis=1)
    precision = safe_div(tp, seen)
    return safe_div(np.nansum(sw * sy * precision, axis=1), (sw * sy).sum(axis=1))


def lift_top_decile(cols: Cols, w: Array) -> Array:
    """Positive rate among the top 10 % by prediction over the overall positive rate."""
    y, p = _yp(cols)
    if len(p) == 0:
        return np.full(w.shape[0], np.nan)
    top = (p >= np.quantile(p, 1 - TOP_SHARE, method="higher")).astype("float64")
    return safe_div(safe_div(w @ (y * top), w @ top), safe_div(w @ y, w.sum(axis=1)))


def ece(cols: Cols, w: Array) -> Array:
    """Expected calibration error over 15 equal-width bins of the prediction."""
    y, p = _yp(cols)
    bins = np.minimum((p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    one_hot = np.zeros((len(p), ECE_BINS))
    one_hot[np.arange(len(p)), bins] = 1.0
    observed = (w * y) @ one_hot
    predicted = (w * p) @ one_hot
    return safe_div(np.abs(observed - predicted).sum(axis=1), w.sum(axis=1))


def brier(cols: Cols, w: Array) -> Array:
    """Mean squared error of the probability."""
    y, p = _yp(cols)
    return safe_div(w @ (p - y) ** 2, w.sum(axis=1))


def pred_obs_ratio(cols: Cols, w: Array) -> Array:
    """Sum of predictions over sum of outcomes (1 = calibrated in the large)."""
    y, p = _yp(cols)
    return safe_div(w @ p, w @ y)


METRICS: dict[str, MetricDef] = {
    "auc": higher(auc),
    "log_loss": lower(log_loss),
    "normalized_entropy": lower(normalized_entropy),
    "ece": lower(ece),
    "pred_obs_ratio": on_target(pred_obs_ratio),
    "pr_auc": higher(pr_auc),
    "lift_top_decile": higher(lift_top_decile),
    "brier": lower(brier),
}
