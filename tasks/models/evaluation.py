"""Binary-classifier evaluation: metrics, slices, the naive baseline, paired bootstrap and the oracle.

Every metric is computed from row weights, so one vectorised implementation serves the point
estimate (all weights 1) and every bootstrap replicate (multinomial counts) alike. A metric that
is undefined on the rows given (one class only, no rows) is NaN, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, select

from tasks.models.catalog import ORACLE_TARGETS
from tasks.models.spec import ModelSpec
from tasks.schema import ORACLE_TABLES

ECE_BINS = 15
EPS = 1e-15  # probabilities are clipped to [EPS, 1 − EPS] for log loss
BOOT_CELLS = 4_000_000  # replicates × rows evaluated per chunk: bounds bootstrap memory

Array = np.ndarray
WeightedMetric = Callable[[Array, Array, Array], Array]  # (y, p, w[k, n]) -> metric[k]


@dataclass
class Evaluation:
    """Metrics overall and per slice value (column -> value -> metric -> value) on n rows."""

    metrics: dict[str, float]
    by_slice: dict[str, dict[str, dict[str, float]]]
    n: int


def _safe_div(num: Array, den: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _log_loss(y: Array, p: Array, w: Array) -> Array:
    q = np.clip(p, EPS, 1 - EPS)
    losses = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return _safe_div(w @ losses, w.sum(axis=1))


def _base_entropy(y: Array, w: Array) -> Array:
    rate = _safe_div(w @ y, w.sum(axis=1))
    r = np.clip(rate, EPS, 1 - EPS)
    entropy = -(r * np.log(r) + (1 - r) * np.log(1 - r))
    # One class only: the base rate predicts perfectly, so NE is undefined.
    return np.where((rate > 0) & (rate < 1), entropy, np.nan)


def _normalized_entropy(y: Array, p: Array, w: Array) -> Array:
    return _safe_div(_log_loss(y, p, w), _base_entropy(y, w))


def _auc(y: Array, p: Array, w: Array) -> Array:
    """Weighted ROC AUC (ties count one half) from one sort shared by every replicate."""
    order = np.argsort(p, kind="stable")
    sorted_p, sorted_y, sorted_w = p[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    pos = np.add.reduceat(sorted_w * sorted_y, starts, axis=1)
    neg = np.add.reduceat(sorted_w * (1 - sorted_y), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    return _safe_div(num, total_pos * total_neg)


def _ece(y: Array, p: Array, w: Array) -> Array:
    """Expected calibration error over 15 equal-width bins of the prediction."""
    bins = np.minimum((p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    one_hot = np.zeros((len(p), ECE_BINS))
    one_hot[np.arange(len(p)), bins] = 1.0
    observed = (w * y) @ one_hot
    predicted = (w * p) @ one_hot
    return _safe_div(np.abs(observed - predicted).sum(axis=1), w.sum(axis=1))


def _pred_obs_ratio(y: Array, p: Array, w: Array) -> Array:
    return _safe_div(w @ p, w @ y)


METRICS: dict[str, WeightedMetric] = {
    "auc": _auc,
    "log_loss": _log_loss,
    "normalized_entropy": _normalized_entropy,
    "ece": _ece,
    "pred_obs_ratio": _pred_obs_ratio,
}


def _arrays(y: Array | pd.Series, pred: Array | pd.Series) -> tuple[Array, Array]:
    y_arr = np.asarray(y, dtype="float64")
    p_arr = np.asarray(pred, dtype="float64")
    if y_arr.shape != p_arr.shape or y_arr.ndim != 1:
        raise ValueError(f"labels and predictions differ in shape: {y_arr.shape} vs {p_arr.shape}")
    return y_arr, p_arr


def metric_value(metric: str, y: Array | pd.Series, pred: Array | pd.Series) -> float:
    """One metric on all rows (NaN when undefined)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}")
    y_arr, p_arr = _arrays(y, pred)
    if len(y_arr) == 0:
        return float("nan")
    return float(METRICS[metric](y_arr, p_arr, np.ones((1, len(y_arr))))[0])


def _check_binary(spec: ModelSpec) -> None:
    if spec.kind != "binary":
        raise ValueError(f"{spec.name}: evaluation here covers binary classifiers, not {spec.kind}")


def evaluate(
    spec: ModelSpec, y: Array | pd.Series, pred: Array | pd.Series, slices: pd.DataFrame
) -> Evaluation:
    """The spec's metrics overall and for every value of every slice column."""
    _check_binary(spec)
    y_arr, p_arr = _arrays(y, pred)
    overall = {m: metric_value(m, y_arr, p_arr) for m in spec.metrics}
    by_slice: dict[str, dict[str, dict[str, float]]] = {}
    for column in spec.slices:
        if column not in slices.columns:
            continue
        values = slices[column].astype(object).where(slices[column].notna(), "missing").astype(str).to_numpy()
        by_slice[column] = {
            value: {m: metric_value(m, y_arr[values == value], p_arr[values == value]) for m in spec.metrics}
            for value in sorted(set(values))
        }
    return Evaluation(metrics=overall, by_slice=by_slice, n=len(y_arr))


