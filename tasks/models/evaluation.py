"""Evaluation for every kind of model: predictions, metrics, slices, baselines, paired bootstrap, oracle.

One path serves every kind. A model's predictions are a frame ("prediction", plus extras such as
"lower"/"upper" for intervals); metrics (tasks/models/metrics) read those columns, the label and any
evaluation-frame column by name. Every metric is computed from row weights, so one vectorised
implementation serves the point estimate (all weights 1) and every bootstrap replicate
(multinomial counts) alike. Rows of ranking frames are grouped by "query_id": a replicate then
resamples whole queries. A metric undefined on the rows given is NaN, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, select

from tasks.gates.metrics import Interval
from tasks.models.estimator import as_estimator
from tasks.models.metrics import METRICS, NO_BOOTSTRAP
from tasks.models.metrics.common import group_index
from tasks.models.spec import Baseline, BaseRate, ChangeThreshold, ColumnBaseline, ModelSpec, ValueThreshold
from tasks.models.training import CROSS_FITTED
from tasks.schema import ORACLE_TABLES

BOOT_CELLS = 4_000_000  # replicates × rows evaluated per chunk: bounds bootstrap memory
GROUP_COLUMN = "query_id"

Array = np.ndarray
Predictions = Array | pd.Series | pd.DataFrame


@dataclass
class Evaluation:
    """Metrics overall and per slice value (column -> value -> metric -> value) on n rows."""

    metrics: dict[str, float]
    by_slice: dict[str, dict[str, dict[str, float]]]
    n: int


class _Cols(Mapping[str, Array]):
    """The columns a metric reads: label, prediction columns, then evaluation-frame columns.

    Frame columns are converted (and, for a slice, masked) only when a metric reads them.
    """

    def __init__(self, own: dict[str, Array], rows: pd.DataFrame | None, mask: Array | None = None) -> None:
        self._own = own
        self._rows = rows
        self._mask = mask

    def __getitem__(self, key: str) -> Array:
        if key not in self._own:
            if self._rows is None or key not in self._rows.columns:
                raise KeyError(key)
            values = self._rows[key].to_numpy()
            self._own[key] = values if self._mask is None else values[self._mask]
        return self._own[key]

    def __iter__(self) -> Iterator[str]:
        extra = [] if self._rows is None else [c for c in self._rows.columns if c not in self._own]
        return iter([*self._own, *extra])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __contains__(self, key: object) -> bool:
        return key in self._own or (self._rows is not None and key in self._rows.columns)

    @property
    def n(self) -> int:
        """Rows."""
        return len(self._own["label"])

    def subset(self, mask: Array) -> _Cols:
        """The same columns on the rows where mask is true."""
        full = mask if self._mask is None else _compose(self._mask, mask)
        return _Cols({k: v[mask] for k, v in self._own.items()}, self._rows, full)


def _compose(outer: Array, inner: Array) -> Array:
    """A mask over the full frame selecting the rows ``inner`` selects among ``outer``'s rows."""
    full = np.zeros(len(outer), dtype=bool)
    full[np.flatnonzero(outer)[inner]] = True
    return full


def _prediction_columns(pred: Predictions, n: int) -> dict[str, Array]:
    if isinstance(pred, pd.DataFrame):
        if "prediction" not in pred.columns:
            raise ValueError("a prediction frame needs a 'prediction' column")
        columns = {c: pred[c].to_numpy() for c in pred.columns}
    else:
        columns = {"prediction": np.asarray(pred)}
    for name, values in columns.items():
        if values.shape != (n,):
            raise ValueError(f"labels and {name} differ in shape: {(n,)} vs {values.shape}")
    columns["prediction"] = np.asarray(columns["prediction"], dtype="float64")
    return columns


def _columns(y: Array | pd.Series, pred: Predictions, rows: pd.DataFrame | None) -> _Cols:
    label = np.asarray(y, dtype="float64")
    if label.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {label.shape}")
    if rows is not None and len(rows) != len(label):
        raise ValueError(f"evaluation frame has {len(rows)} rows for {len(label)} labels")
    own = {"label": label, **_prediction_columns(pred, len(label))}
    return _Cols(own, None if rows is None else rows.reset_index(drop=True))


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}")


def _value(metric: str, cols: _Cols) -> float:
    if cols.n == 0:
        return float("nan")
    return float(METRICS[metric](cols, np.ones((1, cols.n)))[0])


