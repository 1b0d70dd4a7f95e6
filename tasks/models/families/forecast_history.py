"""Forecast inputs from history feature rows, and reading them online for scoring.

The forecasters of the catalog read their series through the feature store: a history view
(``traffic_history``, ``growth_history``) holds, per series and ``feature_ts``, the series'
values by lag as known at that moment. Here:

* ``HistoryInputs`` + ``HistoryForecaster``: the same inputs computed per row from a history
  feature row (the series' values by lag, as the feature store serves them point-in-time at the
  forecast origin: ``traffic_history``, ``growth_history``), then an IntervalForecaster on them;
  ``history_inputs`` equals ``direct_rows`` on the same values. ``read_online_history`` reads the
  newest history rows for scoring through ``get_online_features`` after the freshness checks.

Label builders load validated raw data for the labels and seasonal-naive baselines only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sqlalchemy import Engine, and_, func, select

from tasks.featurestore import feature_table, get_online_features
from tasks.featurestore.definitions import FeatureView, parse_ref
from tasks.featurestore.registry import is_registered
from tasks.featurestore.views import FEATURE_VIEWS
from tasks.models.families.forecasting import (
    BASE,
    HORIZON,
    ORIGIN,
    SERIES,
    DirectSpec,
    baseline_column,
    make_interval_forecaster,
)
from tasks.models.scoring_frame import StaleFeatures, check_fresh

# --- inputs from a history feature row --------------------------------------------------------


def lag_names(prefix: str, count: int, unit: str) -> tuple[str, ...]:
    """Columns of a history's values by lag, ``<prefix>lag_1<unit>`` first (the step just ended)."""
    return tuple(f"{prefix}lag_{k}{unit}" for k in range(1, count + 1))