def predict(spec: ModelSpec, model: object, frame: pd.DataFrame) -> np.ndarray:
    """Positive-class probabilities of a fitted pipeline (or pyfunc model) on a frame's inputs."""
    inputs = frame[spec.input_columns]
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(inputs)[:, 1], dtype="float64")
    out = model.predict(inputs)  # type: ignore[attr-defined]
    return np.asarray(out, dtype="float64").reshape(len(frame), -1)[:, -1]


def baseline_predictions(
    spec: ModelSpec, train_frame: pd.DataFrame, holdout_frame: pd.DataFrame
) -> np.ndarray:
    """The naive baseline's predictions on the holdout: "base_rate" is the training label mean."""
    if spec.baseline != "base_rate":
        raise ValueError(f"{spec.name}: unknown baseline {spec.baseline!r}")
    if train_frame.empty:
        raise ValueError(f"{spec.name}: the baseline needs training rows")
    return np.full(len(holdout_frame), float(train_frame["label"].mean()))


def _weight_chunks(n_rows: int, n_boot: int, seed: int) -> list[Array]:
    """Multinomial row counts of each bootstrap replicate, in chunks that bound memory."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, BOOT_CELLS // max(n_rows, 1))
    chunks = []
    for start in range(0, n_boot, per_chunk):
        k = min(per_chunk, n_boot - start)
        idx = rng.integers(0, n_rows, size=(k, n_rows))
        flat = (idx + np.arange(k)[:, None] * n_rows).ravel()
        chunks.append(np.bincount(flat, minlength=k * n_rows).reshape(k, n_rows).astype("float64"))
    return chunks


def _interval(point: float, replicates: Array, confidence: float) -> tuple[float, float, float]:
    finite = replicates[np.isfinite(replicates)]
    if not np.isfinite(point) or finite.size == 0:
        return float("nan"), point, float("nan")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(min(low, point)), point, float(max(high, point))


def bootstrap_delta(
    spec: ModelSpec,
    metric: str,
    y: Array | pd.Series,
    pred_a: Array | pd.Series,
    pred_b: Array | pd.Series,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Paired bootstrap over rows of metric(a) − metric(b): (lower, point, upper)."""
    _check_binary(spec)
    y_arr, a = _arrays(y, pred_a)
    _, b = _arrays(y, pred_b)
    point = metric_value(metric, y_arr, a) - metric_value(metric, y_arr, b)
    if len(y_arr) == 0:
        return float("nan"), float("nan"), float("nan")
    fn = METRICS[metric]
    replicates = np.concatenate(
        [fn(y_arr, a, w) - fn(y_arr, b, w) for w in _weight_chunks(len(y_arr), n_boot, seed)]
    )
    return _interval(point, replicates, confidence)


def bootstrap_ci(
    spec: ModelSpec,
    metric: str,
    y: Array | pd.Series,
    pred: Array | pd.Series,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of one metric: (lower, point, upper)."""
    _check_binary(spec)
    y_arr, p = _arrays(y, pred)
    point = metric_value(metric, y_arr, p)
    if len(y_arr) == 0:
        return float("nan"), float("nan"), float("nan")
    fn = METRICS[metric]
    replicates = np.concatenate([fn(y_arr, p, w) for w in _weight_chunks(len(y_arr), n_boot, seed)])
    return _interval(point, replicates, confidence)


def _oracle_probabilities(engine: Engine, table_name: str, column: str, frame: pd.DataFrame) -> pd.Series:
    """True probabilities by example_id for the holdout's event dates (bound values only)."""
    table = ORACLE_TABLES[table_name]
    days = pd.to_datetime(frame["event_ts"], unit="s", utc=True).dt.date
    query = select(table.c.event_id, table.c[column]).where(
        and_(table.c.event_date >= min(days), table.c.event_date <= max(days))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    truth = pd.Series({r[0]: float(r[1]) for r in rows}, dtype="float64")
    return frame["example_id"].map(truth)


def oracle_report(
    engine: Engine, spec: ModelSpec, holdout_frame: pd.DataFrame, pred: Array | None = None
) -> dict[str, float]:
    """How close the model gets to the simulator's truth on the holdout; {} without oracle rows.

    ``pred`` defaults to the frame's "prediction" column. Reads oracle_* tables: evaluation only.
    """
    target = ORACLE_TARGETS.get(spec.name)
    if target is None or holdout_frame.empty:
        return {}
    truth = _oracle_probabilities(engine, target.table, target.column, holdout_frame)
    known = truth.notna().to_numpy()
    if not known.any():
        return {}
    y = holdout_frame["label"].to_numpy("float64")[known]
    p_true = truth.to_numpy("float64")[known]
    report = {
        "n": float(known.sum()),
        "coverage": float(known.mean()),
        "oracle_auc": metric_value("auc", y, p_true),
        "oracle_log_loss": metric_value("log_loss", y, p_true),
        "oracle_normalized_entropy": metric_value("normalized_entropy", y, p_true),
    }
    if pred is None and "prediction" in holdout_frame.columns:
        pred = holdout_frame["prediction"].to_numpy("float64")
    if pred is not None:
        p_model = np.asarray(pred, dtype="float64")[known]
        report["model_auc"] = metric_value("auc", y, p_model)
        report["auc_ratio"] = report["model_auc"] / report["oracle_auc"]
        report["model_log_loss"] = metric_value("log_loss", y, p_model)
        # Distance to the truth itself: mean absolute error of the predicted probability.
        report["prob_mae"] = float(np.mean(np.abs(p_model - p_true)))
    return report