def metric_value(
    metric: str, y: Array | pd.Series, pred: Predictions, rows: pd.DataFrame | None = None
) -> float:
    """One metric on all rows (NaN when undefined)."""
    _check_metric(metric)
    return _value(metric, _columns(y, pred, rows))


def evaluate(
    spec: ModelSpec, y: Array | pd.Series, pred: Predictions, rows: pd.DataFrame | None = None
) -> Evaluation:
    """The spec's metrics overall and for every value of every slice column of ``rows``."""
    for metric in spec.metrics:
        _check_metric(metric)
    cols = _columns(y, pred, rows)
    overall = {m: _value(m, cols) for m in spec.metrics}
    by_slice: dict[str, dict[str, dict[str, float]]] = {}
    frame = rows if rows is not None else pd.DataFrame()
    for column in spec.slices:
        if column not in frame.columns:
            continue
        values = _slice_labels(frame[column])
        by_slice[column] = {}
        for value in sorted(set(values)):
            part = cols.subset(values == value)
            by_slice[column][value] = {m: _value(m, part) for m in spec.metrics}
    return Evaluation(metrics=overall, by_slice=by_slice, n=cols.n)


def predict_frame(spec: ModelSpec, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """A fitted model's predictions on a frame's inputs through the estimator contract.

    "prediction" plus any extra columns the model gives (intervals, embeddings…), one row per row of
    ``frame``; a plain scikit-learn model is read through SklearnEstimator (tasks/models/estimator.py).
    """
    out = as_estimator(model, spec.kind).predict_frame(frame[spec.input_columns])
    if "prediction" not in out.columns or len(out) != len(frame):
        raise ValueError(f"{spec.name}: predict_frame must give a 'prediction' per row")
    out = out.reset_index(drop=True)
    out["prediction"] = out["prediction"].astype("float64")
    return out


def predict(spec: ModelSpec, model: Any, frame: pd.DataFrame) -> np.ndarray:
    """The "prediction" column of predict_frame as a float array."""
    return predict_frame(spec, model, frame)["prediction"].to_numpy("float64")


def baseline_frame(
    spec: ModelSpec, baseline: Baseline, train: pd.DataFrame, holdout: pd.DataFrame
) -> pd.DataFrame:
    """One naive baseline's predictions on the holdout (see BaseRate and ColumnBaseline)."""
    match baseline:
        case BaseRate():
            if train.empty:
                raise ValueError(f"{spec.name}: the base-rate baseline needs training rows")
            return pd.DataFrame({"prediction": np.full(len(holdout), float(train["label"].mean()))})
        case ColumnBaseline(column=column):
            if column not in holdout.columns:
                raise ValueError(f"{spec.name}: baseline column {column!r} is not in the label frame")
            out = {"prediction": holdout[column].to_numpy("float64")}
            for extra in ("lower", "upper"):
                if f"{column}_{extra}" in holdout.columns:
                    out[extra] = holdout[f"{column}_{extra}"].to_numpy("float64")
            return pd.DataFrame(out)
    raise TypeError(f"{spec.name}: {baseline!r} is not a baseline declaration (BaseRate or ColumnBaseline)")


def baseline_names(spec: ModelSpec) -> tuple[Baseline, ...]:
    """The spec's baselines, the primary first (each prints as the name its metrics are stored under)."""
    return (spec.baseline, *spec.extra_baselines)


def baseline_predictions(spec: ModelSpec, train: pd.DataFrame, holdout: pd.DataFrame) -> np.ndarray:
    """The primary baseline's point predictions on the holdout."""
    return baseline_frame(spec, spec.baseline, train, holdout)["prediction"].to_numpy("float64")


def _unit_column(spec: ModelSpec, cols: _Cols | pd.DataFrame) -> str | None:
    """The column whose values the bootstrap resamples: the spec's unit, else a ranking's query."""
    for column in (spec.resample_by, GROUP_COLUMN):
        if column is not None and column in cols:
            return column
    return None


def _unit_weights(cols: _Cols, n_boot: int, seed: int, unit: str | None) -> Iterator[Array]:
    """Row weights of each bootstrap replicate, in chunks that bound memory.

    Rows are the units, or whole groups of the ``unit`` column: a resampled query keeps all its
    candidates (so per-query metrics stay defined), a resampled user all their snapshots (so
    correlated snapshots do not pass for independent evidence).
    """
    rng = np.random.default_rng(seed)
    if unit is not None:
        codes, first = group_index(np.asarray(cols[unit]))
        n_units = len(first)
    else:
        codes, n_units = None, cols.n
    per_chunk = max(1, BOOT_CELLS // max(cols.n, 1))
    for start in range(0, n_boot, per_chunk):
        k = min(per_chunk, n_boot - start)
        idx = rng.integers(0, n_units, size=(k, n_units))
        flat = (idx + np.arange(k)[:, None] * n_units).ravel()
        counts = np.bincount(flat, minlength=k * n_units).reshape(k, n_units).astype("float64")
        yield counts if codes is None else counts[:, codes]


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
    pred_a: Predictions,
    pred_b: Predictions,
    *,
    rows: pd.DataFrame | None = None,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    ratio: float = 1.0,
) -> tuple[float, float, float]:
    """Paired bootstrap over units (rows, queries or the spec's resample_by) of
    metric(a) − ratio × metric(b); ratio 1 is the plain difference."""
    _check_metric(metric)
    a, b = _columns(y, pred_a, rows), _columns(y, pred_b, rows)
    point = _value(metric, a) - ratio * _value(metric, b)
    if a.n == 0 or metric in NO_BOOTSTRAP:
        return float("nan"), point, float("nan")
    fn = METRICS[metric]
    replicates = np.concatenate(
        [fn(a, w) - ratio * fn(b, w) for w in _unit_weights(a, n_boot, seed, _unit_column(spec, a))]
    )
    return _interval(point, replicates, confidence)


def bootstrap_ci(
    spec: ModelSpec,
    metric: str,
    y: Array | pd.Series,
    pred: Predictions,
    *,
    rows: pd.DataFrame | None = None,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of one metric: (lower, point, upper)."""
    _check_metric(metric)
    cols = _columns(y, pred, rows)
    point = _value(metric, cols)
    if cols.n == 0 or metric in NO_BOOTSTRAP:
        return float("nan"), point, float("nan")
    fn = METRICS[metric]
    replicates = np.concatenate(
        [fn(cols, w) for w in _unit_weights(cols, n_boot, seed, _unit_column(spec, cols))]
    )
    return _interval(point, replicates, confidence)


def _slice_labels(series: pd.Series) -> Array:
    """A slice column's values as the strings by_slice is keyed by (missing -> "missing")."""
    return series.astype(object).where(series.notna(), "missing").astype(str).to_numpy()


def _where_masks(slice_: str | None, frame: pd.DataFrame) -> dict[str | None, Array]:
    """Row masks of a threshold's rows: all (None), one slice value, or every value of a column."""
    if slice_ is None:
        return {None: np.ones(len(frame), dtype=bool)}
    column, _, wanted = slice_.partition("=")
    if column not in frame.columns:
        return {}
    values = _slice_labels(frame[column])
    chosen = [wanted] if wanted else sorted(set(values))
    return {f"{column}={v}": values == v for v in chosen}


def _units(spec: ModelSpec, rows: pd.DataFrame) -> int:
    """Independent units among the rows: what the bootstrap resamples."""
    unit = _unit_column(spec, rows)
    return len(rows) if unit is None else int(rows[unit].nunique())


IntervalKeys = dict[tuple[str, str | None], Interval]


def _intervals(
    spec: ModelSpec,
    thresholds: Sequence[ValueThreshold | ChangeThreshold],
    frame: pd.DataFrame,
    interval: Callable[[str, Array, pd.DataFrame], tuple[float, float, float]],
) -> IntervalKeys:
    """interval(metric, row mask, rows) for every bootstrappable threshold, where it judges.

    Keys are (metric, None) overall and (metric, "column=value") for a threshold on one slice value
    or on every value of a slice column; metrics that cannot be bootstrapped get none.
    """
    out: IntervalKeys = {}
    for threshold in thresholds:
        if threshold.metric in NO_BOOTSTRAP:
            continue
        for where, mask in _where_masks(threshold.slice, frame).items():
            if (threshold.metric, where) in out or not mask.any():
                continue
            rows = frame[mask].reset_index(drop=True)
            low, point, high = interval(threshold.metric, mask, rows)
            out[(threshold.metric, where)] = Interval(low, point, high, _units(spec, rows))
    return out


def value_intervals(
    spec: ModelSpec,
    y: Array | pd.Series,
    pred: pd.DataFrame,
    frame: pd.DataFrame,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> IntervalKeys:
    """The candidate's bootstrap interval of every value-thresholded metric, where its policy judges it."""
    label = np.asarray(y, dtype="float64")

    def interval(metric: str, mask: Array, rows: pd.DataFrame) -> tuple[float, float, float]:
        part = pred[mask].reset_index(drop=True)
        return bootstrap_ci(
            spec, metric, label[mask], part, rows=rows, n_boot=n_boot, confidence=confidence, seed=seed
        )

    return _intervals(spec, spec.policy.value_thresholds, frame, interval)


def change_intervals(
    spec: ModelSpec,
    y: Array | pd.Series,
    pred: pd.DataFrame,
    champion: pd.DataFrame,
    frame: pd.DataFrame,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> IntervalKeys:
    """Paired bootstrap interval of candidate − champion for every change-thresholded metric.

    Keyed like value_intervals; both models are scored on the same resampled rows (or queries).
    """
    label = np.asarray(y, dtype="float64")

    def interval(metric: str, mask: Array, rows: pd.DataFrame) -> tuple[float, float, float]:
        ours, theirs = pred[mask].reset_index(drop=True), champion[mask].reset_index(drop=True)
        return bootstrap_delta(
            spec,
            metric,
            label[mask],
            ours,
            theirs,
            rows=rows,
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
        )

    return _intervals(spec, spec.policy.change_thresholds, frame, interval)


def baseline_intervals(
    spec: ModelSpec,
    y: Array | pd.Series,
    pred: pd.DataFrame,
    frame: pd.DataFrame,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[tuple[str, str], Interval]:
    """Paired bootstrap interval of candidate − baseline for every beat_baseline metric and baseline,
    and of candidate − ratio × baseline for every relative threshold.

    Keyed (metric, "baseline") for the primary baseline, (metric, str(baseline)) for the others and
    (metric, threshold.other) for a relative threshold; the baselines' predictions are read back
    from the stored evaluation frame.
    """
    roles = {"baseline": "baseline"} | {
        str(b): role for b, role in baseline_roles(spec).items() if b != spec.baseline
    }
    wanted = [(m, name, name, 1.0) for m in spec.policy.beat_baseline for name in roles]
    wanted += [(t.metric, t.other, t.against, t.ratio) for t in spec.policy.relative_thresholds]
    out: dict[tuple[str, str], Interval] = {}
    for metric, key, against, ratio in wanted:
        if metric in NO_BOOTSTRAP or against not in roles:
            continue
        theirs = stored_predictions(frame, roles[against])
        low, point, high = bootstrap_delta(
            spec,
            metric,
            y,
            pred,
            theirs,
            rows=frame,
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
            ratio=ratio,
        )
        out[(metric, key)] = Interval(low, point, high, _units(spec, frame))
    return out


OracleHook = Callable[[Engine, pd.DataFrame, pd.DataFrame], dict[str, float]]


def _oracle_values(engine: Engine, table_name: str, column: str, key: str, ids: pd.Series) -> pd.Series:
    """Oracle values by key for the given ids (bound values only, in chunks)."""
    table = ORACLE_TABLES[table_name]
    wanted = sorted({str(v) for v in ids.dropna()})
    found: dict[str, float] = {}
    with engine.connect() as conn:
        for i in range(0, len(wanted), 5000):
            chunk = wanted[i : i + 5000]
            query = select(table.c[key], table.c[column]).where(and_(table.c[key].in_(chunk)))
            found.update({str(r[0]): float(r[1]) for r in conn.execute(query)})
    return ids.astype(str).map(pd.Series(found, dtype="float64"))


def binary_oracle(
    table: str,
    column: str,
    key: str = "event_id",
    example_column: str = "example_id",
    transform: Callable[[pd.Series, pd.DataFrame], pd.Series] | None = None,
) -> OracleHook:
    """An oracle hook for a classifier: the simulator's true probability (or a monotone score of
    it) per example, joined on ``example_column`` = ``table.key``; AUC of the truth vs the model.

    ``transform(values, holdout)`` turns the stored trait into the example's score (e.g. a daily
    hazard into the probability of no activity over the horizon). Evaluation only.
    """

    def report(engine: Engine, holdout: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
        if holdout.empty or example_column not in holdout.columns:
            return {}
        truth = _oracle_values(engine, table, column, key, holdout[example_column])
        if transform is not None:
            truth = transform(truth, holdout)
        known = truth.notna().to_numpy()
        if not known.any():
            return {}
        y = holdout["label"].to_numpy("float64")[known]
        p_true = truth.to_numpy("float64")[known]
        p_model = predictions["prediction"].to_numpy("float64")[known]
        out = {
            "n": float(known.sum()),
            "coverage": float(known.mean()),
            "oracle_auc": metric_value("auc", y, p_true),
            "model_auc": metric_value("auc", y, p_model),
        }
        out["auc_ratio"] = out["model_auc"] / out["oracle_auc"]
        if transform is None:  # a true probability: its log loss and distance are meaningful
            out["oracle_log_loss"] = metric_value("log_loss", y, p_true)
            out["oracle_normalized_entropy"] = metric_value("normalized_entropy", y, p_true)
            out["model_log_loss"] = metric_value("log_loss", y, p_model)
            out["prob_mae"] = float(np.mean(np.abs(p_model - p_true)))
        return out

    return report


def oracle_report(
    engine: Engine, spec: ModelSpec, holdout_frame: pd.DataFrame, pred: Predictions | None = None
) -> dict[str, float]:
    """How close the model gets to the simulator's truth on the holdout; {} without an oracle.

    ``pred`` defaults to the frame's "prediction" column. Reads oracle_* tables: evaluation only.
    """
    if spec.oracle is None or holdout_frame.empty:
        return {}
    if pred is None:
        pred = holdout_frame["prediction"].to_numpy("float64")
    frame = pred if isinstance(pred, pd.DataFrame) else pd.DataFrame({"prediction": np.asarray(pred)})
    return spec.oracle(engine, holdout_frame.reset_index(drop=True), frame.reset_index(drop=True))


# --- the stored evaluation frame: holdout + candidate and baseline predictions, side by side ---


def _role_columns(role: str) -> tuple[str, str]:
    """(column of the point prediction, prefix of the extra columns) of a role."""
    return ("prediction", "pred__") if role == "candidate" else (f"{role}_prediction", f"{role}__")


def baseline_roles(spec: ModelSpec) -> dict[Baseline, str]:
    """Stored role of each baseline: "baseline" for the primary, "baseline1", "baseline2"… for extras."""
    return {b: ("baseline" if i == 0 else f"baseline{i}") for i, b in enumerate(baseline_names(spec))}


def attach_predictions(frame: pd.DataFrame, predictions: pd.DataFrame, role: str) -> pd.DataFrame:
    """The frame with a role's prediction columns added under their stored names."""
    point, prefix = _role_columns(role)
    renamed = {c: point if c == "prediction" else prefix + c for c in predictions.columns}
    return frame.assign(**{renamed[c]: predictions[c].to_numpy() for c in predictions.columns})


def stored_predictions(frame: pd.DataFrame, role: str) -> pd.DataFrame:
    """A role's prediction frame back from the stored evaluation frame."""
    point, prefix = _role_columns(role)
    out = {"prediction": frame[point].to_numpy("float64")}
    out.update({c[len(prefix) :]: frame[c].to_numpy() for c in frame.columns if c.startswith(prefix)})
    return pd.DataFrame(out)


def evaluation_frame(
    spec: ModelSpec, model: Any, train: pd.DataFrame, holdout: pd.DataFrame, mirror: Any = None
) -> pd.DataFrame:
    """The holdout plus the candidate's and every baseline's predictions (stored by runs, read by gates).

    With cross-fitting, the rows marked CROSS_FITTED are predicted by the mirror model.
    """
    holdout = holdout.reset_index(drop=True)
    crossed = (
        holdout[CROSS_FITTED].to_numpy(bool)
        if mirror is not None and CROSS_FITTED in holdout.columns
        else np.zeros(len(holdout), dtype=bool)
    )
    parts = [
        predict_frame(spec, fitted, holdout[mask]).set_axis(np.flatnonzero(mask))
        for fitted, mask in ((model, ~crossed), (mirror, crossed))
        if mask.any()
    ]
    predictions = pd.concat(parts).sort_index() if parts else predict_frame(spec, model, holdout)
    frame = attach_predictions(holdout, predictions.reset_index(drop=True), "candidate")
    for baseline, role in baseline_roles(spec).items():
        frame = attach_predictions(frame, baseline_frame(spec, baseline, train, holdout), role)
    return frame


def champion_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows on which a champion is compared: the registered model's own holdout, not the rows a
    cross-fitted mirror judged (the champion was fitted on those entities' earlier snapshots)."""
    if CROSS_FITTED not in frame.columns:
        return np.ones(len(frame), dtype=bool)
    return ~frame[CROSS_FITTED].to_numpy(bool)
