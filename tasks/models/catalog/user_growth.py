"""user_growth: daily new users and daily active users (DAU) for the next 14 days, P50 with P10/P90.

Series (UTC days): "new_users" = signups in ``raw_users``; "dau" = distinct users starting a
watch session in ``raw_watch_sessions``. Inputs come from the feature store: the view
``growth_history`` (entity ``platform``) holds the last 35 days of signups, campaign signups and
DAU at every day's end; training reads it point-in-time at each origin
(``get_historical_features``), scoring at as_of (``get_online_features``, TTL and freshness
refusals), and the estimator's first step (GrowthInputs) derives every input from those rows.
The label builder reads validated raw partitions for the targets and the seasonal naive only
(a validated day without rows counts 0, a day not validated is missing). One direct multi-horizon model
(tasks.models.families.forecasting.IntervalForecaster) serves both series and all 14 horizons: horizon and
series id are inputs, the target is divided by the series' last-7-day level, so the two series
(tens vs thousands a day) share what they have in common (weekday pattern, campaign effect, how
fast a level moves) and DAU, which has only the simulated weeks of history, borrows strength
from the longer signup history. One model per series would leave DAU with a handful of origins.

Forecast origins: every midnight of the label window whose 14 days are over by its end (a
rolling-origin backtest: the holdout holds several origins, each with horizons 1..14; target_ts
lets the time split purge training rows that overlap it).

Campaigns. The simulator's marketing campaigns show up only as signups with channel
"campaign"; a campaign calendar known in advance is not in the raw data, so everything is read
from the days before the origin. (1) The signup level (base_level of "new_users") is the mean of
organic signups, campaign ones excluded: a campaign is a transient on top of a steady level.
(2) A running campaign (a day with at least CAMPAIGN_SHARE_ON of its signups from "campaign",
up to yesterday) is expected to go on at its pace so far for as long as the finished campaigns
in the history lasted (their median length; CAMPAIGN_DAYS_PRIOR days when none finished yet);
those expected campaign signups per target day are the booster's offset (``campaign_expected``),
the booster learns the rest. This works from the first campaign on: at demo scale the purged
training rows hold no origin inside a campaign, so a learned campaign effect alone would be
nothing. (3) Campaign inputs for the booster: campaign share of signups yesterday (monotone
increasing) and over 3 days, days the current campaign has run, days since the last campaign
day. A campaign that starts after the origin cannot be foreseen; it is in the residuals.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, and_, case, func, literal, select

from tasks.dates import partition_day
from tasks.featurestore.views import FEATURE_VIEWS, GROWTH_MEASURES, HISTORY_DAYS
from tasks.models.families.forecast_history import (
    HistoryInputs,
    align_history,
    lag_names,
    make_history_forecaster,
    newest_history_end,
    read_online_history,
    silent_history,
)
from tasks.models.families.forecasting import (
    HORIZON,
    LABEL,
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
)
from tasks.models.training import epoch_seconds
from tasks.schema import partition_status
from tasks.warehouse import raw_table, validated_between

DAY_S = 86_400
HORIZON_D = 14
SERIES_NAMES = ("dau", "new_users")
LABEL_SOURCES = ("raw_users", "raw_watch_sessions")
DIRECT = DirectSpec(step_s=DAY_S, horizons=HORIZON_D, season=7, long_season=None, short=3, phases=4)
LOOKBACK_D = 35  # days of history loaded before the first origin (4 weeks of same-weekday values)
CAMPAIGN_SHARE_ON = 0.2  # a day whose signups are at least this share "campaign" is a campaign day
# Expected campaign length while the history holds no finished campaign to measure (a prior).
CAMPAIGN_DAYS_PRIOR = 4
CAMPAIGN_INPUTS: tuple[str, ...] = (
    "campaign_share_1d",
    "campaign_share_3d",
    "campaign_days",
    "days_since_campaign",
)
EXPECTED = "campaign_expected"  # expected campaign signups on the target day (the model's offset)
# A lean set on purpose: a few hundred training rows from one series, so inputs that only
# describe a level's history (long means, spread, a week-over-week ratio) let the trees
# memorise one past campaign and extrapolate it to an unrelated weekday.
FEATURES: tuple[str, ...] = (
    "last_value",
    "same_phase_1",
    "same_phase_mean",
    "mean_short",
    "mean_season",
    "trend_season",
    "target_dow",
    *CAMPAIGN_INPUTS,
)
HISTORY = "growth_history"  # the feature view the inputs are derived from
HISTORY_END = f"{HISTORY}__history_end_ts"
HISTORY_LAGS: dict[str, tuple[str, ...]] = {
    m: tuple(f"{HISTORY}__{n}" for n in lag_names(f"{m}_", HISTORY_DAYS, "d")) for m in GROWTH_MEASURES
}
HISTORY_REFS: tuple[str, ...] = tuple(
    c.replace("__", ":", 1) for c in (HISTORY_END, *(c for m in GROWTH_MEASURES for c in HISTORY_LAGS[m]))
)
# Context inputs beside the history features; GrowthInputs derives everything else.
GROWTH_INPUTS: tuple[str, ...] = (SERIES, HORIZON, ORIGIN, TARGET)
LABEL_COLUMNS: tuple[str, ...] = (SERIES, "event_ts", ORIGIN, "target_start_ts", TARGET, HORIZON, LABEL)
CATEGORICAL = (SERIES,)
METRICS = ("mase", "smape", "coverage_80", "mae", "pinball_p50", "pinball_p90")
SLICES = ("series", "horizon")
NEVER_DAYS = 60.0  # days_since_campaign when no campaign day is in the history


def _validated_days(conn: Connection, table: str, start_ts: int, end_ts: int) -> np.ndarray:
    """Epoch-second midnights of the table's validated partitions in [start_ts, end_ts)."""
    ps = partition_status
    dates = conn.execute(
        select(ps.c.partition_date).where(
            and_(
                ps.c.table_name == table,
                ps.c.status == "validated",
                ps.c.partition_date.between(partition_day(start_ts), partition_day(end_ts - 1)),
            )
        )
    ).scalars()
    ts = [int(dt.datetime.combine(d, dt.time(), dt.UTC).timestamp()) for d in dates]
    return np.asarray(sorted(t for t in ts if start_ts <= t < end_ts), dtype=np.int64)


