"""Capacity-plan metrics (capacity_plan): a backtest of planned capacity against realised demand.

Rows are (region, origin, target hour): "prediction" is the capacity the plan allocated to the
region, "label" the demand that came. The regions of one (origin, target) hour are coupled:
a region that runs out spills to a neighbour's spare capacity (tasks.models.families.planning), so
every metric first serves each hour's realised demand on its plan, once for all rows given,
and then weights the per-row outcomes. Needed columns: "region", "event_ts" (the origin),
"target_ts"; overprovision also "perfect_capacity" (the same LP fed the realised demand), and
overprovision_vs_reference also "reference_capacity" (a reference plan's capacity for the row).
A subset of rows that splits an hour (a per-region slice) loses that hour's spill-over, so
slice such frames only by columns constant within an hour (horizon, origin).
"""

from __future__ import annotations

import numpy as np

from tasks.models.families.planning import TOLERANCE, Backtest, backtest_rows
from tasks.models.metrics.common import Array, Cols, MetricDef, lower, safe_div, weighted_mean

REQUIRED = ("label", "prediction", "region", "event_ts", "target_ts")


def _backtest(cols: Cols) -> Backtest | None:
    if any(c not in cols for c in REQUIRED) or len(cols["label"]) == 0:
        return None
    try:
        return backtest_rows(
            cols["region"], cols["event_ts"], cols["target_ts"], cols["prediction"], cols["label"]
        )
    except ValueError:  # an unknown region: undefined, not an error (metrics never raise)
        return None


def _nan(w: Array) -> Array:
    return np.full(w.shape[0], np.nan)


def violation_rate(cols: Cols, w: Array) -> Array:
    """Share of region-hours whose demand exceeded the capacity the plan left it after spill-over."""
    outcome = _backtest(cols)
    if outcome is None:
        return _nan(w)
    return weighted_mean((outcome.shortfall > TOLERANCE).astype("float64"), w)


def overprovision(cols: Cols, w: Array) -> Array:
    """Allocated capacity over the perfect-knowledge plan's, minus 1 (0 = no capacity wasted)."""
    if "perfect_capacity" not in cols or "prediction" not in cols or len(cols["prediction"]) == 0:
        return _nan(w)
    allocated = np.nan_to_num(np.asarray(cols["prediction"], dtype="float64"))
    perfect = np.nan_to_num(np.asarray(cols["perfect_capacity"], dtype="float64"))
    return safe_div(w @ allocated, w @ perfect) - 1.0


def overprovision_vs_reference(cols: Cols, w: Array) -> Array:
    """Over-provisioning as a multiple of the reference plan's on the same rows (1 = as lean as it).

    The reference is the plan an evaluation column carries (capacity_plan: the
    oracle plan, sized on the simulator's true expected demand to the same SLA); NaN without one,
    or where the reference itself wastes nothing.
    """
    needed = ("perfect_capacity", "reference_capacity", "prediction")
    if any(c not in cols for c in needed) or len(cols["prediction"]) == 0:
        return _nan(w)
    allocated, perfect, reference = (
        np.nan_to_num(np.asarray(cols[c], dtype="float64"))
        for c in ("prediction", "perfect_capacity", "reference_capacity")
    )
    ours = safe_div(w @ allocated, w @ perfect) - 1.0
    theirs = safe_div(w @ reference, w @ perfect) - 1.0
    return safe_div(ours, theirs)


def cost(cols: Cols, w: Array) -> Array:
    """Mean cost per region-hour: serving the capacity, the spill-over sent, the shortfall penalty."""
    outcome = _backtest(cols)
    if outcome is None:
        return _nan(w)
    return weighted_mean(outcome.cost, w)


def shortfall_share(cols: Cols, w: Array) -> Array:
    """Share of realised viewer-hours left unserved (how deep the violations go)."""
    outcome = _backtest(cols)
    if outcome is None:
        return _nan(w)
    demand = np.nan_to_num(np.asarray(cols["label"], dtype="float64"))
    return safe_div(w @ outcome.shortfall, w @ demand)


METRICS: dict[str, MetricDef] = {
    "violation_rate": lower(violation_rate),
    "overprovision": lower(overprovision),
    "overprovision_vs_reference": lower(overprovision_vs_reference),
    "cost": lower(cost),
    "violation_rate_viewers": lower(shortfall_share),
}
