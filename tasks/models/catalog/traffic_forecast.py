"""traffic_forecast: concurrent viewers and bandwidth per region and hour, 48 hours ahead, P50 and P90.

Series: "<region>/viewers" and "<region>/bandwidth" from ``raw_traffic``, averaged per hour.
Inputs come from the feature store: the view ``traffic_history`` (entity ``series``) holds each
series' last 168 hourly values at every hour's end; training reads it point-in-time at each
forecast origin (``get_historical_features``), scoring at as_of (``get_online_features``, with
its TTL and freshness refusals), and the estimator's first step (HistoryInputs) derives the
inputs from those rows. The label builder reads validated raw partitions for the targets and
the seasonal-naive baselines only. One direct multi-horizon model serves every series and horizon
(tasks.models.families.forecasting.IntervalForecaster): forecast origins every ORIGIN_EVERY_H hours in the
label window, horizons 1..48, inputs from the hours before the origin only (same-hour values of
the last days, the value a week before the target hour, recent means, the target's hour and
weekday), level inputs divided by the series' last-week mean. The booster learns the correction
to the weekly seasonal naive (the value a week before the target hour), so a strongly weekly
series starts from its best naive forecast and a noisy one learns to smooth it. A second booster,
fitted alike, learns the correction to the daily naive (the value a day before the target hour),
the better start where weeks differ or the history holds few of them. For each, how much of its
correction to keep is chosen on the validation split: all of it, or the daily or weekly naive plus
0, 1/4, 1/2 or 3/4 of the way to the booster's forecast (0: the naive itself), whichever errs least
there; then the booster whose choice errs less there is kept (the weekly one on a tie). The choice
is logged with the run (correction_of, correction_anchor, correction_weight). The interval is
conformal on out-of-sample residuals (the validation split plus two forward-chaining folds over
the last third of the training origins) per series and horizon: "upper" is the P90 that capacity
planning sizes to, "lower" the P10.

Stable names another model builds on (capacity_plan plans from this forecast's P90):
``traffic_labels(conn, window)`` (the label builder), ``make_traffic_estimator(params)`` (the
estimator factory), ``traffic_scoring_frame(engine, spec, as_of)``, ``TRAFFIC_INPUTS`` (context
inputs), ``HISTORY_REFS`` (feature inputs) and the spec ``traffic_forecast``.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, func, select

from tasks.dates import utc
from tasks.featurestore.views import FEATURE_VIEWS, HISTORY_HOURS
from tasks.models.families.forecast_history import (
    HistoryInputs,
    lag_names,
    make_history_forecaster,
    newest_history_end,
    read_online_history,
    silent_history,
)
from tasks.models.families.forecasting import (
    CALENDAR_INPUTS,
    HORIZON,
    LABEL,
    LEVEL_INPUTS,
    ORIGIN,
    SERIES,
    TARGET,
    DirectSpec,
    Panel,
    attach_scale,
    baseline_columns,
    direct_rows,
    example_ids,
    forecast_scores,
    panel_from_long,
)
from tasks.models.plots import forecast_plots
from tasks.models.scoring_frame import StaleFeatures
from tasks.models.spec import (
    ChangeThreshold,
    ColumnBaseline,
    LabelWindow,
    ModelSpec,
    PromotionPolicy,
    ScoringTarget,
    ValueThreshold,
)
from tasks.models.training import epoch_seconds
from tasks.warehouse import raw_table, validated_between

HOUR_S = 3_600
HORIZON_H = 48
ORIGIN_EVERY_H = 3  # origins every 3 hours: every hour of the day is a target, training stays fast
SOURCE = "raw_traffic"
MEASURES: dict[str, str] = {"viewers": "concurrent_viewers", "bandwidth": "bandwidth_mbps"}
# The level is the last week's mean: one quiet or stormy day does not rescale the whole forecast.
DIRECT = DirectSpec(
    step_s=HOUR_S, horizons=HORIZON_H, season=24, long_season=168, short=3, phases=7, level_window=168
)
ANCHOR = "weekly_anchor"  # the value a week before the target hour: the booster learns corrections to it
DAILY_ANCHOR = "daily_anchor"  # the value a day before the target hour: the alternative booster's start
LOOKBACK_H = DIRECT.history + 24  # hours of history loaded before the first origin
HISTORY = "traffic_history"  # the feature view the inputs are derived from
HISTORY_END = f"{HISTORY}__history_end_ts"
HISTORY_LAGS: tuple[str, ...] = tuple(f"{HISTORY}__{n}" for n in lag_names("", HISTORY_HOURS, "h"))
HISTORY_REFS: tuple[str, ...] = tuple(c.replace("__", ":", 1) for c in (HISTORY_END, *HISTORY_LAGS))
METRICS = ("mase", "smape", "coverage_p90", "pinball_p90", "pinball_p50", "coverage_80", "mae")
SLICES = ("measure", "region", "horizon_band")
# Context inputs beside the history features: the series id, the horizon and the forecast origin
# (HistoryInputs derives everything else); ORIGIN and TARGET also order the calibration folds.
TRAFFIC_INPUTS: tuple[str, ...] = (SERIES, HORIZON, ORIGIN, TARGET)
# What the label frame keeps of direct_rows: ids, times, the target and the seasonal naives.
LABEL_COLUMNS: tuple[str, ...] = (SERIES, "event_ts", ORIGIN, "target_start_ts", TARGET, HORIZON, LABEL)
CATEGORICAL = (SERIES,)
HORIZON_BANDS = ((1, 6, "01-06h"), (7, 12, "07-12h"), (13, 24, "13-24h"), (25, HORIZON_H, "25-48h"))


def load_traffic(conn: Connection, start_ts: int, end_ts: int) -> pd.DataFrame:
    """Hourly mean viewers and bandwidth per region in [start_ts, end_ts), validated partitions only.

    Long rows (series, ts, value); a region without bandwidth (imported series) has no such rows.
    """
    raw = raw_table(SOURCE)
    hour = raw.c.event_ts - raw.c.event_ts % HOUR_S
    query = (
        select(
            raw.c.region,
            hour.label("ts"),
            func.avg(raw.c.concurrent_viewers).label("viewers"),
            func.avg(raw.c.bandwidth_mbps).label("bandwidth"),
        )
        .where(validated_between(raw, start_ts, end_ts))
        .group_by(raw.c.region, hour)
        .order_by(raw.c.region, hour)
    )
    rows = pd.DataFrame(conn.execute(query).fetchall(), columns=["region", "ts", "viewers", "bandwidth"])
    long = rows.melt(id_vars=["region", "ts"], value_vars=list(MEASURES), var_name="measure")
    long = long[long["value"].notna()]
    long[SERIES] = long["region"].astype(str) + "/" + long["measure"]
    return long.astype({"ts": "int64", "value": "float64"})[[SERIES, "ts", "value"]].reset_index(drop=True)


def _panel(conn: Connection, start_ts: int, end_ts: int) -> Panel:
    rows = load_traffic(conn, start_ts, end_ts)
    return panel_from_long(rows, step_s=HOUR_S, start_ts=start_ts, end_ts=end_ts)


def _band(h: pd.Series) -> pd.Series:
    out = pd.Series("", index=h.index, dtype=object)
    for lo, hi, name in HORIZON_BANDS:
        out[(h >= lo) & (h <= hi)] = name
    return out


def _decorate(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ids, slice columns and the bootstrap block (one forecast origin = one block)."""
    if frame.empty:
        return frame
    parts = frame[SERIES].str.split("/", n=1, expand=True)
    return frame.assign(
        example_id=example_ids(frame),
        region=parts[0],
        measure=parts[1],
        horizon_band=_band(frame[HORIZON]),
        query_id=frame["event_ts"].astype(str),  # rows of one origin are resampled together
    )