def load_daily(conn: Connection, start_ts: int, end_ts: int) -> pd.DataFrame:
    """Per UTC day in [start_ts, end_ts): new_users, campaign signups and dau; NaN where not validated."""
    users, watch = raw_table("raw_users"), raw_table("raw_watch_sessions")
    day_u = users.c.event_ts - users.c.event_ts % DAY_S
    signups = conn.execute(
        select(
            day_u.label("ts"),
            func.count().label("new_users"),
            func.sum(case((users.c.channel == literal("campaign"), 1), else_=0)).label("campaign"),
        )
        .where(validated_between(users, start_ts, end_ts))
        .group_by(day_u)
    ).all()
    day_w = watch.c.event_ts - watch.c.event_ts % DAY_S
    active = conn.execute(
        select(day_w.label("ts"), func.count(func.distinct(watch.c.user_key)).label("dau"))
        .where(validated_between(watch, start_ts, end_ts))
        .group_by(day_w)
    ).all()
    days = np.arange(start_ts - start_ts % DAY_S, end_ts, DAY_S, dtype=np.int64)
    frame = pd.DataFrame(
        index=pd.Index(days, name="ts"), columns=["new_users", "campaign", "dau"], dtype="float64"
    )
    # A validated day without rows had none (0); a day never validated stays missing.
    frame.loc[
        frame.index.isin(_validated_days(conn, users.name, start_ts, end_ts)), ["new_users", "campaign"]
    ] = 0.0
    frame.loc[frame.index.isin(_validated_days(conn, watch.name, start_ts, end_ts)), "dau"] = 0.0
    for r in signups:
        if int(r.ts) in frame.index:
            frame.loc[int(r.ts), ["new_users", "campaign"]] = [float(r.new_users), float(r.campaign or 0)]
    for r in active:
        if int(r.ts) in frame.index:
            frame.loc[int(r.ts), "dau"] = float(r.dau)
    return frame


