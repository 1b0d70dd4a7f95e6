"""user_growth and traffic_forecast: specs, the shared forecasting machinery, behaviours, and the
train → gate → promote → score flows end to end on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from tasks.db import insert_frame, write_tx
from tasks.featurestore import FEATURE_VIEWS, materialize_views
from tasks.gates import evaluate_gate
from tasks.gates.metrics import higher_is_better
from tasks.models import catalog
from tasks.models.catalog.traffic_forecast import TRAFFIC_INPUTS, traffic_forecast, traffic_labels
from tasks.models.catalog.user_growth import EXPECTED, growth_rows, user_growth
from tasks.models.evaluation import evaluate
from tasks.models.families.forecast_history import HistoryInputs
from tasks.models.families.forecasting import (
    BASE,
    CALENDAR_INPUTS,
    HORIZON,
    LEVEL_INPUTS,
    SERIES,
    ChosenForecaster,
    DirectSpec,
    IntervalForecaster,
    Panel,
    attach_scale,
    direct_rows,
    make_interval_forecaster,
    seasonal_naive_index,
    seasonal_naive_scale,
)
from tasks.models.metrics import METRICS
from tasks.models.spec import ModelSpec, PromotionPolicy, ValueThreshold
from tasks.models.training import time_split
from tasks.schema import RAW_TABLES, partition_status
from tasks.settings import get_settings
from tasks.simulate import SimConfig
from tasks.simulate.config import DIURNAL_LOCAL
from tasks.simulate.population import make_users, users_frame
from tasks.simulate.traffic import TrafficAccumulator
from tasks.vocabulary import REGION_UTC_OFFSET, REGIONS
from tests.conftest import BACKENDS
from tests.models.warehouse import START, build_model_warehouse, fresh_warehouse

SPECS = (user_growth, traffic_forecast)
DAYS = 14
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
HOUR, DAY = 3_600, 86_400


# --- specs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_spec_is_complete_and_gated_on_seasonal_naive(spec: ModelSpec) -> None:
    assert catalog.get_spec(spec.name) is spec and spec.kind == "forecast"
    # Inputs come from the feature store: one history view, read point-in-time at each origin.
    assert spec.feature_refs and len({ref.split(":")[0] for ref in spec.feature_refs}) == 1
    assert spec.build_scoring_frame is not None and spec.format_scores is not None and spec.plots
    for metric in spec.metrics:
        assert metric in METRICS
        higher_is_better(metric)  # every metric has a declared direction
    assert spec.primary_metric == "mase" and str(spec.baseline).startswith("column:snaive_")
    assert spec.policy.beat_baseline == ("mase",)
    assert any(c.metric == "mase" and c.slack < 0 for c in spec.policy.change_thresholds)
    assert "horizon" in spec.slices or "horizon_band" in spec.slices
    assert spec.scoring.score_range == (0.0, float("inf"))
    assert {HORIZON, SERIES, "origin_ts", "target_ts"} <= set(spec.input_columns)
    assert BASE not in spec.input_columns  # derived by the model from the history features


def test_traffic_spec_specifics() -> None:
    spec = traffic_forecast
    assert tuple(map(str, spec.extra_baselines)) == ("column:snaive_168h",) and spec.score_cron == "0 * * * *"
    coverage = [t for t in spec.policy.value_thresholds if t.metric == "coverage_p90"]
    assert coverage and coverage[0].lower == 0.85 and coverage[0].upper == 0.95
    assert {"mase", "smape", "coverage_p90", "pinball_p90", "pinball_p50"} <= set(spec.metrics)
    assert spec.context_features == TRAFFIC_INPUTS and spec.label_sources == ("raw_traffic",)


# --- the direct multi-horizon frame ----------------------------------------------------------


def _hourly_panel(days: int = 21, series: int = 3, seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24)
    level = np.arange(1, series + 1) * 10.0
    shape = 1.0 + 0.6 * np.sin(2 * np.pi * (t[:, None] % 24) / 24)
    values = rng.poisson(level[None, :] * shape * (1 + t[:, None] / (days * 48))).astype("float64")
    return Panel(1_767_571_200, HOUR, tuple(f"s{i}" for i in range(series)), values)


def test_seasonal_naive_copies_the_last_observed_season() -> None:
    h = np.arange(1, 15)
    idx = seasonal_naive_index(100, h, 7)
    assert list(idx) == [93, 94, 95, 96, 97, 98, 99] * 2  # never an index at or after the origin
    values = np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 3.0], [np.nan, 3.0]])
    assert np.allclose(seasonal_naive_scale(values, 1), [1.5, 1.0])


def test_direct_rows_read_only_the_past() -> None:
    panel = _hourly_panel()
    spec = DirectSpec(step_s=HOUR, horizons=48, season=24, long_season=168)
    origin = panel.start_ts + 200 * HOUR
    rows = direct_rows(panel, [origin], spec)
    assert len(rows) == 3 * 48 and rows[HORIZON].between(1, 48).all()
    first = rows[(rows[SERIES] == "s0") & (rows[HORIZON] == 1)].iloc[0]
    assert first["label"] == panel.values[200, 0] and first["snaive_24h"] == panel.values[176, 0]
    assert first["snaive_168h"] == panel.values[32, 0] and first["target_ts"] == origin + HOUR - 1
    # Rewriting everything from the origin on changes the labels, never an input.
    changed = Panel(panel.start_ts, HOUR, panel.series, panel.values.copy())
    changed.values[200:] += 1000.0
    again = direct_rows(changed, [origin], spec)
    inputs = [c for c in rows.columns if c != "label"]
    pd.testing.assert_frame_equal(rows[inputs], again[inputs])
    assert (again["label"] - rows["label"]).eq(1000.0).all()
    # Too little history for the weekly naive: no labelled rows for that origin.
    assert direct_rows(panel, [panel.start_ts + 100 * HOUR], spec).empty
    scaled = attach_scale(rows, panel, 24)
    assert (scaled["scale"] > 0).all() and scaled.groupby(SERIES)["scale"].nunique().eq(1).all()


def _mase(frame: pd.DataFrame, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(frame["label"] - pred) / frame["scale"]))


def test_interval_forecaster_beats_seasonal_naive_covers_and_pickles() -> None:
    panel = _hourly_panel(days=24)
    spec = DirectSpec(step_s=HOUR, horizons=24, season=24, long_season=168)
    origins = panel.start_ts + np.arange(168, 23 * 24, 4) * HOUR
    frame = attach_scale(direct_rows(panel, origins, spec), panel, 24)
    train, valid, holdout = time_split(frame, (0.6, 0.2, 0.2))
    columns = [*LEVEL_INPUTS, *CALENDAR_INPUTS, SERIES, HORIZON, BASE, "origin_ts", "target_ts"]
    model = make_interval_forecaster(("last_value", "same_phase_1", "same_phase_mean", "target_hour"))(
        {"n_estimators": 120, "max_depth": 4, "seed": 1, "min_calibration": 40}
    )
    model.fit(train[columns], train["label"], eval_set=[(valid[columns], valid["label"])])
    out = model.predict_frame(holdout[columns])
    assert list(out.columns) == ["prediction", "lower", "upper"]
    assert (out["lower"] <= out["prediction"]).all() and (out["prediction"] <= out["upper"]).all()
    assert _mase(holdout, out["prediction"].to_numpy()) < _mase(holdout, holdout["snaive_24h"].to_numpy())
    coverage = float(np.mean(holdout["label"] <= out["upper"]))
    assert 0.8 <= coverage <= 0.98, coverage
    loaded = cloudpickle.loads(cloudpickle.dumps(model))
    pd.testing.assert_frame_equal(loaded.predict_frame(holdout[columns]), out)
    assert isinstance(loaded, IntervalForecaster) and model.calibrated_on_.endswith("blocks")
    # The folds' forecasts of the training rows are out-of-sample: each fold's booster never saw
    # them, so it misses them by more than the final booster (fitted on them) does.
    assert model.fold_forecasts_ and all(len(rows) == len(point) for rows, point in model.fold_forecasts_)
    rows = np.concatenate([r for r, _ in model.fold_forecasts_])
    oos = np.concatenate([p for _, p in model.fold_forecasts_])
    y_fold = train["label"].to_numpy()[rows]
    in_sample = model.predict(train[columns].iloc[rows])
    assert np.mean(np.abs(y_fold - oos)) > np.mean(np.abs(y_fold - in_sample))
    # ``interval`` around the final booster's P50 is ``predict_frame``.
    pd.testing.assert_frame_equal(model.interval(holdout[columns], out["prediction"].to_numpy()), out)


def _weekly_shifts(days: int = 28, series: int = 2, seed: int = 2) -> pd.DataFrame:
    """Hourly Poisson series with a daily shape whose level jumps at random every week: the value a
    week before is the wrong start, the value a day before the right one."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24)
    shape = 1.0 + 0.6 * np.sin(2 * np.pi * (t[:, None] % 24) / 24)
    week_level = rng.uniform(0.5, 2.0, size=(days // 7 + 1, series))[t // 168]
    values = rng.poisson(40.0 * shape * week_level).astype("float64")
    panel = Panel(1_767_571_200, HOUR, tuple(f"s{i}" for i in range(series)), values)
    spec = DirectSpec(step_s=HOUR, horizons=24, season=24, long_season=168)
    origins = panel.start_ts + np.arange(168, (days - 1) * 24, 3) * HOUR
    return attach_scale(direct_rows(panel, origins, spec), panel, 24)


@pytest.mark.parametrize("weekly_shifts", [True, False], ids=["weekly-shifts", "learnable"])
def test_the_correction_is_kept_only_as_far_as_validation_says_it_helps(weekly_shifts: bool) -> None:
    """The booster corrects the weekly naive; the fit shrinks that correction towards the daily or
    weekly naive by the weight the validation split prefers and reports the choice."""
    frame = (
        _weekly_shifts()
        if weekly_shifts
        else attach_scale(
            direct_rows(
                _hourly_panel(days=24),
                1_767_571_200 + np.arange(168, 23 * 24, 4) * HOUR,
                DirectSpec(step_s=HOUR, horizons=24, season=24, long_season=168),
            ),
            _hourly_panel(days=24),
            24,
        )
    )
    train, valid, holdout = time_split(frame, (0.6, 0.2, 0.2))
    columns = [
        *LEVEL_INPUTS,
        *CALENDAR_INPUTS,
        SERIES,
        HORIZON,
        BASE,
        "origin_ts",
        "target_ts",
        "snaive_24h",
        "snaive_168h",
    ]
    params = {"n_estimators": 120, "max_depth": 4, "seed": 1, "min_calibration": 40}
    features = ("last_value", "same_phase_1", "same_phase_mean", "target_hour")

    def fitted(anchors: tuple[str, ...]) -> IntervalForecaster:
        model = make_interval_forecaster(features, offset="snaive_168h", anchors=anchors)(params)
        return model.fit(train[columns], train["label"], eval_set=[(valid[columns], valid["label"])])

    booster, chosen = fitted(()), fitted(("snaive_24h", "snaive_168h"))
    report = chosen.fitted_params()
    assert booster.fitted_params()["correction_anchor"] == "none" and report["selection_rows"] == len(valid)

    # On the validation split the choice is no worse than the booster or either naive.
    def mae(model: IntervalForecaster, part: pd.DataFrame) -> float:
        return float(np.mean(np.abs(part["label"] - model.predict(part[columns])) / part[BASE]))

    naive = [
        float(np.mean(np.abs(valid["label"] - valid[c]) / valid[BASE])) for c in ("snaive_24h", "snaive_168h")
    ]
    assert mae(chosen, valid) <= min([mae(booster, valid), *naive]) + 1e-12
    out = chosen.predict_frame(holdout[columns])
    mase, mase_booster = (
        _mase(holdout, out["prediction"].to_numpy()),
        _mase(holdout, booster.predict(holdout[columns])),
    )
    daily = _mase(holdout, holdout["snaive_24h"].to_numpy())
    if weekly_shifts:
        # The weekly anchor misleads the booster (MASE several times the daily naive's): the daily
        # naive is chosen and the holdout error falls to it.
        assert report["correction_anchor"] == "snaive_24h" and report["correction_weight"] < 1.0
        assert mase_booster > 2 * daily and mase <= 1.02 * daily
    else:
        # A learnable correction is kept (in part) and beats both naives.
        assert report["correction_weight"] > 0.0
        assert mase < min(daily, _mase(holdout, holdout["snaive_168h"].to_numpy()))
    # The interval is calibrated on the chosen forecast's residuals.
    coverage = float(np.mean(holdout["label"] <= out["upper"]))
    assert 0.85 <= coverage <= 0.97, coverage
    assert (out["lower"] <= out["prediction"]).all() and (out["prediction"] <= out["upper"]).all()


def test_the_booster_whose_anchor_fits_the_series_is_kept() -> None:
    """Two boosters, one correcting the weekly naive and one the daily naive, fitted alike: on series
    whose level jumps every week the validation split keeps the daily one, and it beats the daily
    naive and the weekly booster on the holdout; the choice is reported."""
    frame = _weekly_shifts()
    train, valid, holdout = time_split(frame, (0.6, 0.2, 0.2))
    columns = [*LEVEL_INPUTS, *CALENDAR_INPUTS, SERIES, HORIZON, BASE, "origin_ts", "target_ts"]
    columns += ["snaive_24h", "snaive_168h"]
    params = {"n_estimators": 120, "max_depth": 4, "seed": 1, "min_calibration": 40}
    make = make_interval_forecaster(
        ("last_value", "same_phase_1", "same_phase_mean", "target_hour"),
        offset="snaive_168h",
        anchors=("snaive_24h", "snaive_168h"),
        alternatives=("snaive_24h",),
    )
    model = make(params)
    assert isinstance(model, ChosenForecaster) and [c.offset for c in model.candidates] == [
        "snaive_168h",
        "snaive_24h",
    ]
    model.fit(train[columns], train["label"], eval_set=[(valid[columns], valid["label"])])
    report = model.fitted_params()
    assert (
        report["correction_of"] == "snaive_24h" and model.scores_["snaive_24h"] < model.scores_["snaive_168h"]
    )
    weekly = model.candidates[0].fit(
        train[columns], train["label"], eval_set=[(valid[columns], valid["label"])]
    )
    out = model.predict_frame(holdout[columns])
    mase = _mase(holdout, out["prediction"].to_numpy())
    assert mase < _mase(holdout, holdout["snaive_24h"].to_numpy())
    assert mase < _mase(holdout, weekly.predict(holdout[columns]))
    # Intervals and fold forecasts are the kept booster's.
    assert 0.85 <= float(np.mean(holdout["label"] <= out["upper"])) <= 0.97
    assert model.fold_forecasts_ == model.forecaster_.fold_forecasts_
    loaded = cloudpickle.loads(cloudpickle.dumps(model))
    pd.testing.assert_frame_equal(loaded.predict_frame(holdout[columns]), out)


def test_history_inputs_add_the_weekly_and_the_daily_anchor() -> None:
    """The weekly anchor is the weekly naive, else the daily one, else the level; the daily anchor
    the daily naive, else the weekly one, else the level."""
    spec = DirectSpec(step_s=HOUR, horizons=2, season=24, long_season=168)
    lags = [f"lag_{k}h" for k in range(1, 169)]
    values = np.tile(np.arange(1.0, 169.0), (4, 1))  # lag k holds k
    values[1, 23] = np.nan  # row 1: no daily naive for horizon 1 (lag 24)
    values[2, 167] = np.nan  # row 2: no weekly naive for horizon 1 (lag 168)
    values[3, [23, 167]] = np.nan  # row 3: neither
    X = pd.DataFrame(values, columns=lags).assign(end=0, origin_ts=0, horizon=1)
    inputs = HistoryInputs(spec, lags=lags, end="end", anchor="weekly", short_anchor="daily")
    out = inputs.transform(X)
    level = out[BASE].to_numpy()
    assert list(out["snaive_24h"].fillna(-1)) == [24.0, -1, 24.0, -1]
    assert list(out["weekly"]) == [168.0, 168.0, 24.0, level[3]]
    assert list(out["daily"]) == [24.0, 168.0, 24.0, level[3]]


def test_the_conformal_quantile_is_the_exact_rank() -> None:
    from tasks.models.families.forecasting import _conformal

    # ceil((n + 1) q)-th smallest for the upper, floor((n + 1) q)-th for the lower quantile.
    values = np.arange(1.0, 21.0)[::-1]  # unsorted on purpose
    assert _conformal(values, 0.9) == 19.0 and _conformal(values, 0.1) == 2.0
    assert _conformal(np.arange(1.0, 6.0), 0.9) == 5.0  # too few for the rank: the largest
    # A new residual exchangeable with the sample falls at or below it with probability just above q.
    rng = np.random.default_rng(0)
    covered = [np.mean(rng.normal(size=100) <= _conformal(rng.normal(size=20), 0.9)) for _ in range(2000)]
    assert float(np.mean(covered)) == pytest.approx(19 / 21, abs=0.01)


def _growing_frame(days: int = 35, series: int = 3, seed: int = 4) -> pd.DataFrame:
    """Hourly Poisson series with a daily shape whose level triples over the period."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24)
    level = np.arange(1, series + 1) * 8.0
    shape = 1.0 + 0.6 * np.sin(2 * np.pi * (t[:, None] % 24) / 24)
    growth = 1.0 + 2.0 * t[:, None] / len(t)
    values = rng.poisson(level[None, :] * shape * growth).astype("float64")
    panel = Panel(1_767_571_200, HOUR, tuple(f"s{i}" for i in range(series)), values)
    spec = DirectSpec(step_s=HOUR, horizons=12, season=24, long_season=168)
    origins = panel.start_ts + np.arange(168, (days - 1) * 24, 3) * HOUR
    return attach_scale(direct_rows(panel, origins, spec), panel, 24)


def test_intervals_stay_calibrated_on_a_growing_series(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _growing_frame()
    train, valid, holdout = time_split(frame, (0.7, 0.15, 0.15))
    columns = [*LEVEL_INPUTS, *CALENDAR_INPUTS, SERIES, HORIZON, BASE, "origin_ts", "target_ts"]
    params = {"n_estimators": 150, "max_depth": 4, "seed": 1, "min_calibration": 40}

    def coverage() -> float:
        model = make_interval_forecaster(LEVEL_INPUTS + CALENDAR_INPUTS)(params)
        model.fit(train[columns], train["label"], eval_set=[(valid[columns], valid["label"])])
        return float(np.mean(holdout["label"] <= model.predict_frame(holdout[columns])["upper"]))

    calibrated = coverage()
    assert 0.85 <= calibrated <= 0.94, calibrated
    # The fault: residuals scaled by the moving base level (quieter past, smaller unit) come out
    # too large for a busier holdout, and the interval over-covers.
    monkeypatch.setattr(IntervalForecaster, "_unit", lambda self, X: self._base(X))
    assert coverage() > calibrated + 0.01


# --- behaviours ------------------------------------------------------------------------------


def _daily(days: int = 150, seed: int = 3) -> pd.DataFrame:
    """A platform's days like load_daily gives them: organic signups, 4-day campaigns, DAU."""
    rng = np.random.default_rng(seed)
    weekday = np.array([0.9, 0.9, 0.95, 1.0, 1.1, 1.3, 1.25])[np.arange(days) % 7]
    organic = rng.poisson(60 * weekday).astype(float)
    campaign = np.zeros(days)
    for first in range(20, days - 5, 17):
        campaign[first : first + 4] = rng.poisson(120, 4)
    dau = rng.poisson((800 + 4 * np.arange(days)) * weekday).astype(float)
    index = pd.Index(1_760_000_000 // DAY * DAY + np.arange(days) * DAY, name="ts")
    return pd.DataFrame({"new_users": organic + campaign, "campaign": campaign, "dau": dau}, index=index)


def test_a_campaign_spike_raises_the_new_user_forecast() -> None:
    daily = _daily()
    ts = daily.index.to_numpy()
    rows = growth_rows(daily.iloc[:-20], ts[40:-34], labelled=True)
    train, valid, _ = time_split(rows, (0.7, 0.2, 0.1))
    columns = user_growth.input_columns
    model = user_growth.make_estimator({**user_growth.params, "seed": 1})
    model.fit(train[columns], train["label"], eval_set=[(valid[columns], valid["label"])])
    # The origin the day after a campaign started, and the same days without its signups.
    start = 20 + 17 * 7
    origin = ts[start + 1]
    spike = daily.iloc[: start + 1]
    calm = spike.copy()
    calm.iloc[-1] = [spike["new_users"].iloc[-1] - spike["campaign"].iloc[-1], 0.0, spike["dau"].iloc[-1]]
    assert spike["campaign"].iloc[-1] > 0
    forecasts = {}
    for name, history in (("spike", spike), ("calm", calm)):
        frame = growth_rows(history, np.array([origin]), labelled=False)
        nu = frame[frame[SERIES] == "new_users"].sort_values(HORIZON)
        forecasts[name] = model.predict(nu[columns])
        assert name == "calm" or (nu[EXPECTED].iloc[:3] > 0).all()
    assert (forecasts["spike"][:3] > forecasts["calm"][:3] * 1.3).all(), forecasts


def _holdout(n_origins: int = 30, seed: int = 5) -> pd.DataFrame:
    """A traffic-like holdout: two series, 48 horizons, daily shape, seasonal naive columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for o in range(n_origins):
        for series, level in (("eu/viewers", 20.0), ("eu/bandwidth", 60.0)):
            h = np.arange(1, 49)
            truth = level * (1 + 0.5 * np.sin(2 * np.pi * (3 * o + h) / 24))
            rows.append(
                pd.DataFrame(
                    {
                        SERIES: series,
                        "event_ts": o * 3 * HOUR,
                        HORIZON: h,
                        "truth": truth,
                        "label": rng.poisson(truth).astype(float),
                        "snaive_24h": rng.poisson(truth).astype(float),
                        "snaive_168h": rng.poisson(truth).astype(float),
                        "scale": np.sqrt(level) * 1.2,
                    }
                )
            )
    frame = pd.concat(rows, ignore_index=True)
    return frame.assign(measure=frame[SERIES].str.split("/").str[1], region="eu", horizon_band="all")


def _gate(spec: ModelSpec, frame: pd.DataFrame, pred: pd.DataFrame, champion: pd.DataFrame | None = None):  # type: ignore[no-untyped-def]
    y = frame["label"].to_numpy("float64")
    baselines = {
        name: evaluate(
            spec, y, pd.DataFrame({"prediction": frame[str(name).removeprefix("column:")].to_numpy()}), frame
        )
        for name in (spec.baseline, *spec.extra_baselines)
    }
    return evaluate_gate(
        spec.policy,
        candidate=evaluate(spec, y, pred, frame),
        champion=None if champion is None else evaluate(spec, y, champion, frame),
        baseline=baselines[spec.baseline],
        extra_baselines={k: v for k, v in baselines.items() if k != spec.baseline},
        deltas={},
        data_validated=True,
        model=spec.name,
        candidate_version=2,
        champion_version=None if champion is None else 1,
    )


def _interval(point: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    """A point forecast with a calibrated Poisson P10-P90 band around the truth."""
    sd = np.sqrt(truth)
    return pd.DataFrame({"prediction": point, "lower": truth - 1.2816 * sd, "upper": truth + 1.2816 * sd})


def test_a_forecast_no_better_than_seasonal_naive_is_not_promoted() -> None:
    frame = _holdout()
    truth = frame["truth"].to_numpy()
    # The seasonal naive shifted by an hour, plus noise: worse than the naive it copies.
    shifted = frame.groupby([SERIES, "event_ts"])["snaive_24h"].shift(1).fillna(frame["snaive_24h"])
    noisy = shifted.to_numpy() + np.random.default_rng(1).normal(0, 2, len(frame))
    report = _gate(traffic_forecast, frame, _interval(noisy, truth))
    assert not report.passed
    assert any(c.name == "beat_baseline" and c.metric == "mase" and c.passed is False for c in report.checks)
    # The truth itself (the best forecast there is) passes; a worse candidate then loses to it.
    good = _interval(truth, truth)
    assert _gate(traffic_forecast, frame, good).passed
    worse = _interval(truth * 1.15, truth)
    report = _gate(traffic_forecast, frame, worse, champion=good)
    assert not report.passed and any(
        c.name == "change_threshold" and c.passed is False for c in report.checks
    )


def test_a_user_growth_forecast_equal_to_a_noisy_naive_is_not_promoted() -> None:
    rng = np.random.default_rng(2)
    truth = np.tile(np.r_[np.full(5, 60.0), np.full(2, 80.0)], 40)
    frame = pd.DataFrame(
        {
            SERIES: "new_users",
            "event_ts": np.repeat(np.arange(20), 14) * DAY,
            HORIZON: np.tile(np.arange(1, 15), 20),
            "label": rng.poisson(truth),
            "snaive_7d": rng.poisson(truth),
            "scale": 10.0,
        }
    )
    noisy = frame["snaive_7d"].to_numpy() + rng.normal(0, 6, len(frame))
    report = _gate(user_growth, frame, _interval(noisy, truth))
    assert not report.passed
    assert _gate(user_growth, frame, _interval(truth, truth)).passed


# --- end to end through the flows, on both backends -------------------------------------------


def platform_frames(users: int = 300, days: int = DAYS, seed: int = 5) -> dict[str, pd.DataFrame]:
    """Raw users, watch sessions and traffic of a small platform, made in well under a second.

    Users (signup times, channels, campaigns) come from the simulator's own generator; each
    signed-up user watches on a day with their activity probability, at a local evening-heavy
    hour; traffic is the simulator's hourly aggregation of those sessions. The full simulator
    and the data-quality gate would cost most of this module's time budget (they are exercised
    by the ingest tests and at demo scale).
    """
    config = dataclasses.replace(
        SimConfig(users=users, streamers=12, days=days, seed=seed, start=START), pseudonym_key=b"test-key"
    )
    people = make_users(config)
    rng = np.random.default_rng(seed)
    starts, regions, devices, keys = [], [], [], []
    for day in range(days):
        day_start = config.start_epoch + day * DAY
        active = np.flatnonzero((people.signup_ts < day_start) & (rng.random(len(people)) < people.activity))
        offset = np.asarray([REGION_UTC_OFFSET[r] for r in REGIONS])[people.region[active]]
        local = rng.choice(24, size=len(active), p=DIURNAL_LOCAL)
        starts.append(day_start + ((local - offset) % 24) * HOUR + rng.integers(0, HOUR, len(active)))
        regions.append(people.region[active])
        devices.append(people.device[active])
        keys.append(people.key[active])
    start = np.concatenate(starts).astype(np.int64)
    duration = np.clip(rng.exponential(2_400, len(start)), 60, 4 * HOUR).astype(np.int64)
    region, device = np.concatenate(regions), np.concatenate(devices)
    traffic = TrafficAccumulator(config)
    traffic.add(start, start + duration, region.astype(np.int64), device.astype(np.int64))
    sessions = pd.DataFrame(
        {
            "event_id": [f"w{i}" for i in range(len(start))],
            "event_ts": start,
            "user_key": np.concatenate(keys),
            "stream_id": "s1",
            "streamer_id": "st1",
            "category": "gaming",
            "region": np.asarray(REGIONS, dtype=object)[region],
            "device": "ios",
            "end_ts": start + duration,
            "duration_s": duration,
        }
    )
    frames = {
        "raw_users": users_frame(people, np.arange(len(people))),
        "raw_watch_sessions": sessions,
        "raw_traffic": pd.concat(traffic.frames(), ignore_index=True),
    }
    for frame in frames.values():
        frame["event_date"] = pd.to_datetime(frame["event_ts"], unit="s", utc=True).dt.date
    return frames


FORECAST_VIEWS = ("traffic_history", "growth_history")


def materialize_histories(engine: Engine, first: dt.date = START, days: int = DAYS) -> None:
    """Build the forecasters' history views over the platform's days (their inputs come from them)."""
    views = [FEATURE_VIEWS[name] for name in FORECAST_VIEWS]
    materialize_views(
        engine, views, created_ts=1_700_000_000, start=first, end=first + dt.timedelta(days=days - 1)
    )


def load_validated(engine: Engine, frames: dict[str, pd.DataFrame]) -> None:
    """Insert the raw rows and mark every partition validated."""
    with write_tx(engine) as conn:
        for name, frame in frames.items():
            insert_frame(conn, RAW_TABLES[name], frame, ignore_existing=False)
            counts = frame.groupby("event_date").size()
            status = pd.DataFrame(
                {
                    "table_name": name,
                    "partition_date": counts.index,
                    "status": "validated",
                    "last_run_id": [str(uuid.uuid5(uuid.NAMESPACE_OID, f"{name}/{d}")) for d in counts.index],
                    "row_count": counts.to_numpy(),
                    "updated_ts": 1_700_000_000,
                }
            )
            insert_frame(conn, partition_status, status, ignore_existing=False)


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow tracking database, created once: its schema migrations take seconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest,
    mlflow_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    pg_available: bool,
) -> Iterator[Engine]:
    """A small validated platform on this backend, with settings of its own in the environment."""
    home = tmp_path_factory.mktemp(f"forecast-{request.param}")
    shutil.copy(mlflow_template, home / "mlflow.db")
    with fresh_warehouse(request.param, home) as backend, pytest.MonkeyPatch.context() as env:
        load_validated(backend.engine, platform_frames())
        materialize_histories(backend.engine)
        for key, value in backend.env.items():
            env.setenv(key, value)
        yield backend.engine


# The flows' mechanics are under test here, not a 14-day, 300-user platform's forecast quality
# (a few signups a day): a policy any finite forecast passes stands in for the catalog's. The
# catalog policies are checked by the gate behaviour tests above and at demo scale.
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("mase", upper=100.0),))


@pytest.mark.usefixtures("prefect_harness")
def test_train_gate_promote_and_score_through_the_flows(
    platform: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.models import score_model, train_model
    from tasks import lifecycle
    from tasks.scoring import read_current_scores

    for spec in SPECS:
        small = dataclasses.replace(spec, policy=LENIENT, params={**spec.params, "n_estimators": 60})
        monkeypatch.setitem(catalog.MODELS, spec.name, small)

    client = lifecycle.mlflow_client(get_settings())
    expected = {"user_growth": (2, 14), "traffic_forecast": (12, 48)}
    for spec in SPECS:
        trained = train_model(spec.name, as_of=AS_OF, build=False)
        assert trained.gate_passed and trained.promoted, trained.gate_reason
        metrics = client.get_run(trained.run_id).data.metrics
        assert {"mase", "baseline__mase", "smape", "pinball_p90"} <= set(metrics)
        assert any(k.startswith("mase__horizon") for k in metrics)
        # What the fit chose is recorded with the run: the anchor its correction is shrunk towards
        # and the weight kept (traffic_forecast chooses between its two naives; user_growth has none).
        params = client.get_run(trained.run_id).data.params
        anchors = {"none", "snaive_24h", "snaive_168h"} if spec.name == "traffic_forecast" else {"none"}
        assert params["correction_anchor"] in anchors and 0.0 <= float(params["correction_weight"]) <= 1.0
        if spec.name == "traffic_forecast":  # which booster was kept: the weekly or the daily naive's
            assert params["correction_of"] in {"weekly_anchor", "daily_anchor"}
        plots = {Path(f.path).name for f in client.list_artifacts(trained.run_id, "plots")}
        assert plots == {"forecast_backtest.png", "error_by_horizon.png"}

        score_model(spec.name, as_of=AS_OF)
        current = read_current_scores(platform, spec.name)
        n_series, horizon = expected[spec.name]
        assert len(current) == n_series * horizon and current["entity_key"].nunique() == n_series
        assert sorted(current["rank"].unique()) == list(range(1, horizon + 1))
        assert (current["lower"] <= current["score"]).all() and (current["score"] <= current["upper"]).all()
        assert (current["score"] >= 0).all() and current["item"].str.len().gt(0).all()
    first_hour = read_current_scores(platform, "traffic_forecast").query("rank == 1")["item"].unique()
    assert list(first_hour) == [AS_OF.strftime("%Y-%m-%dT%H:%M:%SZ")]


def test_user_growth_trains_on_the_history_the_pipeline_serves_on_the_simulator(tmp_path: Path) -> None:
    """F4: the simulator backfills signups (raw_users partitions weeks before its first day) and
    user_growth's labels reach back there; the model warehouse must hold the growth_history rows the
    build-features flow would serve those origins. Without them every training row has no inputs
    (level 1, so the booster learns raw signup counts as ratios) and the holdout forecast is
    that ratio times a real level: several times the seasonal naive's error."""
    from tasks.featurestore.materialize import stale_partitions
    from tasks.models.catalog.user_growth import HISTORY_END
    from tasks.models.evaluation import predict_frame
    from tasks.models.training import build_training_set, fit_candidate

    days = 21
    with fresh_warehouse("sqlite", tmp_path) as backend:
        build_model_warehouse(backend.settings, backend.engine, user_growth, users=300, days=days)
        last = START + dt.timedelta(days=days - 1)
        ps = partition_status
        with backend.engine.connect() as conn:
            backfilled = conn.execute(
                ps.select().where((ps.c.table_name == "raw_users") & (ps.c.partition_date < START))
            ).all()
        assert backfilled, "the simulator's signup backfill is what this test is about"
        # Nothing left for the flow to build: every validated partition has its history row.
        assert stale_partitions(backend.engine, FEATURE_VIEWS["growth_history"], end=last) == []
        as_of = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
        trained = fit_candidate(user_growth, build_training_set(backend.engine, user_growth, as_of))
    for part in (trained.train, trained.valid, trained.holdout):
        assert len(part) and part[HISTORY_END].notna().all()
    holdout = trained.holdout
    y = holdout["label"].to_numpy("float64")
    pred = predict_frame(user_growth, trained.pipeline, holdout)["prediction"].to_numpy("float64")
    model_mae = float(np.mean(np.abs(pred - y)))
    naive_mae = float(np.nanmean(np.abs(holdout["snaive_7d"].to_numpy("float64") - y)))
    assert model_mae < 1.5 * naive_mae, (model_mae, naive_mae)


def test_traffic_labels_on_the_warehouse(platform: Engine) -> None:
    from tasks.models.spec import LabelWindow

    end = int(AS_OF.timestamp())
    with platform.connect() as conn:
        frame = traffic_labels(conn, LabelWindow(end - 21 * DAY, end, 2 * DAY))
    assert frame["example_id"].is_unique and (frame["event_ts"] % (3 * HOUR) == 0).all()
    assert (frame["target_ts"] < end).all() and frame[
        ["snaive_24h", "snaive_168h", "label"]
    ].notna().all().all()
    first_hour = int(dt.datetime.combine(START, dt.time(), dt.UTC).timestamp())
    assert (frame["target_start_ts"] - 168 * HOUR >= first_hour).all()  # the weekly naive is real data
    assert set(frame["region"]) == {"na", "eu", "latam", "sea", "india", "mena"}
    assert set(frame["measure"]) == {"viewers", "bandwidth"} and frame[HORIZON].max() == 48


def test_scoring_frames_start_at_as_of_and_refuse_stale_data(platform: Engine) -> None:
    from tasks.models.catalog.traffic_forecast import traffic_scoring_frame
    from tasks.models.catalog.user_growth import growth_scoring_frame
    from tasks.models.scoring_frame import StaleFeatures

    # Validated data ends at AS_OF; five hours later the forecast still starts where it ends,
    # and the hours already past are not published.
    later = AS_OF + dt.timedelta(hours=5, minutes=20)
    frame = traffic_scoring_frame(platform, traffic_forecast, later)
    assert len(frame) == 12 * 43 and frame["step"].min() == 1 and frame[HORIZON].min() == 6
    assert frame["target_start_ts"].min() == int(AS_OF.timestamp()) + 5 * HOUR
    days = growth_scoring_frame(platform, user_growth, AS_OF + dt.timedelta(days=2))
    assert len(days) == 2 * 12 and days[HORIZON].min() == 3 and set(days[SERIES]) == {"dau", "new_users"}
    with pytest.raises(StaleFeatures, match="more than 48 h"):
        traffic_scoring_frame(platform, traffic_forecast, AS_OF + dt.timedelta(days=3))
    with pytest.raises(StaleFeatures, match="over 14 days old"):
        growth_scoring_frame(platform, user_growth, AS_OF + dt.timedelta(days=20))
