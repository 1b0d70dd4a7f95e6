"""Shared forecasting machinery: direct multi-horizon frames, seasonal naive, an interval forecaster.

The pieces every forecaster in the catalog (user_growth, traffic_forecast, and capacity_plan,
which plans from traffic_forecast's P90) reuses:

* ``Panel``: a dense, regular grid of one or more series (rows = time steps, columns = series
  ids), NaN where a step was not observed; ``panel_from_long`` builds one from long rows.
* ``DirectSpec`` + ``direct_rows``: the direct multi-horizon frame. For every forecast origin (a
  step boundary) and every horizon h = 1..H it makes one row per series: the target is the h-th
  step after the origin (the step starting at ``origin + (h - 1) * step``), every input is
  computed from the steps before the origin only, level inputs are divided by the series'
  recent level (``base_level``) so one model serves series of any scale, and the seasonal
  naive forecasts (``snaive_24h``, ``snaive_168h``, ``snaive_7d``…, raw units) ride along as
  baseline columns. ``target_ts`` (the last second of the target step) lets the time split
  purge training rows that overlap a later split; ``origin_ts`` repeats event_ts as an input.
* ``seasonal_naive_index`` / ``seasonal_naive_scale`` / ``attach_scale``: which past step the
  seasonal naive copies, and the series' in-sample seasonal-naive MAE (the MASE "scale").
* ``IntervalForecaster``: one gradient-boosted model for every series and horizon (horizon and
  series id are inputs), fitted on the level-normalised target, optionally as a correction to
  an ``offset`` column (a naive anchor or a known component). ``predict_frame`` gives
  "prediction" (the median: absolute-error objective) and "lower"/"upper" (P10/P90 by default)
  from conformal quantiles of out-of-sample residuals per series and horizon: the validation
  split plus forward-chaining folds over the training origins (rolling-origin residuals; the
  validation split alone is a few days and under-covers a later holdout). Residuals are scaled
  by sqrt(prediction x the series' training level) (count-like noise), so intervals widen at
  busy hours and narrow at quiet ones, and stay calibrated on a series whose level moves.
  With ``anchors`` (seasonal-naive columns), the fit chooses on the validation split how much of
  the booster's forecast to keep: anchor + weight x (booster - anchor), weight in ``shrink``
  (weight 0 is the naive itself), and reports the choice (``fitted_params``). ``ChosenForecaster``
  fits several (e.g. boosters correcting different naives) and keeps the best on validation.
  ``make_interval_forecaster(features, ...)`` returns the ModelSpec factory.

* ``forecast_scores``: the published rows of any forecast (series × target step, P50 and interval).
* The same inputs from a history feature row, for the models that read their series through
  the feature store: ``tasks/models/families/forecast_history.py``.

Nothing here reads the clock or the database.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from xgboost import XGBRegressor

HORIZON = "horizon"
BASE = "base_level"
SERIES = "series"
LABEL = "label"
ORIGIN = "origin_ts"  # the forecast origin (= event_ts), an input column for calibration folds
TARGET = "target_ts"  # the last second of the target step (when its outcome is complete)

# Model inputs direct_rows computes, all divided by base_level (so scale-free) except the calendar.
LEVEL_INPUTS: tuple[str, ...] = (
    "last_value",
    "same_phase_1",
    "same_phase_mean",
    "same_phase_long",
    "mean_short",
    "mean_season",
    "mean_long",
    "std_season",
    "trend_season",
)
CALENDAR_INPUTS: tuple[str, ...] = ("target_hour", "target_dow", "origin_hour")

BOOSTER_DEFAULTS: dict[str, Any] = {
    "n_estimators": 400,
    "learning_rate": 0.05,
    "max_depth": 5,
    "min_child_weight": 5.0,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "reg_lambda": 1.0,
    "early_stopping_rounds": 40,
    "objective": "reg:absoluteerror",  # the median: what MASE, sMAPE and pinball_p50 reward
}
_FORECASTER_KEYS = (
    "lower_q",
    "upper_q",
    "min_calibration",
    "calibration_folds",
    "calibration_span",
    "monotone",
    "nonnegative",
    "shrink",
)
# The weights the booster's correction may be shrunk by towards a seasonal naive (see
# IntervalForecaster): 0 is the naive itself, 1 the booster's forecast as fitted.
SHRINK_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Panel:
    """Series on a regular grid: ``values[t, j]`` is series j at step t (NaN = not observed)."""

    start_ts: int  # epoch seconds of step 0
    step_s: int
    series: tuple[str, ...]
    values: np.ndarray  # (steps, series) float64

    @property
    def n_steps(self) -> int:
        """Number of time steps."""
        return int(self.values.shape[0])

    def step_ts(self) -> np.ndarray:
        """Epoch seconds at the start of every step."""
        return self.start_ts + np.arange(self.n_steps, dtype=np.int64) * self.step_s

    def frame(self) -> pd.DataFrame:
        """The panel as a wide DataFrame indexed by UTC step start."""
        index = pd.to_datetime(self.step_ts(), unit="s", utc=True)
        return pd.DataFrame(self.values, index=index, columns=list(self.series))


def panel_from_long(
    rows: pd.DataFrame,
    *,
    step_s: int,
    start_ts: int,
    end_ts: int,
    series: str = SERIES,
    ts: str = "ts",
    value: str = "value",
    fill: float | None = None,
) -> Panel:
    """A Panel over [start_ts, end_ts) from long rows (series, ts, value); steps aggregated by mean.

    ``fill`` replaces unobserved steps (e.g. 0.0 for counts where no event means zero).
    """
    start = start_ts - start_ts % step_s
    n = max(0, math.ceil((end_ts - start) / step_s))
    names = tuple(sorted(str(s) for s in rows[series].unique())) if len(rows) else ()
    values = np.full((n, len(names)), np.nan)
    if len(rows) and n:
        step = (rows[ts].to_numpy("int64") - start) // step_s
        col = pd.Categorical(rows[series].astype(str), categories=list(names)).codes
        keep = (step >= 0) & (step < n)
        sums = np.zeros_like(values)
        counts = np.zeros_like(values)
        np.add.at(sums, (step[keep], col[keep]), rows[value].to_numpy("float64")[keep])
        np.add.at(counts, (step[keep], col[keep]), 1.0)
        values = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)
    if fill is not None:
        values = np.where(np.isnan(values), fill, values)
    return Panel(start, step_s, names, values)


def seasonal_naive_index(origin_step: np.ndarray | int, horizon: np.ndarray | int, season: int) -> Any:
    """Step index the seasonal naive forecast copies: the same phase in the last observed season."""
    h = np.asarray(horizon)
    return np.asarray(origin_step) + h - 1 - season * np.ceil(h / season).astype(np.int64)


def seasonal_naive_scale(values: np.ndarray, season: int) -> np.ndarray:
    """Per column: mean |y_t - y_(t - season)| over observed pairs (NaN when there are none)."""
    out = np.full(values.shape[1], np.nan)
    if values.shape[0] <= season:
        return out
    diff = np.abs(values[season:] - values[:-season])
    ok = np.isfinite(diff)
    count = ok.sum(axis=0)
    total = np.where(ok, diff, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), out)


@dataclass(frozen=True)
class DirectSpec:
    """How direct multi-horizon rows are made from a panel.

    ``season`` is the main seasonal period in steps (24 hourly, 7 daily); ``long_season`` a
    second, longer one (168 hourly) or None; ``short`` the short rolling window; ``phases`` how
    many past seasons the same-phase mean averages; ``min_history`` the steps of history an
    origin needs (the seasonal naive needs at least one season).
    """

    step_s: int
    horizons: int
    season: int
    long_season: int | None = None
    short: int = 3
    phases: int = 4
    level_window: int | None = None  # steps base_level averages over; default one season
    min_history: int | None = None

    @property
    def history(self) -> int:
        """Steps of history an origin needs."""
        return self.min_history if self.min_history is not None else (self.long_season or self.season)

    @property
    def seasons(self) -> tuple[int, ...]:
        """The seasonal periods, in steps."""
        return (self.season,) if self.long_season is None else (self.season, self.long_season)


def _suffix(season: int, step_s: int) -> str:
    return f"{season * step_s // 3600}h" if step_s < 86_400 else f"{season * step_s // 86_400}d"


def baseline_column(spec: DirectSpec, season: int) -> str:
    """The seasonal-naive column name for a period: snaive_24h, snaive_168h, snaive_7d…"""
    return f"snaive_{_suffix(season, spec.step_s)}"


def _take(values: np.ndarray, step: np.ndarray, col: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """values[step, col] where 0 <= step < limit (strictly before the origin), else NaN."""
    ok = (step >= 0) & (step < limit) & (step < values.shape[0])
    out = np.full(step.shape, np.nan)
    out[ok] = values[step[ok], col[ok]]
    return out


def _window_stats(values: np.ndarray, origins: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the last ``width`` steps before each origin, per series: (origins, series)."""
    n, k = values.shape
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    c1 = np.vstack([np.zeros((1, k)), np.cumsum(filled, axis=0)])
    c2 = np.vstack([np.zeros((1, k)), np.cumsum(filled**2, axis=0)])
    cn = np.vstack([np.zeros((1, k)), np.cumsum(finite, axis=0)])
    hi = np.clip(origins, 0, n)
    lo = np.clip(origins - width, 0, n)
    count = cn[hi] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, (c1[hi] - c1[lo]) / np.maximum(count, 1), np.nan)
        var = np.where(count > 1, (c2[hi] - c2[lo]) / np.maximum(count, 1) - mean**2, np.nan)
    return mean, np.sqrt(np.clip(var, 0.0, None))