def _panel(daily: pd.DataFrame) -> Panel:
    values = daily[list(SERIES_NAMES)].to_numpy("float64")
    return Panel(int(daily.index[0]), DAY_S, SERIES_NAMES, values)


def campaign_inputs(signups: np.ndarray, campaign: np.ndarray) -> pd.DataFrame:
    """Campaign inputs plus the running campaign's pace and days left, per row of days by lag.

    ``signups[i, j]`` / ``campaign[i, j]`` are row i's signups and campaign signups j + 1 days
    before its origin (NaN: a day not known).
    """
    rows = []
    for s_lag, c_lag in zip(np.asarray(signups, "float64"), np.asarray(campaign, "float64"), strict=True):
        known = np.flatnonzero(np.isfinite(s_lag))
        n = int(known.max()) + 1 if len(known) else 0  # days of history, oldest known first below
        s, c = s_lag[:n][::-1], c_lag[:n][::-1]

        def share(days: int, s: np.ndarray = s, c: np.ndarray = c) -> float:
            total = np.nansum(s[-days:])
            return float(np.nansum(c[-days:]) / total) if total > 0 else 0.0

        with np.errstate(invalid="ignore"):
            on = np.where(s > 0, c / np.where(s > 0, s, 1.0), 0.0) >= CAMPAIGN_SHARE_ON
        run = 0
        while run < n and on[n - 1 - run]:
            run += 1
        last_on = np.flatnonzero(on)
        # Campaigns that ended before the current run tell how long one lasts.
        lengths = _run_lengths(on[: n - run])
        typical = float(np.median(lengths)) if lengths else float(CAMPAIGN_DAYS_PRIOR)
        rows.append(
            {
                "campaign_share_1d": share(1) if n else np.nan,
                "campaign_share_3d": share(3) if n else np.nan,
                "campaign_days": float(run),
                "days_since_campaign": float(n - last_on[-1]) if len(last_on) else NEVER_DAYS,
                "campaign_rate": float(np.nanmean(c[n - run : n])) if run else 0.0,
                "campaign_left": max(round(typical) - run, 0) if run else 0,
            }
        )
    return pd.DataFrame(rows, columns=[*CAMPAIGN_INPUTS, "campaign_rate", "campaign_left"])


def _run_lengths(on: np.ndarray) -> list[int]:
    """Lengths of the runs of True that ended (a False follows them)."""
    lengths, run = [], 0
    for flag in on:
        if flag:
            run += 1
        elif run:
            lengths.append(run)
            run = 0
    return lengths


