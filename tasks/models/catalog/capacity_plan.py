"""capacity_plan: how much serving capacity to allocate where, planned on the traffic forecast.

Examples are the traffic_forecast rows of the viewers series, one per (region, origin, horizon
1..48 h); the label is the region's realised concurrent viewers in the target hour. The
estimator, a CapacityPlanner, fits the traffic forecaster (P10/P50/P90), calibrates on its
out-of-sample forecasts (the validation split and the forecaster's forward-chaining folds over
the training origins) the headroom over the forecast that keeps SLA violations under target with
the least capacity, and plans every (origin, target hour) with the LP of
tasks.models.families.planning. Its "prediction" is the capacity allocated to the row's region; the
backtest metrics (tasks.models.metrics.plan) serve the realised demand on it.

Reference plans ride along as label-frame columns, each the same LP under the same limits:
"perfect_capacity" (fed the realised demand: the over-provisioning yardstick),
"static_capacity" (every region at its full limit: today's fixed fleet) and "naive_capacity"
(fed the demand of the same hour a week earlier). Labels and the reference plans' limits read
validated raw_traffic partitions only.

The yardstick over-provisioning is reported against ("overprovision_vs_reference") is the oracle
plan (simulated data): the same LP fed the simulator's true expected demand
(tasks.models.families.traffic_truth) plus the least noise allowance, k x sqrt(expected), that
keeps the same rows' violations within the SLA. It is added to the stored evaluation frame as
"reference_capacity" by ``capacity_references`` in training's evaluation step only (it reads
oracle tables); real data has no oracle, and there the reference is a fixed allowance over the
perfect plan (see FALLBACK_REFERENCE). The gate holds the plan to the SLA and to a cost
significantly below both baselines' (POLICY; why the oracle ratio is not gated: ORACLE_FACTOR).

Feature store: the planner's inputs are traffic_forecast's (the ``traffic_history`` view, read
point-in-time at each origin in training and online at as_of in scoring) plus that view's
``capacity_limit`` (the serving limit in force at the row's end), so training and scoring
read the same limit under the store's TTL and freshness rules.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sqlalchemy import Connection, Engine, func, select

from tasks.models.catalog.traffic_forecast import (
    HISTORY,
    LOOKBACK_H,
    TRAFFIC_INPUTS,
    make_traffic_estimator,
    traffic_labels,
    traffic_scoring_frame,
)
from tasks.models.catalog.traffic_forecast import traffic_forecast as _traffic
from tasks.models.families.forecasting import ORIGIN, SERIES, TARGET
from tasks.models.families.planning import (
    NETWORK,
    TOLERANCE,
    HourBlocks,
    Network,
    Plan,
    serve_demand,
    solve_plan,
)
from tasks.models.families.traffic_truth import expected_viewers
from tasks.models.plots import capacity_plots
from tasks.models.spec import (
    ChangeThreshold,
    ColumnBaseline,
    LabelWindow,
    ModelSpec,
    PromotionPolicy,
    ScoringTarget,
    SignificanceRule,
    ValueThreshold,
)
from tasks.warehouse import raw_table, validated_between

HOUR_S = 3_600
SOURCE = "raw_traffic"
MEASURE = "viewers"  # capacity is sized in concurrent viewers
LIMIT = "capacity_limit"  # label and scoring frames: the limit the reference plans and the detail use
LIMIT_REF = f"{HISTORY}:capacity_limit"
LIMIT_INPUT = LIMIT_REF.replace(":", "__")  # the planner's limit: the feature store's
FEATURE_REFS: tuple[str, ...] = (*_traffic.feature_refs, LIMIT_REF)
CONTEXT: tuple[str, ...] = (*TRAFFIC_INPUTS, "region")
# What the LP needs on every row besides the forecaster's inputs (origin and target are among those).
PLAN_INPUTS: tuple[str, ...] = ("region", LIMIT_INPUT)
# Every column the planner reads: the forecaster's inputs, then the plan's.
INPUTS: tuple[str, ...] = tuple(dict.fromkeys((*_traffic.input_columns, *PLAN_INPUTS)))
METRICS = ("violation_rate", "overprovision", "overprovision_vs_reference", "cost", "violation_rate_viewers")
# Slices must keep every region of an hour together (spill-over couples them): by horizon only.
SLICES = ("horizon_band",)
PLANNER_KEYS = ("violation_target", "max_headroom", "fold_calibration")
# The headroom is calibrated on every out-of-sample forecast the fit has: the validation split plus
# the forecaster's forward-chaining folds over the training origins (each planned on the P50 of a
# booster that never saw it), about 12 days and 1,150 region-hours on the demo instead of the
# validation split's 3 days and 410. The violation target is the SLA less the evidence's sampling
# error: the largest rate whose one-sided 95 % upper bound (normal approximation to the binomial)
# stays within the SLA, counting distinct (region, target hour) pairs as independent units (rows of
# overlapping origins share their hour's demand): 0.62 % on 1,150 units, 0.45 % on 410; computed per
# fit from the evidence's size. Measured on the demo's holdout (5,000 users), validation split
# only vs with the folds: seed 7 0.29 % vs 0.45 % violations, 1.96x vs 1.84x the oracle plan's
# over-provisioning; seed 8 0.02 % vs 0.85 %, 1.91x vs 1.43x (the 3-day split lands the headroom
# wherever its two or three violating hours fall; an older simulator's seed 8 broke the SLA on it,
# 4.6 %).
SLA_CONFIDENCE_Z = 1.645
# The SLA: at most 1 % of region-hours short of capacity (the gate's bound, and the oracle plan's).
SLA_VIOLATION_RATE = 0.01
# The oracle plan (the same LP on the simulator's true expected demand, with the least allowance
# meeting the SLA on the same rows) is the yardstick over-provisioning is reported against, as
# "overprovision_vs_reference" (issue #14's target: <= 1.25x at <= 1 % violations). It is a
# benchmark figure, not a gate: what separates the model from it is the traffic forecaster's error
# around the true mean, not the planning. Measured at 5,000 users: the P50's error sd is 0.65-0.70x
# the demand's own noise (1.13-1.18 vs 1.69-1.73 viewers per region-hour), and even the headroom
# chosen on the holdout itself (in-sample, the best this planning rule can do) lands at 1.63x
# (seed 7) and 1.36x (seed 8); so does the oracle's own rule, P50 + k sqrt(P50), fed the forecast
# (1.66x, 1.34x). A bar on it would gate traffic_forecast's accuracy, which that model's own gate
# owns, and a factor fitted to pass would hold at one seed and size only. The planner is gated on
# its own job at every scale (POLICY): the SLA, and a cost significantly below both the static
# fleet's and the seasonal-naive plan's.
ORACLE_FACTOR = 1.25  # the target ratio, reported by the benchmark
# Real or imported data has no oracle: the reference is then a fixed allowance over the perfect
# plan, 24 % (30 % over-provisioning reads 1.25x): the demo-scale noise floor (the oracle plan's
# 17-22 % at ~7 viewers per region-hour) plus a margin for forecast error.
MAX_OVERPROVISION = 0.30
FALLBACK_REFERENCE = MAX_OVERPROVISION / ORACLE_FACTOR
# A backtest block: rows, their realised demand, and the P10/P50/P90 they were planned on.
Block = tuple[pd.DataFrame, np.ndarray, pd.DataFrame]
REFERENCE = "reference_capacity"  # evaluation-only column: the reference plan's capacity per row
ORACLE_MAX_K = 10.0  # the oracle's allowance is searched in [0, 10] x sqrt(expected) (Poisson sd)


def sla_target(sla: float, units: int, z: float = SLA_CONFIDENCE_Z) -> float:
    """The largest violation rate p with p + z sqrt(p / units) <= sla (the SLA when units is 0)."""
    if units <= 0:
        return sla
    b = z / math.sqrt(units)
    root = (-b + math.sqrt(b * b + 4 * sla)) / 2
    return root * root


def _units(frames: Sequence[pd.DataFrame]) -> int:
    """Distinct (region, target hour) pairs over frames: the independent units of a backtest (rows
    of overlapping origins share their hour's demand); rows when a frame has no region."""
    if not all("region" in f and TARGET in f for f in frames):
        return sum(len(f) for f in frames)
    pairs = pd.concat([f[["region", TARGET]] for f in frames], ignore_index=True)
    return len(pairs.drop_duplicates())


def read_limits(conn: Connection, start_ts: int, end_ts: int) -> pd.DataFrame:
    """Serving capacity (viewers) per hour × region in [start, end), validated partitions only, carried
    forward over hours without a report (the limit in force is the latest one reported)."""
    raw = raw_table(SOURCE)
    hour = raw.c.event_ts - raw.c.event_ts % HOUR_S
    query = (
        select(raw.c.region, hour.label("ts"), func.max(raw.c.capacity_viewers).label("capacity"))
        .where(
            validated_between(raw, start_ts, end_ts),
            raw.c.capacity_viewers.is_not(None),
        )
        .group_by(raw.c.region, hour)
    )
    rows = pd.DataFrame(conn.execute(query).fetchall(), columns=["region", "ts", "capacity"])
    first = start_ts - start_ts % HOUR_S
    hours = pd.Index(np.arange(first, end_ts, HOUR_S, dtype="int64"), name="ts")
    if rows.empty:
        return pd.DataFrame(np.nan, index=hours, columns=list(NETWORK.regions))
    rows = rows.astype({"ts": "int64", "capacity": "float64"})
    limits = rows.pivot_table(index="ts", columns="region", values="capacity", aggfunc="max")
    return limits.reindex(index=hours, columns=list(NETWORK.regions)).ffill()


def limit_at(limits: pd.DataFrame, region: pd.Series, origin: pd.Series) -> np.ndarray:
    """Each row's limit in force at its origin (the latest hour before it); NaN when never reported."""
    row = (origin.to_numpy("int64") - int(limits.index[0])) // HOUR_S - 1
    col = pd.Index(limits.columns).get_indexer(pd.Index(region.astype(str)))
    ok = (row >= 0) & (row < len(limits)) & (col >= 0)
    out = np.full(len(row), np.nan)
    out[ok] = limits.to_numpy("float64")[row[ok], col[ok]]
    return out


def _hours(frame: pd.DataFrame, network: Network = NETWORK) -> HourBlocks:
    return HourBlocks.of(
        frame["region"].to_numpy(), frame[ORIGIN].to_numpy(), frame[TARGET].to_numpy(), network
    )


def plan_capacity(
    frame: pd.DataFrame, load: np.ndarray | pd.Series, network: Network = NETWORK
) -> np.ndarray:
    """Per row, the capacity the LP allocates to its region for that load (NaN load: none)."""
    blocks = _hours(frame, network)
    loads = np.clip(np.nan_to_num(np.asarray(load, dtype="float64")), 0, None)
    limit = blocks.spread(np.nan_to_num(frame[LIMIT].to_numpy("float64")))
    return blocks.gather(solve_plan(blocks.spread(loads), limit, network).capacity)


def _viewers(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[frame["measure"] == MEASURE].reset_index(drop=True)


def _with_limits(conn: Connection, frame: pd.DataFrame, end_ts: int) -> pd.DataFrame:
    """Rows with the serving limit in force at their origin; rows of a region never sized are dropped."""
    start = int(frame[ORIGIN].min()) - LOOKBACK_H * HOUR_S
    limits = read_limits(conn, start, end_ts)
    frame = frame.assign(**{LIMIT: limit_at(limits, frame["region"], frame[ORIGIN])})
    # An hour plans all its regions together: drop an unsized region from every hour alike.
    return frame[np.isfinite(frame[LIMIT].to_numpy("float64"))].reset_index(drop=True)


def capacity_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """traffic_forecast's viewers rows with the serving limit and the reference plans of each row."""
    frame = _viewers(traffic_labels(conn, window))
    if frame.empty:
        return frame
    frame = _with_limits(conn, frame, window.end_ts)
    if frame.empty:
        return frame
    frame["perfect_capacity"] = plan_capacity(frame, frame["label"])
    frame["naive_capacity"] = plan_capacity(frame, frame["snaive_168h"])
    frame["static_capacity"] = frame[LIMIT].to_numpy("float64")
    return frame.sort_values(["event_ts", "example_id"], kind="stable").reset_index(drop=True)


def capacity_scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
    """The next 48 hours of every region from as_of (traffic_forecast's scoring rows), with the limits
    the feature store serves with them; a region never sized is left out of every hour alike."""
    frame = _viewers(traffic_scoring_frame(engine, spec, as_of))
    frame[LIMIT] = frame[LIMIT_INPUT].to_numpy("float64")
    return frame[np.isfinite(frame[LIMIT].to_numpy("float64"))].reset_index(drop=True)


def _iso(ts: pd.Series) -> np.ndarray:
    return pd.to_datetime(ts, unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()


def format_plan(spec: ModelSpec, frame: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """One row per (region, hour): capacity, expected (P50) and planned load, and the plan's detail."""
    origin = _iso(frame[ORIGIN])
    horizon = frame["horizon"].to_numpy("int64")
    limit = frame[LIMIT].to_numpy("float64")
    numbers = {c: pred[c].to_numpy("float64") for c in ("headroom", "p10", "p90", "spill_in")}
    spill_to = pred["spill_to"].astype(str).to_numpy()
    detail = [
        json.dumps(
            {
                "plan": f"{origin[i]}+{horizon[i]}h",
                "origin": origin[i],
                "headroom": round(float(numbers["headroom"][i]), 4),
                "p10": round(float(numbers["p10"][i]), 3),
                "p90": round(float(numbers["p90"][i]), 3),
                "capacity_limit": float(limit[i]),
                "spill_out": json.loads(spill_to[i]),
                "spill_in": round(float(numbers["spill_in"][i]), 3),
            },
            sort_keys=True,
        )
        for i in range(len(frame))
    ]
    rank = frame["step"] if "step" in frame else frame["horizon"]
    return pd.DataFrame(
        {
            "entity_key": frame["region"].astype(str).to_numpy(),
            "item": _iso(frame["target_start_ts"]),
            "rank": rank.astype("int64").to_numpy(),
            "score": pred["prediction"].to_numpy("float64"),
            "lower": pred["lower"].to_numpy("float64"),
            "upper": pred["upper"].to_numpy("float64"),
            "detail": detail,
        }
    )


def _fit_accepts_eval_set(model: Any) -> bool:
    try:
        return "eval_set" in inspect.signature(model.fit).parameters
    except (TypeError, ValueError):
        return False


class CapacityPlanner(BaseEstimator):  # type: ignore[misc]
    """A traffic forecaster plus the capacity LP: allocated capacity per (region, origin, target).

    A row's planned load is P50 + headroom × (P90 − P50) of its forecast: headroom 1 plans on
    the P90; less leans on spill-over into neighbours' spare capacity, more covers rarer peaks.
    ``fit`` trains a clone of the forecaster (``forecaster_``), then picks on its out-of-sample
    forecasts (the validation split, plus with ``fold_calibration`` the forecaster's
    forward-chaining fold forecasts of the training rows, ``fold_forecasts_``) the least headroom
    (``headroom_``) whose backtest keeps the violation rate at or under the target (``target_``):
    violations fall and over-provisioning rises with the headroom, so that meets the target with
    the least capacity. The target is ``violation_target`` when given, else ``sla_target(sla, the
    evidence's distinct region-hours)``. ``limit`` names the column of each row's serving limit.
    Parameters are kept as given (scikit-learn's conventions: ``get_params`` and ``clone`` work).
    """

    def __init__(
        self,
        forecaster: Any,
        forecast_columns: Sequence[str],
        *,
        violation_target: float | None = None,
        max_headroom: float = 6.0,
        sla: float = SLA_VIOLATION_RATE,
        fold_calibration: bool = True,
        network: Network = NETWORK,
        limit: str = LIMIT,
    ) -> None:
        self.forecaster = forecaster
        self.forecast_columns = forecast_columns
        self.violation_target = violation_target
        self.sla = sla
        self.max_headroom = max_headroom
        self.fold_calibration = fold_calibration
        self.network = network
        self.limit = limit

    def fit(
        self, X: pd.DataFrame, y: Any, eval_set: Sequence[tuple[pd.DataFrame, Any]] | None = None
    ) -> CapacityPlanner:
        """Fit the forecaster (early-stopped on eval_set when it can be), then calibrate the headroom
        on its out-of-sample forecasts: the folds' and the validation split's (none: plan on the P90)."""
        y = np.asarray(y, dtype="float64")
        columns = list(self.forecast_columns)
        self.forecaster_ = clone(self.forecaster, safe=False)
        self.headroom_ = 1.0
        self.target_: float | None = None
        self.calibration_: dict[str, float] = {}
        if eval_set and _fit_accepts_eval_set(self.forecaster_):
            valid = [(xv[columns], yv) for xv, yv in eval_set]
            self.forecaster_.fit(X[columns], y, eval_set=valid)
        else:
            self.forecaster_.fit(X[columns], y)
        blocks = self._fold_blocks(X, y) if self.fold_calibration else []
        if eval_set and len(eval_set[0][0]):
            x_valid, y_valid = eval_set[0]
            blocks.append((x_valid, np.asarray(y_valid, dtype="float64"), self.forecast(x_valid)))
        if blocks:
            self.target_ = self._target(_units([b[0] for b in blocks]))
            self.headroom_ = self.calibrate(blocks)
        return self

    def _fold_blocks(self, X: pd.DataFrame, y: np.ndarray) -> list[Block]:
        """(rows, realised demand, quantiles) of the forecaster's forward-chaining folds over the
        training rows: each fold planned on the P50 of a booster that never saw it, with the final
        interval around it ([] when the forecaster keeps no fold forecasts)."""
        folds = getattr(self.forecaster_, "fold_forecasts_", None) or []
        if not hasattr(self.forecaster_, "interval"):
            return []
        columns = list(self.forecast_columns)
        out = []
        for rows, point in folds:
            part = X.iloc[rows]
            quantiles = self._quantiles(self.forecaster_.interval(part[columns], point))
            out.append((part, y[rows], quantiles))
        return out

    def _target(self, units: int) -> float:
        """The violation rate the headroom is calibrated to, on a split of ``units`` region-hours."""
        if self.violation_target is not None:
            return float(self.violation_target)
        return sla_target(float(self.sla), units)

    @property
    def best_iteration(self) -> int | None:
        """The forecaster's early-stopped size, as training reports it (None when it has none)."""
        return getattr(getattr(self, "forecaster_", None), "best_iteration", None)

    def fitted_params(self) -> dict[str, Any]:
        """What the forecaster's fit chose (e.g. the anchor and weight of its correction), when it
        reports it, with the headroom this fit chose."""
        report = getattr(self.forecaster_, "fitted_params", None)
        return {**(dict(report()) if callable(report) else {}), "headroom": float(self.headroom_)}

    def forecast(self, X: pd.DataFrame) -> pd.DataFrame:
        """P10, P50 and P90 of each row's load (non-negative and ordered)."""
        return self._quantiles(self.forecaster_.predict_frame(X[list(self.forecast_columns)]))

    @staticmethod
    def _quantiles(out: pd.DataFrame) -> pd.DataFrame:
        p50 = np.asarray(out["prediction"], dtype="float64")
        lower = np.asarray(out["lower"], dtype="float64") if "lower" in out else p50
        upper = np.asarray(out["upper"], dtype="float64") if "upper" in out else p50
        q = np.clip(np.sort(np.nan_to_num(np.column_stack([lower, p50, upper])), axis=1), 0, None)
        return pd.DataFrame({"p10": q[:, 0], "p50": q[:, 1], "p90": q[:, 2]}, index=out.index)

    @staticmethod
    def planned_load(quantiles: pd.DataFrame, headroom: float) -> np.ndarray:
        """P50 + headroom × (P90 − P50), never negative."""
        p50, p90 = quantiles["p50"].to_numpy(), quantiles["p90"].to_numpy()
        return np.clip(p50 + headroom * (p90 - p50), 0, None)

    def _plan(self, X: pd.DataFrame, load: np.ndarray) -> tuple[HourBlocks, Plan]:
        blocks = _hours(X, self.network)
        limit = blocks.spread(np.nan_to_num(X[self.limit].to_numpy("float64")))
        return blocks, solve_plan(blocks.spread(load), limit, self.network)

    def backtest_violations(
        self, blocks: Sequence[tuple[pd.DataFrame, np.ndarray, pd.DataFrame]], headroom: float
    ) -> float:
        """Violation rate over (rows, realised demand, quantiles) blocks of the plan with this headroom."""
        short, total = 0, 0
        for X, y, quantiles in blocks:
            hours, plan = self._plan(X, self.planned_load(quantiles, headroom))
            demand = hours.spread(np.clip(np.nan_to_num(y), 0, None))
            served = serve_demand(plan.capacity, demand, self.network)
            short += int((hours.gather(served.shortfall) > TOLERANCE).sum())
            total += len(y)
        return short / total if total else 0.0

    def calibrate(
        self, blocks: Sequence[tuple[pd.DataFrame, np.ndarray, pd.DataFrame]], steps: int = 12
    ) -> float:
        """The least headroom in [0, max_headroom] meeting the violation target on the blocks (bisection)."""
        target = getattr(self, "target_", None)
        if target is None:
            target = self._target(sum(len(b[1]) for b in blocks))
        low, high = 0.0, float(self.max_headroom)
        at_high = self.backtest_violations(blocks, high)
        reached = at_high <= target
        if reached:
            at_low = self.backtest_violations(blocks, low)
            if at_low <= target:
                high, at_high = low, at_low
            else:
                for _ in range(steps):
                    mid = (low + high) / 2
                    rate = self.backtest_violations(blocks, mid)
                    if rate <= target:
                        high, at_high = mid, rate
                    else:
                        low = mid
        # Unreachable (the limits bind): plan as high as allowed, and say so.
        self.calibration_ = {
            "headroom": high,
            "calibration_violation_rate": at_high,
            "calibration_rows": float(sum(len(b[1]) for b in blocks)),
            "violation_target": float(target),
            "reached": float(reached),
        }
        return high

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Allocated capacity per row (what MLflow's python_function flavour serves)."""
        return self.predict_frame(X)["prediction"].to_numpy("float64")

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """Allocated capacity ("prediction"), expected load ("lower", P50), planned load ("upper")."""
        quantiles = self.forecast(X)
        load = self.planned_load(quantiles, self.headroom_)
        blocks, plan = self._plan(X, load)
        return pd.DataFrame(
            {
                "prediction": blocks.gather(plan.capacity),
                "lower": quantiles["p50"].to_numpy(),
                "upper": load,
                "p10": quantiles["p10"].to_numpy(),
                "p90": quantiles["p90"].to_numpy(),
                "headroom": np.full(len(X), self.headroom_),
                "spill_out": blocks.gather(plan.spill_out(self.network)),
                "spill_in": blocks.gather(plan.spill_in(self.network)),
                "spill_to": self._spill_to(blocks, plan),
            },
            index=X.index,
        )

    def _spill_to(self, blocks: HourBlocks, plan: Plan) -> list[str]:
        """Per row, JSON {neighbour: viewers} of the load the plan sends away ("{}": none)."""
        names = self.network.link_names()
        row_of = {
            (int(g), int(r)): i for i, (g, r) in enumerate(zip(blocks.hour, blocks.region, strict=True))
        }
        per_row: list[dict[str, float]] = [{} for _ in range(len(blocks.hour))]
        for g, e in zip(*np.nonzero(plan.spill > TOLERANCE), strict=True):
            row = row_of.get((int(g), int(self.network.edges[e, 0])))
            if row is not None:
                per_row[row][names[e][1]] = round(float(plan.spill[g, e]), 3)
        return [json.dumps(d, sort_keys=True) for d in per_row]


# --- the reference plan (evaluation only) ------------------------------------------------


def oracle_capacity(
    frame: pd.DataFrame, expected: np.ndarray, sla: float = SLA_VIOLATION_RATE
) -> tuple[np.ndarray, float, float]:
    """The oracle plan on rows with realised demand ("label"): the LP fed expected + k x sqrt(expected),
    k the least allowance in [0, ORACLE_MAX_K] whose backtest keeps violations at or under ``sla``.

    Returns (capacity per row, k, violation rate). The allowance is one number for every row:
    it is noise around the true mean the oracle pays for, never forecast error.
    """
    mean = np.clip(np.nan_to_num(np.asarray(expected, dtype="float64")), 0, None)
    judge = CapacityPlanner(None, (), violation_target=sla, max_headroom=ORACLE_MAX_K, limit=LIMIT)
    quantiles = pd.DataFrame({"p50": mean, "p90": mean + np.sqrt(mean)}, index=frame.index)
    y = frame["label"].to_numpy("float64")
    k = judge.calibrate([(frame, y, quantiles)])
    capacity = plan_capacity(frame, judge.planned_load(quantiles, k))
    return capacity, k, judge.calibration_["calibration_violation_rate"]


def _expected_at(engine: Engine, frame: pd.DataFrame) -> np.ndarray:
    """Each row's true expected demand in its target hour (NaN where the simulator has no truth)."""
    start = frame["target_start_ts"].to_numpy("int64")
    truth = expected_viewers(engine, int(start.min()), int(start.max()) + HOUR_S)
    if truth.empty:
        return np.full(len(frame), np.nan)
    row = pd.Index(truth.index).get_indexer(pd.Index(start - start % HOUR_S))
    col = pd.Index(truth.columns).get_indexer(pd.Index(frame["region"].astype(str)))
    ok = (row >= 0) & (col >= 0)
    out = np.full(len(frame), np.nan)
    out[ok] = truth.to_numpy("float64")[row[ok], col[ok]]
    return out


def capacity_references(engine: Engine, frame: pd.DataFrame) -> pd.DataFrame:
    """The stored evaluation frame with "reference_capacity" (and "expected_demand" where known).

    Simulated data: the oracle plan (``oracle_capacity``) on the simulator's true expected demand.
    Real data (no truth for every row): the perfect plan plus the FALLBACK_REFERENCE allowance.
    Reads oracle tables: evaluation only, never a model input.
    """
    if frame.empty:
        return frame.assign(**{REFERENCE: np.zeros(0)})
    expected = _expected_at(engine, frame)
    if np.isfinite(expected).all():
        capacity, _, _ = oracle_capacity(frame, expected)
        return frame.assign(expected_demand=expected, **{REFERENCE: capacity})
    perfect = frame["perfect_capacity"].to_numpy("float64")
    return frame.assign(**{REFERENCE: perfect * (1.0 + FALLBACK_REFERENCE)})


def oracle_plan_report(engine: Engine, holdout: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
    """The oracle plan next to the model's on the holdout: over-provisioning, violations, allowance."""
    if holdout.empty or "expected_demand" not in holdout or REFERENCE not in holdout:
        return {}
    expected = holdout["expected_demand"].to_numpy("float64")
    capacity, k, violations = oracle_capacity(holdout, expected)
    perfect = float(np.nansum(holdout["perfect_capacity"].to_numpy("float64")))
    model = float(np.nansum(predictions["prediction"].to_numpy("float64")))
    oracle_over = float(capacity.sum()) / perfect - 1.0 if perfect > 0 else float("nan")
    model_over = model / perfect - 1.0 if perfect > 0 else float("nan")
    y = holdout["label"].to_numpy("float64")
    return {
        "n": float(len(holdout)),
        "oracle_overprovision": oracle_over,
        "oracle_violation_rate": float(violations),
        "oracle_allowance_k": float(k),
        "model_overprovision": model_over,
        "overprovision_ratio": model_over / oracle_over if oracle_over > 0 else float("nan"),
        # How close the planner's P50 is to the true mean, and the true mean to what came.
        "p50_mae_vs_truth": float(np.mean(np.abs(predictions["lower"].to_numpy("float64") - expected)))
        if "lower" in predictions
        else float("nan"),
        "truth_mae_vs_realised": float(np.mean(np.abs(y - expected))),
    }


def _optional_float(value: Any) -> float | None:
    """A parameter as a float, None kept."""
    return None if value is None else float(value)


def make_capacity_planner(params: Mapping[str, Any]) -> CapacityPlanner:
    """The spec's estimator: the traffic forecaster (its params) inside a planner (PLANNER_KEYS)."""
    forecaster = make_traffic_estimator({k: v for k, v in params.items() if k not in PLANNER_KEYS})
    return CapacityPlanner(
        forecaster,
        tuple(_traffic.input_columns),
        violation_target=_optional_float(params.get("violation_target")),  # None: sla_target
        max_headroom=float(params.get("max_headroom", 6.0)),
        fold_calibration=bool(params.get("fold_calibration", True)),
        limit=LIMIT_INPUT,
    )


POLICY = PromotionPolicy(
    value_thresholds=(
        # The SLA, decided on the holdout's planning origins (23 on the demo).
        ValueThreshold("violation_rate", upper=SLA_VIOLATION_RATE),
    ),
    change_thresholds=(
        ChangeThreshold("violation_rate", slack=-0.002),
        ChangeThreshold("overprovision", slack=-0.02),
    ),
    # Significantly cheaper than the static full-limit fleet (which meets the SLA) and than the
    # seasonal-naive plan (which does not), cost counting the shortfall penalty of every unserved
    # viewer-hour: both are built from the past only, and both bars keep their meaning at any
    # scale. Over-provisioning against the oracle plan is reported, not gated (see ORACLE_FACTOR).
    significance=(
        SignificanceRule("cost", against="baseline", confidence=0.95),
        SignificanceRule("cost", against="column:naive_capacity", confidence=0.95),
    ),
    beat_baseline=("cost",),
)

capacity_plan = ModelSpec(
    name="capacity_plan",
    kind="plan",
    description=(
        "Serving capacity per region and hour for the next 48 hours: an LP over the traffic "
        "forecast (serving cost per region, spill-over cost per neighbouring link, within each "
        "region's limit); one row per (region, origin, horizon), prediction = allocated capacity."
    ),
    build_labels=capacity_labels,
    feature_refs=FEATURE_REFS,
    context_features=CONTEXT,
    categorical=(SERIES,),
    make_estimator=make_capacity_planner,
    params={**_traffic.params, "max_headroom": 6.0},  # violation target: sla_target, per fit
    baseline=ColumnBaseline("static_capacity"),
    extra_baselines=(ColumnBaseline("naive_capacity"),),
    metrics=METRICS,
    primary_metric="cost",
    slices=SLICES,
    policy=POLICY,
    scoring=ScoringTarget(entity="region", key="region", score_range=(0.0, float("inf"))),
    label_sources=(SOURCE,),
    horizon_days=2,
    training_days=_traffic.training_days,
    split=_traffic.split,
    retrain_cron="15 3 * * *",  # after traffic_forecast's daily retraining
    score_cron="0 * * * *",
    build_scoring_frame=capacity_scoring_frame,
    format_scores=format_plan,
    plots=capacity_plots,
    evaluation_columns=capacity_references,
    oracle=oracle_plan_report,
    # Never sampled: the traffic forecaster's rows (series × origins × horizons, bounded by the
    # regions and the window, not the platform's size), whose intervals need every origin.
    sampling=None,
)