def direct_rows(
    panel: Panel,
    origins_ts: Sequence[int] | np.ndarray,
    spec: DirectSpec,
    *,
    labelled: bool = True,
    level: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per (origin, series, horizon 1..H): inputs from before the origin, label after it.

    ``labelled`` True keeps only rows whose target step is inside the panel and observed, and
    whose seasonal naive forecasts exist (a fair comparison); False (scoring) keeps every row.
    ``level`` (same shape as the panel's values) is what base_level is the last-season mean of;
    default the series itself (e.g. signups without campaign signups give a steadier level).
    """
    origins_ts = np.asarray(origins_ts, dtype=np.int64)
    origin_step = (origins_ts - panel.start_ts) // spec.step_s
    origin_step = origin_step[(origin_step >= spec.history) & (origin_step <= panel.n_steps)]
    k, h_max = len(panel.series), spec.horizons
    if len(origin_step) == 0 or k == 0:
        return pd.DataFrame()
    values = panel.values
    mean_short, _ = _window_stats(values, origin_step, spec.short)
    mean_season, std_season = _window_stats(values, origin_step, spec.season)
    prev_season, _ = _window_stats(values, origin_step - spec.season, spec.season)
    mean_long, _ = _window_stats(values, origin_step, spec.long_season or 4 * spec.season)
    last = np.full((len(origin_step), k), np.nan)
    # The newest observed value within one season (a gap of a few steps still counts).
    for lag in range(spec.season, 0, -1):
        step = origin_step - lag
        ok = step >= 0
        cand = np.full((len(origin_step), k), np.nan)
        cand[ok] = values[step[ok]]
        last = np.where(np.isfinite(cand), cand, last)
    window = spec.level_window or spec.season
    base = _window_stats(values if level is None else level, origin_step, window)[0]
    base = np.where(np.isfinite(base) & (base > 0), base, mean_long)
    # A series silent for the whole season before the origin has no level to forecast from.
    silent = ~np.isfinite(mean_season)
    base = np.where(np.isfinite(base) & (base > 0), base, 1.0)  # a zero level: keep units as they are

    # Broadcast to (origin, series, horizon) and flatten in that order.
    n_o = len(origin_step)
    o_idx = np.repeat(np.arange(n_o), k * h_max)
    s_idx = np.tile(np.repeat(np.arange(k), h_max), n_o)
    h = np.tile(np.arange(1, h_max + 1), n_o * k)
    o_step = origin_step[o_idx]
    target_step = o_step + h - 1

    def per_origin(a: np.ndarray) -> np.ndarray:
        return a[o_idx, s_idx]

    b = per_origin(base)
    out: dict[str, Any] = {
        SERIES: np.asarray(panel.series, dtype=object)[s_idx],
        "event_ts": panel.start_ts + o_step * spec.step_s,
        ORIGIN: panel.start_ts + o_step * spec.step_s,
        "target_start_ts": panel.start_ts + target_step * spec.step_s,
        # The last second the target step covers: a target wholly before a split's first origin
        # is kept by the purge, one that reaches into it is dropped.
        TARGET: panel.start_ts + (target_step + 1) * spec.step_s - 1,
        HORIZON: h.astype(np.int64),
        BASE: b,
    }
    snaive = {}
    for season in spec.seasons:
        idx = seasonal_naive_index(o_step, h, season)
        snaive[season] = _take(values, idx, s_idx, o_step)
        out[baseline_column(spec, season)] = snaive[season]
    phase = [
        _take(values, seasonal_naive_index(o_step, h, spec.season) - i * spec.season, s_idx, o_step)
        for i in range(spec.phases)
    ]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["last_value"] = per_origin(last) / b
        out["same_phase_1"] = snaive[spec.season] / b
        stacked = np.vstack(phase)
        count = np.isfinite(stacked).sum(axis=0)
        out["same_phase_mean"] = (
            np.where(count > 0, np.nansum(stacked, axis=0) / np.maximum(count, 1), np.nan) / b
        )
        long_lag = spec.long_season if spec.long_season is not None else 4 * spec.season
        out["same_phase_long"] = _take(values, target_step - long_lag, s_idx, o_step) / b
        out["mean_short"] = per_origin(mean_short) / b
        out["mean_season"] = per_origin(mean_season) / b
        out["mean_long"] = per_origin(mean_long) / b
        out["std_season"] = per_origin(std_season) / b
        prev = per_origin(prev_season)
        out["trend_season"] = np.where(np.isfinite(prev) & (prev > 0), per_origin(mean_season) / prev, np.nan)
    target_time = pd.to_datetime(out["target_start_ts"], unit="s", utc=True)
    origin_time = pd.to_datetime(out["event_ts"], unit="s", utc=True)
    out["target_hour"] = np.asarray(target_time.hour, dtype=np.int64)
    out["target_dow"] = np.asarray(target_time.dayofweek, dtype=np.int64)
    out["origin_hour"] = np.asarray(origin_time.hour, dtype=np.int64)
    out[LABEL] = _take(values, target_step, s_idx, np.full_like(o_step, panel.n_steps))
    frame = pd.DataFrame(out)
    keep = ~per_origin(silent)
    if labelled:
        keep &= frame[LABEL].notna().to_numpy()
        for season in spec.seasons:
            keep &= frame[baseline_column(spec, season)].notna().to_numpy()
    return frame[keep].reset_index(drop=True)


def baseline_columns(spec: DirectSpec) -> tuple[str, ...]:
    """The seasonal-naive column names of a DirectSpec, main season first."""
    return tuple(baseline_column(spec, s) for s in spec.seasons)


def attach_scale(frame: pd.DataFrame, panel: Panel, season: int, *, column: str = "scale") -> pd.DataFrame:
    """Add the MASE denominator: each series' in-sample seasonal-naive MAE over the panel."""
    scales = seasonal_naive_scale(panel.values, season)
    by_series = dict(zip(panel.series, scales, strict=True))
    scale = frame[SERIES].map(by_series).astype("float64")
    # A flat series has a zero naive error: fall back to its mean level so MASE stays finite.
    level = frame[SERIES].map(dict(zip(panel.series, np.nanmean(np.abs(panel.values), axis=0), strict=True)))
    scale = scale.where(scale > 0, level.astype("float64"))
    return frame.assign(**{column: scale.where(scale > 0, 1.0)})


def example_ids(frame: pd.DataFrame) -> pd.Series:
    """Stable example ids: "<series>@<origin ts>+<horizon>"."""
    return frame[SERIES].astype(str) + "@" + frame["event_ts"].astype(str) + "+" + frame[HORIZON].astype(str)


def forecast_scores(frame: pd.DataFrame, pred: pd.DataFrame, item_format: str) -> pd.DataFrame:
    """A forecast's published rows: entity_key = series, item = the target step's start in UTC
    (``item_format``), rank = steps ahead of the origin, score = P50, lower/upper = the interval."""
    items = pd.to_datetime(frame["target_start_ts"], unit="s", utc=True).dt.strftime(item_format)
    rank = frame["step"] if "step" in frame else frame[HORIZON]
    return pd.DataFrame(
        {
            "entity_key": frame[SERIES].astype(str).to_numpy(),
            "item": items.to_numpy(),
            "rank": rank.astype("int64").to_numpy(),
            "score": pred["prediction"].to_numpy("float64"),
            "lower": pred["lower"].to_numpy("float64"),
            "upper": pred["upper"].to_numpy("float64"),
        }
    )


# --- the estimator ------------------------------------------------------------------------


def _conformal(values: np.ndarray, q: float) -> float:
    """The split-conformal quantile of calibration residuals: the ceil((n + 1) q)-th smallest for an
    upper quantile, the floor((n + 1) q)-th for a lower one (clamped to the sample).

    The rank is the whole finite-sample correction: a new residual exchangeable with these falls at
    or below it with probability ceil((n + 1) q) / (n + 1), just above q. Interpolating a quantile
    at the corrected level instead (np.quantile's "higher" on (n - 1) steps) moves one rank further
    out: 0.917 instead of 0.902 coverage at n = 60, 0.95 instead of 0.905 at n = 20.
    """
    n = len(values)
    if n == 0:
        return float("nan")
    ordered = np.sort(np.asarray(values, dtype="float64"))
    rank = math.ceil((n + 1) * q) if q >= 0.5 else math.floor((n + 1) * q)
    return float(ordered[min(max(rank, 1), n) - 1])


class IntervalForecaster(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Direct multi-horizon gradient boosting with conformal intervals per horizon.

    Inputs: ``features`` (numeric columns), ``categorical`` (ordinal-coded columns, e.g. the
    series id; values unseen in training become missing), ``horizon`` and ``base`` column names,
    and the ``origin``/``target`` time columns (epoch seconds; used to order and purge the
    calibration folds, never as model inputs). The booster learns y / base, early-stopped on the
    validation split; with an ``offset`` column (a known component, e.g. the expected signups of
    a running campaign) the booster learns (y - offset) / base and the offset is added back.
    With ``anchors`` (seasonal-naive columns, raw units), the forecast is then chosen on the
    validation split (on the folds when there is none) among the booster's own and
    anchor + w x (booster - anchor) for every anchor and every weight w < 1 in ``shrink``: the
    least level-scaled absolute error wins, the booster's own only losing when strictly beaten.
    Weight 0 is the naive itself, so on that evidence the forecast is never worse than the best
    anchor, and the booster's correction is kept only as far as it helps out of sample (on a short
    or irregular series it often does not). The choice (``anchor_``, ``weight_``) is reported by
    ``fitted_params`` and training logs it with the run's parameters.
    "lower"/"upper" add the ``lower_q`` / ``upper_q`` conformal quantiles of
    that horizon's calibration residuals (scaled) to the prediction, per ``group`` (series) when
    the series has enough residuals, else pooled over series. Calibration residuals are
    out-of-sample: the validation split's, plus ``calibration_folds`` forward-chaining folds over
    the training rows (a booster of the same size fitted on the rows whose targets end before
    the fold, then scored on the fold), so the interval reflects more than one short stretch of
    time (the validation split alone is a few days and under-covers a later holdout). The folds
    cover the last ``calibration_span`` of the training origins: a fold earlier than that is fitted
    on a small share of the rows and over-states the final model's error. Residuals are divided by
    a count-like spread, sqrt(prediction x the series' training level): the level is fixed per
    series at fit, so residuals of a quieter past calibrate a busier holdout in the same units.
    They are the chosen forecast's residuals (the choice is made first).
    """

    def __init__(
        self,
        features: Sequence[str] = (),
        categorical: Sequence[str] = (SERIES,),
        horizon: str = HORIZON,
        base: str = BASE,
        params: Mapping[str, Any] | None = None,
        lower_q: float = 0.1,
        upper_q: float = 0.9,
        min_calibration: int = 30,
        calibration_folds: int = 2,
        calibration_span: float = 0.6,
        origin: str = ORIGIN,
        target: str = TARGET,
        monotone: Mapping[str, int] | None = None,
        nonnegative: bool = True,
        offset: str | None = None,
        group: str | None = SERIES,
        anchors: Sequence[str] = (),
        shrink: Sequence[float] = SHRINK_GRID,
    ) -> None:
        self.features = features
        self.categorical = categorical
        self.horizon = horizon
        self.base = base
        self.params = params
        self.lower_q = lower_q
        self.upper_q = upper_q
        self.min_calibration = min_calibration
        self.calibration_folds = calibration_folds
        self.calibration_span = calibration_span
        self.origin = origin
        self.target = target
        self.monotone = monotone
        self.nonnegative = nonnegative
        self.offset = offset
        self.group = group
        self.anchors = anchors
        self.shrink = shrink

    # -- inputs
    def _columns(self) -> list[str]:
        return [*self.features, *self.categorical, self.horizon]

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in [*self._columns(), self.base] if c not in X.columns]
        if missing:
            raise ValueError(f"forecaster input lacks columns {missing}")
        out = {
            c: pd.to_numeric(X[c], errors="coerce").to_numpy("float64", na_value=np.nan)
            for c in self.features
        }
        for c in self.categorical:
            codes = pd.Categorical(X[c].astype(str), categories=self.categories_[c]).codes.astype("float64")
            out[c] = np.where(codes < 0, np.nan, codes)
        out[self.horizon] = pd.to_numeric(X[self.horizon]).to_numpy("float64")
        return pd.DataFrame(out, index=X.index)

    def _base(self, X: pd.DataFrame) -> np.ndarray:
        b = pd.to_numeric(X[self.base], errors="coerce").to_numpy("float64", na_value=np.nan)
        return np.where(np.isfinite(b) & (b > 0), b, 1.0)

    def _unit(self, X: pd.DataFrame) -> np.ndarray:
        """Each row's noise unit: its series' typical level over the training rows (fixed at fit), else
        the row's own base level (a series unseen in training)."""
        base = self._base(X)
        units = getattr(self, "units_", None)
        if not units:
            return base
        known = pd.Series(self._group(X)).map(units).to_numpy("float64", na_value=np.nan)
        return np.where(np.isfinite(known) & (known > 0), known, base)

    def _spread(self, pred: np.ndarray, unit: np.ndarray) -> np.ndarray:
        # Count-like noise: sd grows with sqrt(prediction) in the series' own units; floored so quiet
        # hours keep some width. The unit is fixed per series, not the moving base level: with a
        # moving one the residuals of a quieter past would be scaled by a smaller unit than the
        # forecasts they calibrate, and a growing series' intervals would come out too wide
        # (sqrt(level now / level then); measured: P90 coverage 0.94-0.95 on a platform growing
        # 80 % in three weeks).
        return unit * np.sqrt(np.maximum(pred / unit, 0.05))

    def _booster(self, params: Mapping[str, Any], columns: Sequence[str]) -> XGBRegressor:
        kw = dict(params)
        seed = int(kw.pop("seed", 0))
        kw.pop("n_jobs", None)
        if self.monotone:
            kw["monotone_constraints"] = tuple(int(self.monotone.get(c, 0)) for c in columns)
        # One thread: on a shared, busy machine OpenMP threads contending cost 10-20x.
        return XGBRegressor(**kw, random_state=seed, n_jobs=1, tree_method="hist")

    def _offset(self, X: pd.DataFrame) -> np.ndarray:
        if self.offset is None:
            return np.zeros(len(X))
        values = pd.to_numeric(X[self.offset], errors="coerce").to_numpy("float64", na_value=np.nan)
        return np.where(np.isfinite(values), values, 0.0)

    def _scaled(self, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
        """What the booster learns: (y - offset) / base."""
        return (y - self._offset(X)) / self._base(X)

    def _unscaled(self, X: pd.DataFrame, raw: np.ndarray) -> np.ndarray:
        return self._clip(self._offset(X) + raw * self._base(X))

    def _residuals(self, X: pd.DataFrame, y: np.ndarray, point: np.ndarray) -> np.ndarray:
        return (y - point) / self._spread(point, self._unit(X))

    def _blend(self, X: pd.DataFrame, point: np.ndarray, anchor: str | None, weight: float) -> np.ndarray:
        """anchor + weight x (point - anchor) where the anchor column is known, else point."""
        if anchor is None or weight >= 1.0:
            return np.asarray(point, dtype="float64")
        naive = pd.to_numeric(X[anchor], errors="coerce").to_numpy("float64", na_value=np.nan)
        known = np.isfinite(naive)
        blended = np.where(known, naive + weight * (point - naive), point)
        return self._clip(np.asarray(blended, dtype="float64"))

    def _choose(
        self, blocks: Sequence[tuple[pd.DataFrame, np.ndarray, np.ndarray]]
    ) -> tuple[str | None, float]:
        """The (anchor, weight) with the least level-scaled absolute error on the out-of-sample blocks.

        The booster's own forecast (weight 1) is the default; an anchor and weight replace it only
        when strictly better on that evidence. Weight 0 is the seasonal naive itself, so on the
        evidence the choice is never worse than the best of the anchors.
        """
        self.selection_: dict[str, float] = {}
        self.selection_score_ = float("inf")
        if not blocks:
            return None, 1.0
        units = [self._unit(x) for x, _, _ in blocks]
        n = sum(len(x) for x, _, _ in blocks)

        def score(anchor: str | None, weight: float) -> float:
            total = 0.0
            for (x, y, point), unit in zip(blocks, units, strict=True):
                err = np.abs(y - self._blend(x, point, anchor, weight)) / unit
                total += float(np.nansum(err))
            return total / max(n, 1)

        best: tuple[str | None, float] = (None, 1.0)
        best_score = score(None, 1.0)
        self.selection_["booster"] = best_score
        for anchor in self.anchors:
            if any(anchor not in x.columns for x, _, _ in blocks):
                continue
            for weight in sorted({float(w) for w in self.shrink if 0.0 <= float(w) < 1.0}):
                value = score(anchor, weight)
                self.selection_[f"{anchor}@{weight:g}"] = value
                if value < best_score:
                    best, best_score = (anchor, weight), value
        self.selection_score_ = best_score
        return best

    # -- fit / predict
    def fit(self, X: pd.DataFrame, y: Any, eval_set: Sequence[tuple[pd.DataFrame, Any]] | None = None) -> Any:
        """Fit the booster on y/base (early-stopped on eval_set), then calibrate the intervals."""
        self.categories_ = {c: sorted(X[c].astype(str).unique()) for c in self.categorical}
        self.units_: dict[str, float] = {}
        levels = pd.Series(self._base(X)).groupby(self._group(X)).median()
        self.units_ = {str(k): float(v) for k, v in levels.items() if str(k) and np.isfinite(v) and v > 0}
        params = {**BOOSTER_DEFAULTS, **(self.params or {})}
        y_arr = np.asarray(y, dtype="float64")
        matrix = self._matrix(X)
        valid = eval_set[0] if eval_set and len(eval_set[0][0]) else None
        fit_kw: dict[str, Any] = {"verbose": False}
        if valid is None or not params.get("early_stopping_rounds"):
            params.pop("early_stopping_rounds", None)
        else:
            v_y = self._scaled(valid[0], np.asarray(valid[1], dtype="float64"))
            fit_kw["eval_set"] = [(self._matrix(valid[0]), v_y)]
        self.booster_ = self._booster(params, list(matrix.columns))
        self.booster_.fit(matrix, self._scaled(X, y_arr), **fit_kw)
        best = getattr(self.booster_, "best_iteration", None) if "eval_set" in fit_kw else None
        self.best_iteration_ = None if best is None else int(best)
        n_trees = int(params["n_estimators"]) if best is None else int(best) + 1

        # Out-of-sample evidence, (rows, labels, booster P50) per block: the validation split's and
        # the forward-chaining folds'. It chooses the anchor and weight (``_choose``), then the
        # interval is calibrated on the chosen forecast's residuals over every block.
        blocks: list[tuple[pd.DataFrame, np.ndarray, np.ndarray]] = []
        if valid is not None:
            blocks.append((valid[0], np.asarray(valid[1], dtype="float64"), self._booster_point(valid[0])))
        folds = self._fold_forecasts(X, y_arr, {**params, "n_estimators": n_trees})
        blocks.extend((X.iloc[rows], y_arr[rows], point) for rows, point in folds)
        # The choice is made on the validation split (the evidence early stopping reads too); without
        # one, on the folds.
        evidence = blocks[:1] if valid is not None else blocks
        self.anchor_, self.weight_ = self._choose(evidence)
        self.selection_rows_ = int(sum(len(x) for x, _, _ in evidence))
        chosen = [
            (x, y_part, self._blend(x, point, self.anchor_, self.weight_)) for x, y_part, point in blocks
        ]
        # Kept for a consumer that calibrates on the same out-of-sample evidence (capacity_plan's
        # headroom): each fold's row positions in X and its (chosen) P50 for them.
        self.fold_forecasts_ = [
            (rows, point)
            for (rows, _), (_, _, point) in zip(folds, chosen[len(chosen) - len(folds) :], strict=True)
        ]
        parts = [(x, self._residuals(x, y_part, point)) for x, y_part, point in chosen]
        self.calibrated_on_ = f"{len(parts)} out-of-sample blocks"
        if not parts:  # nothing held out at all: in-sample residuals (too narrow, but defined)
            parts.append((X, self._residuals(X, y_arr, self._point(X))))
            self.calibrated_on_ = "training rows (in-sample)"
        self.n_calibration_ = int(sum(len(r) for _, r in parts))
        h = np.concatenate([self._h(x) for x, _ in parts])
        g = np.concatenate([self._group(x) for x, _ in parts])
        self._calibrate(h, g, np.concatenate([r for _, r in parts]))
        return self

    @property
    def best_iteration(self) -> int | None:
        """The early-stopped booster's best round (None without early stopping), as training reports it."""
        return self.best_iteration_

    def _h(self, X: pd.DataFrame) -> np.ndarray:
        return pd.to_numeric(X[self.horizon]).to_numpy("int64")

    def _group(self, X: pd.DataFrame) -> np.ndarray:
        if self.group is None or self.group not in X:
            return np.full(len(X), "", dtype=object)
        return X[self.group].astype(str).to_numpy(dtype=object)

    def _fold_forecasts(
        self, X: pd.DataFrame, y: np.ndarray, params: Mapping[str, Any]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Forward-chaining folds over the last ``calibration_span`` of the training origins, each
        fold's booster fitted on the rows whose targets end before it (purged), then scored on the
        fold: (row positions in X, the fold booster's P50) per fold."""
        if self.calibration_folds <= 0 or self.origin not in X or self.target not in X:
            return []
        origin = pd.to_numeric(X[self.origin]).to_numpy("int64")
        target = pd.to_numeric(X[self.target]).to_numpy("int64")
        first = 1.0 - min(max(float(self.calibration_span), 0.0), 1.0)
        edges = np.quantile(origin, np.linspace(first, 1.0, self.calibration_folds + 1), method="lower")
        edges[-1] = origin.max() + 1
        fold_params = {k: v for k, v in params.items() if k != "early_stopping_rounds"}
        out = []
        for lo, hi in itertools.pairwise(edges):
            fit_rows = target < lo  # purged: no fitted target reaches into the fold
            fold = (origin >= lo) & (origin < hi)
            if fit_rows.sum() < self.min_calibration or not fold.any():
                continue
            booster = self._booster(fold_params, self._columns())
            sub = X[fit_rows]
            booster.fit(self._matrix(sub), self._scaled(sub, y[fit_rows]), verbose=False)
            rows = np.flatnonzero(fold)
            part = X.iloc[rows]
            point = self._unscaled(part, booster.predict(self._matrix(part)))
            out.append((rows, np.asarray(point, dtype="float64")))
        return out

    def _calibrate(self, h: np.ndarray, g: np.ndarray, resid: np.ndarray) -> None:
        """Conformal quantiles per (series, horizon), and pooled over series per horizon.

        A series with fewer residuals than the conformal quantile needs to be finite (9 for
        P10/P90) uses the pooled ones; a horizon with too few borrows its neighbours'.
        """
        ok = np.isfinite(resid)
        h, g, resid = h[ok], g[ok], resid[ok]
        self.horizons_ = [int(v) for v in np.unique(h)]
        self.quantiles_ = self._horizon_quantiles(h, resid)
        need = math.ceil(1 / (1 - self.upper_q)) - 1 if self.upper_q < 1 else 1
        self.group_quantiles_ = {
            str(name): self._horizon_quantiles(h[g == name], resid[g == name])
            for name in np.unique(g)
            if (g == name).sum() >= max(need, 1)
        }

    def _horizon_quantiles(self, h: np.ndarray, resid: np.ndarray) -> dict[int, tuple[float, float]]:
        horizons = np.unique(h)
        out: dict[int, tuple[float, float]] = {}
        span = int(horizons.max() - horizons.min()) if len(horizons) else 0
        for target in horizons:
            # Widen the window of neighbouring horizons until enough residuals are pooled.
            width = 0
            while (np.abs(h - target) <= width).sum() < self.min_calibration and width <= span:
                width += 1
            r = resid[np.abs(h - target) <= width]
            out[int(target)] = (_conformal(r, self.lower_q), _conformal(r, self.upper_q))
        return out

    def _quantiles(self, h: np.ndarray, g: np.ndarray) -> np.ndarray:
        """(rows, 2) lower/upper residual quantiles: the series' own, else pooled; nearest horizon."""
        q = np.zeros((len(h), 2))
        for name in np.unique(g) if len(h) else []:
            table = self.group_quantiles_.get(str(name), self.quantiles_)
            known = np.asarray(sorted(table), dtype="int64")
            if not len(known):
                continue
            rows = g == name
            # A horizon that was never calibrated borrows the nearest calibrated one.
            nearest = known[np.abs(h[rows][:, None] - known[None, :]).argmin(axis=1)]
            q[rows] = np.array([table[int(v)] for v in nearest]).reshape(-1, 2)
        return q

    def _clip(self, pred: np.ndarray) -> np.ndarray:
        return np.maximum(pred, 0.0) if self.nonnegative else pred

    def _booster_point(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self._unscaled(X, self.booster_.predict(self._matrix(X))), dtype="float64")

    def _point(self, X: pd.DataFrame) -> np.ndarray:
        anchor = getattr(self, "anchor_", None)
        return self._blend(X, self._booster_point(X), anchor, float(getattr(self, "weight_", 1.0)))

    def fitted_params(self) -> dict[str, Any]:
        """What the fit chose: the anchor the booster's correction is shrunk towards ("none": the
        booster as fitted), the weight kept of the correction, and the rows that chose them."""
        return {
            "correction_anchor": self.anchor_ or "none",
            "correction_weight": float(self.weight_),
            "selection_rows": int(self.selection_rows_),
        }

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The median forecast per row."""
        return self._point(X)

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """prediction (P50), lower (P10 by default) and upper (P90) per row."""
        return self.interval(X, self._point(X))

    def interval(self, X: pd.DataFrame, point: np.ndarray) -> pd.DataFrame:
        """The calibrated interval around a given P50 of each row (``predict_frame`` gives the final
        booster's; a fold's own P50 from ``fold_forecasts_`` gives that fold's out-of-sample one)."""
        point = np.asarray(point, dtype="float64")
        spread = self._spread(point, self._unit(X))
        q = self._quantiles(self._h(X), self._group(X))
        lower = np.minimum(self._clip(point + q[:, 0] * spread), point)
        upper = np.maximum(point + q[:, 1] * spread, point)
        return pd.DataFrame({"prediction": point, "lower": lower, "upper": upper}, index=X.index)


def make_interval_forecaster(
    features: Sequence[str],
    *,
    categorical: Sequence[str] = (SERIES,),
    monotone: Mapping[str, int] | None = None,
    offset: str | None = None,
    anchors: Sequence[str] = (),
    alternatives: Sequence[str] = (),
) -> Callable[[Mapping[str, Any]], IntervalForecaster | ChosenForecaster]:
    """A ModelSpec.make_estimator: forecaster options are taken out of params, the rest go to the booster.

    With ``alternatives`` (further offset columns), a ChosenForecaster of one IntervalForecaster per
    offset (``offset`` first), the one that errs least on the validation split kept.
    """

    def one(params: Mapping[str, Any], correction_of: str | None) -> IntervalForecaster:
        options = {k: params[k] for k in _FORECASTER_KEYS if k in params}
        booster = {k: v for k, v in params.items() if k not in _FORECASTER_KEYS}
        return IntervalForecaster(
            features=tuple(features),
            categorical=tuple(categorical),
            params=booster,
            monotone=options.pop("monotone", monotone),
            offset=correction_of,
            anchors=tuple(anchors),
            **options,
        )

    def make(params: Mapping[str, Any]) -> IntervalForecaster | ChosenForecaster:
        if not alternatives:
            return one(params, offset)
        return ChosenForecaster(tuple(one(params, o) for o in (offset, *alternatives)))

    return make


class ChosenForecaster(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Several IntervalForecasters (e.g. boosters correcting different seasonal naives), fitted
    alike; the one whose chosen forecast errs least on the validation split (its
    ``selection_score_``: level-scaled absolute error) is kept as ``forecaster_``, the first on a
    tie. Predictions, intervals and fold forecasts are the kept one's; ``fitted_params`` adds
    which it is (``correction_of``: its offset column). Parameters are kept as given."""

    def __init__(self, candidates: Sequence[IntervalForecaster] = ()) -> None:
        self.candidates = candidates

    def fit(self, X: pd.DataFrame, y: Any, eval_set: Sequence[tuple[pd.DataFrame, Any]] | None = None) -> Any:
        """Fit a clone of every candidate, keep the best on the validation split."""
        if not self.candidates:
            raise ValueError("ChosenForecaster needs at least one candidate")
        fitted = [clone(candidate).fit(X, y, eval_set=eval_set) for candidate in self.candidates]
        scores = [float(getattr(f, "selection_score_", float("inf"))) for f in fitted]
        self.scores_ = {str(f.offset): score for f, score in zip(fitted, scores, strict=True)}
        # The first of the least (min keeps the first on a tie): the first candidate wins ties.
        self.forecaster_: IntervalForecaster = fitted[min(range(len(fitted)), key=scores.__getitem__)]
        return self

    @property
    def best_iteration(self) -> int | None:
        """The kept forecaster's early-stopped size."""
        return self.forecaster_.best_iteration

    @property
    def fold_forecasts_(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The kept forecaster's fold forecasts (see IntervalForecaster)."""
        return list(getattr(self.forecaster_, "fold_forecasts_", None) or [])

    def fitted_params(self) -> dict[str, Any]:
        """Which candidate was kept (its offset column) and what its own fit chose."""
        return {"correction_of": str(self.forecaster_.offset), **self.forecaster_.fitted_params()}

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The kept forecaster's median forecast."""
        return np.asarray(self.forecaster_.predict(X), dtype="float64")

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """The kept forecaster's P50 and interval."""
        return self.forecaster_.predict_frame(X)

    def interval(self, X: pd.DataFrame, point: np.ndarray) -> pd.DataFrame:
        """The kept forecaster's calibrated interval around a given P50."""
        return self.forecaster_.interval(X, point)