def origins(start_ts: int, last_ts: int, every_h: int = ORIGIN_EVERY_H) -> np.ndarray:
    """Forecast origins in [start_ts, last_ts]: hour boundaries that are multiples of every_h hours."""
    step = every_h * HOUR_S
    first = math.ceil(start_ts / step) * step
    return np.arange(first, last_ts + 1, step, dtype=np.int64)


def traffic_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """One row per (origin, series, horizon): origins every 3 h whose 48 h are over by window end."""
    horizon_s = max(window.horizon_s, HORIZON_H * HOUR_S)
    last_origin = window.end_ts - horizon_s
    if last_origin < window.start_ts:
        return pd.DataFrame()
    panel_start = window.start_ts - LOOKBACK_H * HOUR_S
    panel = _panel(conn, panel_start, window.end_ts)
    frame = direct_rows(panel, origins(window.start_ts, last_origin), DIRECT, labelled=True)
    if frame.empty:
        return frame
    # The inputs direct_rows computed from raw rows are dropped: the model derives them from the
    # feature store's history rows, joined to these rows point-in-time by the training set.
    frame = attach_scale(frame[[*LABEL_COLUMNS, *baseline_columns(DIRECT)]], panel, DIRECT.season)
    frame = _decorate(frame)
    return frame.sort_values(["event_ts", "example_id"], kind="stable").reset_index(drop=True)