class GrowthInputs(HistoryInputs):
    """HistoryInputs of growth_history rows: each row's own series, campaign inputs and offset.

    A "new_users" row's values are the signups and its level the organic ones (campaign signups
    excluded: a campaign is a transient on top of the level, carried by the offset); a "dau"
    row's values and level are DAU. A running campaign goes on at its recent pace for its
    expected remaining days: that is EXPECTED on new-user rows (0 elsewhere).
    """

    def __init__(
        self,
        spec: DirectSpec = DIRECT,
        end: str = HISTORY_END,
        origin: str = ORIGIN,
        horizon: str = HORIZON,
        series: str = SERIES,
    ) -> None:
        super().__init__(spec, end=end, origin=origin, horizon=horizon)
        self.series = series

    def _lags(self, X: pd.DataFrame, measure: str) -> np.ndarray:
        return X[list(HISTORY_LAGS[measure])].to_numpy("float64", na_value=np.nan)

    def histories(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """(values, level) of each row's series by lag from the history row's end."""
        signups, campaign, dau = (self._lags(X, m) for m in ("new_users", "campaign", "dau"))
        new_users = (X[self.series].astype(str) == "new_users").to_numpy()[:, None]
        return np.where(new_users, signups, dau), np.where(new_users, signups - campaign, dau)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """X with the direct inputs, the campaign inputs and EXPECTED added."""
        out = super().transform(X)
        end = pd.to_numeric(X[self.end]).to_numpy("float64", na_value=np.nan)
        origin = pd.to_numeric(X[self.origin]).to_numpy("int64")
        signups, campaign = (
            align_history(self._lags(X, m), end, origin, DAY_S) for m in ("new_users", "campaign")
        )
        extra = campaign_inputs(signups, campaign)
        running = (out[self.series].astype(str) == "new_users").to_numpy() & (
            out[self.horizon].to_numpy("int64") <= extra["campaign_left"].to_numpy()
        )
        added = pd.DataFrame({c: extra[c].to_numpy() for c in CAMPAIGN_INPUTS}, index=out.index)
        added[EXPECTED] = np.where(running, extra["campaign_rate"].to_numpy("float64"), 0.0)
        kept = out.drop(columns=[c for c in added.columns if c in out.columns])
        return pd.concat([kept, added], axis=1)


GROWTH_HISTORY_INPUTS = GrowthInputs()


def _label_rows(daily: pd.DataFrame, origins_ts: np.ndarray, *, labelled: bool) -> pd.DataFrame:
    """Direct rows of both series from a load_daily frame: ids, times, target and seasonal naive only."""
    frame = direct_rows(_panel(daily), origins_ts, DIRECT, labelled=labelled)
    if frame.empty:
        return frame
    frame = frame[[*LABEL_COLUMNS, *baseline_columns(DIRECT)]].copy()
    frame["example_id"] = example_ids(frame)
    frame["query_id"] = frame["event_ts"].astype(str)  # the bootstrap resamples whole origins
    return frame


def history_rows(daily: pd.DataFrame, origins_ts: np.ndarray) -> pd.DataFrame:
    """The growth_history columns each origin would be served, from a load_daily frame (days before it)."""
    day_ts = daily.index.to_numpy("int64")
    values = {"new_users": daily["new_users"], "campaign": daily["campaign"], "dau": daily["dau"]}
    out: dict[str, np.ndarray] = {"event_ts": np.asarray(origins_ts, dtype=np.int64)}
    out[HISTORY_END] = out["event_ts"]
    for measure, series in values.items():
        lookup = dict(zip(day_ts, series.to_numpy("float64"), strict=True))
        for k, column in enumerate(HISTORY_LAGS[measure], start=1):
            out[column] = np.array([lookup.get(int(o) - k * DAY_S, np.nan) for o in out["event_ts"]])
    return pd.DataFrame(out)


def growth_rows(daily: pd.DataFrame, origins_ts: np.ndarray, *, labelled: bool) -> pd.DataFrame:
    """Direct rows with the history columns the store would serve and the inputs derived from them."""
    frame = _label_rows(daily, origins_ts, labelled=labelled)
    if frame.empty:
        return frame
    frame = frame.merge(history_rows(daily, np.unique(frame["event_ts"])), on="event_ts", how="left")
    return GROWTH_HISTORY_INPUTS.transform(frame)


def growth_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """One row per (origin midnight, series, horizon 1..14) whose target day is over by window end."""
    last_origin = window.end_ts - max(window.horizon_s, HORIZON_D * DAY_S)
    first_origin = -(-window.start_ts // DAY_S) * DAY_S
    if last_origin < first_origin:
        return pd.DataFrame()
    daily = load_daily(conn, first_origin - LOOKBACK_D * DAY_S, window.end_ts)
    frame = _label_rows(daily, np.arange(first_origin, last_origin + 1, DAY_S), labelled=True)
    if frame.empty:
        return frame
    frame = attach_scale(frame, _panel(daily), DIRECT.season)
    return frame.sort_values(["event_ts", "example_id"], kind="stable").reset_index(drop=True)


def growth_scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
    """The 14 days from as_of's day on, inputs from the newest history row before it.

    The history row is read through the feature store at as_of. When it ends before as_of's
    day, the forecast starts where it ends and the days already past are dropped; a history
    older than the horizon is refused as stale.
    """
    now = epoch_seconds(as_of)
    origin = now // DAY_S * DAY_S
    data_end = newest_history_end(engine, FEATURE_VIEWS[HISTORY], now)
    if data_end is None:
        raise StaleFeatures(
            f"{spec.name}: no validated day of {', '.join(LABEL_SOURCES)} in {HISTORY} before {as_of.date()}"
        )
    if origin - data_end >= HORIZON_D * DAY_S:
        raise StaleFeatures(
            f"{spec.name}: newest validated day is {partition_day(data_end - DAY_S)}, "
            f"over {HORIZON_D} days old"
        )
    history = read_online_history(engine, spec.feature_refs, now, data_end).features
    horizon = np.arange(1, HORIZON_D + 1, dtype=np.int64)
    parts = [history.assign(**{SERIES: name}) for name in SERIES_NAMES]
    per_series = pd.concat(parts, ignore_index=True)
    values, _ = GROWTH_HISTORY_INPUTS.histories(per_series)
    per_series = per_series[~silent_history(values, DIRECT)].reset_index(drop=True)
    if per_series.empty:
        raise StaleFeatures(f"{spec.name}: too little validated history before {as_of.date()}")
    frame = per_series.loc[per_series.index.repeat(HORIZON_D)].reset_index(drop=True)
    h = np.tile(horizon, len(per_series))
    frame["event_ts"] = np.int64(data_end)
    frame[ORIGIN] = np.int64(data_end)
    frame["target_start_ts"] = data_end + (h - 1) * DAY_S
    frame[TARGET] = data_end + h * DAY_S - 1
    frame[HORIZON] = h
    frame = frame[frame["target_start_ts"] >= origin].reset_index(drop=True)
    frame["step"] = (frame["target_start_ts"] - origin) // DAY_S + 1
    return frame


def format_growth_scores(spec: ModelSpec, frame: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """entity_key = series, item = target day (ISO date), rank = days ahead, score P50, P10/P90 bounds."""
    return forecast_scores(frame, pred, "%Y-%m-%d")


make_growth_estimator = make_history_forecaster(
    GROWTH_HISTORY_INPUTS,
    FEATURES,
    categorical=CATEGORICAL,
    monotone={"campaign_share_1d": 1},
    offset=EXPECTED,
)

user_growth = ModelSpec(
    name="user_growth",
    kind="forecast",
    description=(
        "Daily new users and DAU for the next 14 days: P50 with P10/P90 conformal bounds; one row "
        "per (origin day, series, horizon)."
    ),
    build_labels=growth_labels,
    feature_refs=HISTORY_REFS,
    context_features=GROWTH_INPUTS,
    categorical=CATEGORICAL,
    make_estimator=make_growth_estimator,
    params={
        "n_estimators": 150,
        "learning_rate": 0.05,
        "max_depth": 2,
        "min_child_weight": 3.0,
        # The validation split keeps a few rows once the 14-day purge is done: too few to
        # early-stop on, so the size is fixed and validation only calibrates the intervals.
        "early_stopping_rounds": 0,
        "min_calibration": 20,
        "calibration_folds": 2,
    },
    baseline=ColumnBaseline("snaive_7d"),
    metrics=METRICS,
    primary_metric="mase",
    slices=SLICES,
    policy=PromotionPolicy(
        change_thresholds=(ChangeThreshold("mase", slack=-0.05),),
        beat_baseline=("mase",),
    ),
    scoring=ScoringTarget(entity="platform", key=SERIES, score_range=(0.0, float("inf"))),
    label_sources=LABEL_SOURCES,
    horizon_days=HORIZON_D,
    training_days=56,
    split=(0.6, 0.2, 0.2),
    retrain_cron="0 3 * * 1",
    score_cron="30 4 * * *",
    build_scoring_frame=growth_scoring_frame,
    format_scores=format_growth_scores,
    plots=forecast_plots,
    # Never sampled: a few hundred daily rows (origins × horizons of a few series), bounded by the
    # window, not the platform's size; the backtest and intervals need every origin.
    sampling=None,
)