def align_history(lags: np.ndarray, end_ts: np.ndarray, origin_ts: np.ndarray, step_s: int) -> np.ndarray:
    """Values by lag from each row's origin, given values by lag from the end of its history row.

    A point-in-time read returns the latest row at or before the origin; one that ended k steps
    earlier lacks the k newest steps, which are then missing (as unobserved steps of a panel are).
    A row without any history (end missing) is all missing.
    """
    lags = np.asarray(lags, dtype="float64")
    out = np.full(lags.shape, np.nan)
    end = np.asarray(end_ts, dtype="float64")
    shift = np.where(np.isfinite(end), (np.asarray(origin_ts, dtype="float64") - end) // step_s, -1)
    width = lags.shape[1]
    for k in np.unique(shift[(shift >= 0) & (shift < width)]).astype(np.int64):
        rows = shift == k
        out[rows, k:] = lags[rows, : width - k]
    return out


def _block_stats(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: mean and std of the finite values (NaN without any; std needs two)."""
    finite = np.isfinite(block)
    filled = np.where(finite, block, 0.0)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, filled.sum(axis=1) / np.maximum(count, 1), np.nan)
        var = np.where(count > 1, (filled**2).sum(axis=1) / np.maximum(count, 1) - mean**2, np.nan)
    return mean, np.sqrt(np.clip(var, 0.0, None))


def _at_lag(history: np.ndarray, lag: np.ndarray) -> np.ndarray:
    """history[row, lag - 1] where 1 <= lag <= its width (strictly before the origin), else NaN."""
    lag = np.asarray(lag, dtype=np.int64)
    ok = (lag >= 1) & (lag <= history.shape[1])
    out = np.full(len(lag), np.nan)
    out[ok] = history[np.flatnonzero(ok), lag[ok] - 1]
    return out


def history_inputs(
    history: np.ndarray,
    horizon: np.ndarray,
    origin_ts: np.ndarray,
    spec: DirectSpec,
    *,
    level: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The inputs direct_rows computes, per row, from its values by lag from the origin.

    ``history[i, j]`` is row i's series at lag j + 1 (the step ending at its origin is lag 1);
    ``level`` (same shape) is what base_level averages, default the series. Gives base_level,
    the level inputs (divided by it), the calendar inputs and the seasonal naive columns (raw units).
    """
    history = np.asarray(history, dtype="float64")
    h = np.asarray(horizon, dtype=np.int64)
    origin = np.asarray(origin_ts, dtype=np.int64)
    season = spec.season
    long_lag = spec.long_season if spec.long_season is not None else 4 * season
    mean_short, _ = _block_stats(history[:, : spec.short])
    mean_season, std_season = _block_stats(history[:, :season])
    prev_season, _ = _block_stats(history[:, season : 2 * season])
    mean_long, _ = _block_stats(history[:, :long_lag])
    recent = history[:, :season]
    newest = np.isfinite(recent).argmax(axis=1)
    last = np.where(np.isfinite(recent).any(axis=1), recent[np.arange(len(recent)), newest], np.nan)
    window = spec.level_window or season
    base = _block_stats((history if level is None else np.asarray(level, dtype="float64"))[:, :window])[0]
    base = np.where(np.isfinite(base) & (base > 0), base, mean_long)
    base = np.where(np.isfinite(base) & (base > 0), base, 1.0)
    # The lag the seasonal naive copies: the same phase in the last observed season.
    naive_lag = {s: s * np.ceil(h / s).astype(np.int64) - (h - 1) for s in spec.seasons}
    out: dict[str, np.ndarray] = {BASE: base}
    for s in spec.seasons:
        out[baseline_column(spec, s)] = _at_lag(history, naive_lag[s])
    phases = np.vstack([_at_lag(history, naive_lag[season] + i * season) for i in range(spec.phases)])
    count = np.isfinite(phases).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["last_value"] = last / base
        out["same_phase_1"] = out[baseline_column(spec, season)] / base
        out["same_phase_mean"] = (
            np.where(count > 0, np.nansum(phases, axis=0) / np.maximum(count, 1), np.nan) / base
        )
        out["same_phase_long"] = _at_lag(history, long_lag - (h - 1)) / base
        out["mean_short"] = mean_short / base
        out["mean_season"] = mean_season / base
        out["mean_long"] = mean_long / base
        out["std_season"] = std_season / base
        ok = np.isfinite(prev_season) & (prev_season > 0)
        out["trend_season"] = np.where(ok, mean_season / np.where(ok, prev_season, 1.0), np.nan)
    target_time = pd.to_datetime(origin + (h - 1) * spec.step_s, unit="s", utc=True)
    out["target_hour"] = np.asarray(target_time.hour, dtype=np.int64)
    out["target_dow"] = np.asarray(target_time.dayofweek, dtype=np.int64)
    out["origin_hour"] = np.asarray(pd.to_datetime(origin, unit="s", utc=True).hour, dtype=np.int64)
    return out


def silent_history(history: np.ndarray, spec: DirectSpec) -> np.ndarray:
    """Rows whose series was silent for the whole season before the origin (no level to forecast from)."""
    return ~np.isfinite(np.asarray(history, dtype="float64")[:, : spec.season]).any(axis=1)


class HistoryInputs(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Adds the direct inputs (base_level, level and calendar inputs, seasonal naives) to history rows.

    Each row holds its series' values by lag from the end of a history feature row (``lags``,
    lag 1 first), that row's end (``end``, epoch seconds), the forecast ``origin`` and the
    ``horizon``; ``level_lags`` (optional, same order) are what base_level averages. With an
    ``anchor`` name, the longest season's naive (else a shorter one's, else base_level) is added
    under it; with a ``short_anchor`` name, the shortest season's naive (else a longer one's, else
    base_level). Stateless: ``fit`` learns nothing.
    """

    def __init__(
        self,
        spec: DirectSpec,
        lags: Sequence[str] = (),
        end: str = "history_end_ts",
        level_lags: Sequence[str] = (),
        origin: str = ORIGIN,
        horizon: str = HORIZON,
        anchor: str | None = None,
        short_anchor: str | None = None,
    ) -> None:
        self.spec = spec
        self.lags = lags
        self.end = end
        self.level_lags = level_lags
        self.origin = origin
        self.horizon = horizon
        self.anchor = anchor
        self.short_anchor = short_anchor

    def fit(self, X: pd.DataFrame, y: Any = None) -> HistoryInputs:
        """Nothing to learn."""
        return self

    def histories(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """(values, level) by lag from the history row's end; level None means the values."""
        values = X[list(self.lags)].to_numpy("float64", na_value=np.nan)
        level = X[list(self.level_lags)].to_numpy("float64", na_value=np.nan) if self.level_lags else None
        return values, level

    def aligned(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """(values, level) by lag from each row's origin."""
        values, level = self.histories(X)
        end = pd.to_numeric(X[self.end]).to_numpy("float64", na_value=np.nan)
        origin = pd.to_numeric(X[self.origin]).to_numpy("int64")
        step = self.spec.step_s
        aligned_level = None if level is None else align_history(level, end, origin, step)
        return align_history(values, end, origin, step), aligned_level

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """X with the direct inputs added (same rows, same order)."""
        values, level = self.aligned(X)
        inputs = history_inputs(
            values,
            pd.to_numeric(X[self.horizon]).to_numpy("int64"),
            pd.to_numeric(X[self.origin]).to_numpy("int64"),
            self.spec,
            level=level,
        )
        added = pd.DataFrame(inputs, index=X.index)
        out = pd.concat([X.drop(columns=[c for c in added.columns if c in X.columns]), added], axis=1)
        for name, seasons in (
            (self.anchor, self.spec.seasons),  # shortest first, so the longest ends up on top
            (self.short_anchor, self.spec.seasons[::-1]),
        ):
            if name is not None:
                anchor = out[BASE]
                for season in seasons:
                    naive = out[baseline_column(self.spec, season)]
                    anchor = naive.where(naive.notna(), anchor)
                out[name] = anchor
        return out


class HistoryForecaster(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """A forecaster on history feature rows: ``inputs`` derives the direct inputs, ``forecaster`` fits them.

    Both parameters are kept as given; ``fit`` works on clones (``inputs_``, ``forecaster_``), so
    the same rows give the same inputs at training, evaluation and scoring.
    """

    def __init__(self, inputs: HistoryInputs, forecaster: Any) -> None:
        self.inputs = inputs
        self.forecaster = forecaster

    def fit(self, X: pd.DataFrame, y: Any, eval_set: Sequence[tuple[pd.DataFrame, Any]] | None = None) -> Any:
        """Derive the inputs of X (and of eval_set) and fit the forecaster on them."""
        self.inputs_ = clone(self.inputs).fit(X)
        self.forecaster_ = clone(self.forecaster)
        valid = [(self.inputs_.transform(x), v) for x, v in eval_set] if eval_set else None
        self.forecaster_.fit(self.inputs_.transform(X), y, eval_set=valid)
        return self

    @property
    def best_iteration(self) -> int | None:
        """The booster's early-stopped size (None without early stopping)."""
        return getattr(self.forecaster_, "best_iteration", None)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The median forecast per row."""
        return np.asarray(self.forecaster_.predict(self.inputs_.transform(X)), dtype="float64")

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """prediction (P50), lower and upper per row."""
        out: pd.DataFrame = self.forecaster_.predict_frame(self.inputs_.transform(X))
        return out

    def fitted_params(self) -> dict[str, Any]:
        """What the forecaster's fit chose (see IntervalForecaster.fitted_params), when it reports it."""
        report = getattr(self.forecaster_, "fitted_params", None)
        return dict(report()) if callable(report) else {}

    @property
    def fold_forecasts_(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The forecaster's out-of-sample fold forecasts of the fit's rows (positions, P50); [] if none."""
        return list(getattr(getattr(self, "forecaster_", None), "fold_forecasts_", None) or [])

    def interval(self, X: pd.DataFrame, point: np.ndarray) -> pd.DataFrame:
        """The forecaster's calibrated interval around a given P50 of each row (see IntervalForecaster)."""
        out: pd.DataFrame = self.forecaster_.interval(self.inputs_.transform(X), point)
        return out


def make_history_forecaster(
    inputs: HistoryInputs,
    features: Sequence[str],
    *,
    categorical: Sequence[str] = (SERIES,),
    monotone: Mapping[str, int] | None = None,
    offset: str | None = None,
    anchors: Sequence[str] = (),
    alternatives: Sequence[str] = (),
) -> Callable[[Mapping[str, Any]], HistoryForecaster]:
    """A ModelSpec.make_estimator: the history inputs, then an IntervalForecaster of these params
    (a ChosenForecaster among one per offset with ``alternatives``)."""
    interval = make_interval_forecaster(
        features,
        categorical=categorical,
        monotone=monotone,
        offset=offset,
        anchors=anchors,
        alternatives=alternatives,
    )

    def make(params: Mapping[str, Any]) -> HistoryForecaster:
        return HistoryForecaster(inputs=clone(inputs), forecaster=interval(params))

    return make


# --- scoring: the newest history rows, read online ---------------------------------------------


@dataclass(frozen=True)
class OnlineHistory:
    """The history rows a forecast made at as_of starts from: where they end, and their features."""

    end_ts: int  # the newest history row's end at or before as_of (the forecast's origin)
    features: pd.DataFrame  # one row per key: the key column and the `<view>__<feature>` columns


def newest_history_end(engine: Engine, view: FeatureView, as_of_ts: int) -> int | None:
    """The newest feature_ts of the view's current version at or before as_of (None: no row yet)."""
    with engine.connect() as conn:
        if not is_registered(conn, view):
            raise StaleFeatures(f"feature view {view.name} version {view.version[:8]} was never materialised")
        table = feature_table(view)
        newest = conn.execute(
            select(func.max(table.c.feature_ts)).where(
                and_(table.c.feature_ts <= as_of_ts, table.c.created_ts <= as_of_ts)  # known at as_of
            )
        ).scalar()
    return None if newest is None else int(newest)


def read_online_history(engine: Engine, refs: Sequence[str], as_of_ts: int, end_ts: int) -> OnlineHistory:
    """Every key's history features at as_of through get_online_features, after the freshness checks.

    The keys are those with a row ending at ``end_ts``; ``check_fresh`` refuses a view whose
    newest row is past its TTL or was built from raw partitions that are not (or no longer) validated.
    """
    view = parse_ref(refs[0], FEATURE_VIEWS)[0]
    check_fresh(engine, view, as_of_ts)
    table = feature_table(view)
    key = table.c[view.key]
    with engine.connect() as conn:
        keys = sorted(
            str(r[0])
            for r in conn.execute(
                select(key)
                .where(and_(table.c.feature_ts == end_ts, table.c.created_ts <= as_of_ts))
                .distinct()
            )
        )
    entity_keys = pd.DataFrame({view.key: pd.Series(keys, dtype=object)})
    features = get_online_features(engine, entity_keys, refs, as_of_ts)
    return OnlineHistory(end_ts, features.copy())  # one block: the callers add columns to it