def traffic_scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
    """The next 48 hours from as_of (floored to the hour), inputs from the newest history rows before it.

    History rows are read through the feature store at as_of. When the newest one ends before
    as_of (raw partitions validate once a day), the forecast starts where it ends and the target
    hours already past are dropped; a history older than the whole horizon is refused as stale.
    """
    now = epoch_seconds(as_of)
    origin = now // HOUR_S * HOUR_S
    data_end = newest_history_end(engine, FEATURE_VIEWS[HISTORY], now)
    if data_end is None:
        raise StaleFeatures(
            f"{spec.name}: no validated {SOURCE} hour in {HISTORY} before {as_of.isoformat()}"
        )
    if origin - data_end >= HORIZON_H * HOUR_S:
        newest = utc(data_end).isoformat()
        raise StaleFeatures(
            f"{spec.name}: newest validated {SOURCE} hour ends {newest}, "
            f"more than {HORIZON_H} h before {as_of.isoformat()}"
        )
    history = read_online_history(engine, spec.feature_refs, now, data_end).features
    lags = history[list(HISTORY_LAGS)].to_numpy("float64", na_value=np.nan)
    history = history[~silent_history(lags, DIRECT)].reset_index(drop=True)
    if history.empty:
        raise StaleFeatures(f"{spec.name}: too little validated {SOURCE} history before {as_of.isoformat()}")
    horizon = np.tile(np.arange(1, HORIZON_H + 1, dtype=np.int64), len(history))
    frame = history.loc[history.index.repeat(HORIZON_H)].reset_index(drop=True)
    frame["event_ts"] = np.int64(data_end)
    frame[ORIGIN] = np.int64(data_end)
    frame["target_start_ts"] = data_end + (horizon - 1) * HOUR_S
    frame[TARGET] = data_end + horizon * HOUR_S - 1
    frame[HORIZON] = horizon
    frame = frame[frame["target_start_ts"] >= origin].reset_index(drop=True)
    frame["step"] = (frame["target_start_ts"] - origin) // HOUR_S + 1
    return _decorate(frame)


def format_traffic_scores(spec: ModelSpec, frame: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """entity_key "<region>/<measure>", item = target hour (ISO UTC), rank = hours ahead, P50/P10/P90."""
    return forecast_scores(frame, pred, "%Y-%m-%dT%H:%M:%SZ")


FEATURES = (*LEVEL_INPUTS, *CALENDAR_INPUTS)
TRAFFIC_HISTORY_INPUTS = HistoryInputs(
    DIRECT, lags=HISTORY_LAGS, end=HISTORY_END, anchor=ANCHOR, short_anchor=DAILY_ANCHOR
)
make_traffic_estimator = make_history_forecaster(
    TRAFFIC_HISTORY_INPUTS,
    FEATURES,
    categorical=CATEGORICAL,
    offset=ANCHOR,
    anchors=baseline_columns(DIRECT),
    alternatives=(DAILY_ANCHOR,),
)

traffic_forecast = ModelSpec(
    name="traffic_forecast",
    kind="forecast",
    description=(
        "Concurrent viewers and bandwidth per region and hour, 1-48 hours ahead: P50 with P10/P90 "
        "conformal bounds; one row per (origin, series, horizon)."
    ),
    build_labels=traffic_labels,
    feature_refs=HISTORY_REFS,
    context_features=TRAFFIC_INPUTS,
    categorical=CATEGORICAL,
    make_estimator=make_traffic_estimator,
    params={
        "n_estimators": 300,
        "learning_rate": 0.08,
        "max_depth": 6,
        "min_child_weight": 10.0,
        "min_calibration": 60,
        "calibration_folds": 2,
        # Folds over the last third of the training origins: each fold's booster then sees at least
        # two thirds of the rows, close to the final model (an earlier fold, fitted on a few days,
        # over-states its error: P90 coverage 0.93-0.95 on the demo's holdout, measured).
        "calibration_span": 1 / 3,
    },
    baseline=ColumnBaseline("snaive_24h"),
    extra_baselines=(ColumnBaseline("snaive_168h"),),
    metrics=METRICS,
    primary_metric="mase",
    slices=SLICES,
    policy=PromotionPolicy(
        # P90 intervals that cover 85-95 % of what happened: the calibration a conformal interval
        # from a few hundred out-of-sample residuals can promise on any platform, real series
        # included. A narrower band (0.88-0.92 before) was decided by which platform the holdout
        # came from: equivalent simulated platforms (seeds 7 and 8, same size and period) cover
        # 0.899 and 0.949, further apart than the 23-origin bootstrap interval (±0.01) admits,
        # because neighbouring origins share their hours.
        value_thresholds=(ValueThreshold("coverage_p90", lower=0.85, upper=0.95),),
        change_thresholds=(
            ChangeThreshold("mase", slack=-0.02),
            ChangeThreshold("pinball_p90", slack=-0.02),
        ),
        beat_baseline=("mase",),
    ),
    scoring=ScoringTarget(entity="region", key=SERIES, score_range=(0.0, float("inf"))),
    label_sources=(SOURCE,),
    horizon_days=2,
    training_days=21,
    split=(0.7, 0.15, 0.15),
    retrain_cron="0 3 * * *",
    score_cron="0 * * * *",
    build_scoring_frame=traffic_scoring_frame,
    format_scores=format_traffic_scores,
    plots=forecast_plots,
    # Never sampled: its rows are series × origins × 48 horizons (57,312 at 21 days, whatever the
    # number of users), bounded by the regions and the window; the per-series, per-horizon conformal
    # intervals and the forward-chaining folds need every origin and horizon.
    sampling=None,
)
