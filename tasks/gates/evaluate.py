"""Judge a candidate against its spec's PromotionPolicy (architecture §6).

Every threshold comes from the policy; this module holds no numbers of its own except a
float tolerance so that a delta equal to its slack is not failed by rounding.

A value threshold is judged on the metric's bootstrap interval on the holdout, not on the point
alone, so that a verdict does not flip on noise:

* the whole interval inside the bound: **pass**;
* the whole interval outside the bound: **fail** (the holdout shows the candidate is out of bounds);
* the interval straddles the bound: **undecided**. The holdout cannot tell the candidate from the
  bound, so the check does not block promotion; the report marks it and says about how many holdout
  units would decide it (a percentile interval narrows as 1/sqrt(n)).

A metric without an interval (not bootstrappable, e.g. silhouette, or none given) is judged on its
point value, and the report says so. A change threshold (candidate − champion >= slack) is judged
the same way on the paired bootstrap interval of the difference, when one is given, and so is a
beat-the-baseline check (candidate − baseline > 0): it fails only when the candidate is worse on
the whole paired interval. A relative threshold (reach ratio × a baseline's value) is a
beat-the-baseline check on the paired interval of candidate − ratio × baseline. Whether the
candidate is *significantly better* is the policy's significance rules' business; they may name
any declared baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tasks.gates.metrics import EvaluationLike, Interval, finite_metric
from tasks.gates.report import GateCheck, GateReport
from tasks.models.metrics import higher_is_better
from tasks.models.spec import ChangeThreshold, PromotionPolicy, SignificanceRule, ValueThreshold

EPS = 1e-12  # rounding tolerance for "delta >= slack" (0.70 - 0.71 must equal -0.01)
Deltas = Mapping[tuple[str, str], tuple[float, float, float]]
Intervals = Mapping[tuple[str, str | None], Interval]  # (metric, slice "column=value" or None)


def evaluate_gate(
    policy: PromotionPolicy,
    *,
    candidate: EvaluationLike,
    champion: EvaluationLike | None,
    baseline: EvaluationLike,
    candidate_vs_champion: EvaluationLike | None = None,
    deltas: Deltas,
    data_validated: bool,
    model: str = "",
    candidate_version: int | None = None,
    champion_version: int | None = None,
    extra_baselines: Mapping[Any, EvaluationLike] | None = None,
    intervals: Intervals | None = None,
    change_intervals: Intervals | None = None,
    baseline_intervals: Mapping[tuple[str, str], Interval] | None = None,
) -> GateReport:
    """Run every check of the policy and return the verdict with one row per check.

    ``deltas[(metric, rule.against)]`` is (lower, point, upper) of candidate − other from a paired
    bootstrap on the same holdout, for each significance rule.
    ``champion`` None means a first run: change
    thresholds and champion significance are recorded as skipped. ``extra_baselines`` (a baseline
    declaration, or its name, -> evaluation) are further naive baselines every beat_baseline metric
    must also beat; the report names each by ``str()`` (e.g. "column:snaive_168h").
    ``intervals[(metric, where)]`` is the candidate's bootstrap interval of a value-thresholded
    metric overall (where None) or on one slice value ("region=eu"); see the module docstring.
    ``change_intervals`` is the same for candidate − champion (paired bootstrap) of every
    change-thresholded metric: a change threshold is judged like a value threshold on it.
    ``candidate_vs_champion`` is the candidate's evaluation on the rows the champion was scored
    on, where those are fewer than the holdout (cross-fitting); None: ``candidate``.
    ``baseline_intervals[(metric, name)]`` is the paired interval of candidate − baseline ("baseline"
    for the primary, str() of an extra one) of every beat_baseline metric.
    """
    checks: list[GateCheck] = []
    if policy.is_empty:
        checks.append(
            GateCheck("thresholds", None, None, None, "at least one", False, "no thresholds configured")
        )
        return _verdict(model, candidate_version, champion_version, checks)
    if policy.require_validated_data:
        checks.append(
            GateCheck(
                "data_validated",
                None,
                None,
                None,
                "training data validated",
                bool(data_validated),
                "" if data_validated else "training data did not pass validation",
            )
        )
    checks.append(_size_check("candidate", candidate))
    if champion is not None:
        checks.append(_size_check("champion", champion))
    for value in policy.value_thresholds:
        checks.extend(_value_checks(value, candidate, intervals or {}))
    paired = baseline_intervals or {}
    for metric in policy.beat_baseline:
        checks.append(_baseline_check(metric, candidate, baseline, interval=paired.get((metric, "baseline"))))
        for name, other in sorted((str(k), v) for k, v in (extra_baselines or {}).items()):
            checks.append(_baseline_check(metric, candidate, other, name, paired.get((metric, name))))
    named = {"baseline": baseline, **{str(k): v for k, v in (extra_baselines or {}).items()}}
    for relative in policy.relative_thresholds:
        interval = paired.get((relative.metric, relative.other))
        if relative.against not in named:
            checks.append(
                GateCheck(
                    "relative_threshold",
                    relative.metric,
                    None,
                    None,
                    relative.other,
                    False,
                    f"no evaluation of {relative.against}",
                )
            )
            continue
        checks.append(
            _baseline_check(
                relative.metric,
                candidate,
                named[relative.against],
                relative.against,
                interval,
                relative.ratio,
            )
        )
    for change in policy.change_thresholds:
        checks.extend(
            _change_checks(change, candidate_vs_champion or candidate, champion, change_intervals or {})
        )
    for rule in policy.significance:
        checks.append(_significance_check(rule, deltas, champion is None))
    return _verdict(model, candidate_version, champion_version, checks)


def _verdict(model: str, candidate: int | None, champion: int | None, checks: list[GateCheck]) -> GateReport:
    failed = [c for c in checks if c.passed is False]
    skipped = sum(c.passed is None for c in checks)
    if failed:
        reason = "; ".join(_describe(c) for c in failed[:5])
        if len(failed) > 5:
            reason += f"; and {len(failed) - 5} more failed checks"
    else:
        undecided = sum(c.undecided for c in checks)
        reason = f"all {len(checks) - skipped} checks passed ({skipped} skipped"
        reason += f", {undecided} undecided within noise of their bound)" if undecided else ")"
    return GateReport(model, candidate, champion, checks, passed=not failed, reason=reason)


def _describe(check: GateCheck) -> str:
    where = f"[{check.slice}]" if check.slice else ""
    what = f"{check.name} {check.metric or ''}{where}".strip()
    return f"{what}: {check.detail}" if check.detail else f"{what} failed ({check.threshold})"


def _size_check(role: str, evaluation: EvaluationLike) -> GateCheck:
    n = int(evaluation.n)
    return GateCheck(
        "holdout_size",
        None,
        role,
        float(n),
        "n >= 1",
        n >= 1,
        "" if n >= 1 else f"empty evaluation set for the {role}",
    )


def _slice_metrics(evaluation: EvaluationLike, column: str, value: str) -> Mapping[str, float] | None:
    return evaluation.by_slice.get(column, {}).get(value)


def _value_checks(
    threshold: ValueThreshold, candidate: EvaluationLike, intervals: Intervals
) -> list[GateCheck]:
    bound = _bound_text(threshold.lower, threshold.upper)
    if threshold.slice is None:
        targets: list[tuple[str | None, Mapping[str, float] | None]] = [(None, candidate.metrics)]
    elif "=" in threshold.slice:
        column, value = threshold.slice.split("=", 1)
        targets = [(threshold.slice, _slice_metrics(candidate, column, value))]
    else:  # a bare column: every value of it
        values = candidate.by_slice.get(threshold.slice) or {}
        targets = [(f"{threshold.slice}={v}", m) for v, m in sorted(values.items())]
        if not targets:
            targets = [(threshold.slice, None)]
    checks = []
    for where, metrics in targets:
        observed = finite_metric(metrics, threshold.metric)
        if observed is None:
            checks.append(
                GateCheck(
                    "value_threshold",
                    threshold.metric,
                    where,
                    _raw(metrics, threshold.metric),
                    bound,
                    False,
                    _missing(metrics, threshold.metric),
                )
            )
            continue
        checks.append(
            _judge_value(threshold, where, observed, bound, intervals.get((threshold.metric, where)))
        )
    return checks


def _judge_value(
    threshold: ValueThreshold, where: str | None, observed: float, bound: str, interval: Interval | None
) -> GateCheck:
    """Pass, fail or undecided on the interval; on the point when there is no finite interval."""

    def inside(value: float) -> bool:
        return (threshold.lower is None or value >= threshold.lower) and (
            threshold.upper is None or value <= threshold.upper
        )

    def check(
        ok: bool, detail: str, undecided: bool = False, low: float | None = None, high: float | None = None
    ) -> GateCheck:
        return GateCheck(
            "value_threshold", threshold.metric, where, observed, bound, ok, detail, low, high, undecided
        )

    if interval is None or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        ok = inside(observed)
        detail = "no interval: judged on the point value"
        return check(ok, detail if ok else f"{observed:.6g} outside {bound} ({detail})")
    low, high = interval.low, interval.high
    span = f"interval [{low:.6g}, {high:.6g}] on {interval.n:,} holdout units"
    if inside(low) and inside(high):
        return check(True, "", low=low, high=high)
    below = threshold.lower is not None and high < threshold.lower
    above = threshold.upper is not None and low > threshold.upper
    if below or above:
        return check(
            False, f"{observed:.6g} outside {bound}; the whole {span} is outside", low=low, high=high
        )
    return check(
        True,
        f"undecided: {span} straddles the bound; {_needed(threshold, observed, interval)}",
        True,
        low,
        high,
    )


def _needed(threshold: ValueThreshold, observed: float, interval: Interval) -> str:
    """About how many holdout units would put the interval on one side of the nearest bound."""
    bounds = [b for b in (threshold.lower, threshold.upper) if b is not None]
    distance = min(abs(observed - b) for b in bounds)
    half_width = (interval.high - interval.low) / 2
    if distance <= EPS:
        return "the point lies on the bound, no holdout size decides it"
    needed = math.ceil(interval.n * (half_width / distance) ** 2)
    return f"deciding it needs about {needed:,} units"


def _baseline_check(
    metric: str,
    candidate: EvaluationLike,
    baseline: EvaluationLike,
    name: str = "baseline",
    interval: Interval | None = None,
    ratio: float | None = None,
) -> GateCheck:
    """Beat the baseline (or, with a ratio, reach ratio × its value: a relative threshold), on the
    paired interval of candidate − ratio × baseline when there is one (see the module docstring)."""
    check = "beat_baseline" if ratio is None else "relative_threshold"
    factor, bar = (1.0, name) if ratio is None else (ratio, f"{ratio:g} × {name}")
    ours, theirs = finite_metric(candidate.metrics, metric), finite_metric(baseline.metrics, metric)
    hib = higher_is_better(metric)
    threshold = f"{'>' if hib else '<'} {bar}"
    if ours is None or theirs is None:
        which = "candidate" if ours is None else name
        source = candidate.metrics if ours is None else baseline.metrics
        return GateCheck(
            check,
            metric,
            None,
            _raw(candidate.metrics, metric),
            threshold,
            False,
            f"{which}: {_missing(source, metric)}",
        )
    target = factor * theirs
    ok = ours > target if hib else ours < target
    threshold = f"{'>' if hib else '<'} {target:.6g} ({bar})"
    short = (
        f"does not beat the {name}'s {theirs:.6g}"
        if ratio is None
        else f"falls short of {bar} = {target:.6g}"
    )
    detail = "" if ok else f"{ours:.6g} {short}"
    if interval is None or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return GateCheck(check, metric, None, ours, threshold, ok, detail)
    # The improvement (candidate better by) on the paired interval: above 0 passes, below fails.
    low, high = (interval.low, interval.high) if hib else (-interval.high, -interval.low)
    span = f"paired interval of the improvement [{low:+.6g}, {high:+.6g}] on {interval.n:,} holdout units"
    if low > 0:
        return GateCheck(check, metric, None, ours, threshold, True, "", low, high)
    if high < 0:
        whole = f"the whole {span} is below 0"
        return GateCheck(
            check, metric, None, ours, threshold, False, f"{detail}; {whole}" if detail else whole, low, high
        )
    note = f"undecided: {span} contains 0" + (f" ({detail})" if detail else "")
    return GateCheck(check, metric, None, ours, threshold, True, note, low, high, True)


def _change_checks(
    change: ChangeThreshold, candidate: EvaluationLike, champion: EvaluationLike | None, intervals: Intervals
) -> list[GateCheck]:
    hib = higher_is_better(change.metric)
    threshold = f"{'candidate − champion' if hib else 'champion − candidate'} >= {change.slack:+g}"
    if champion is None:
        return [
            GateCheck(
                "change_threshold",
                change.metric,
                change.slice,
                None,
                threshold,
                None,
                "skipped: no champion (first run)",
            )
        ]
    if change.slice is None:
        interval = intervals.get((change.metric, None))
        return [_change_one(change, threshold, None, candidate.metrics, champion.metrics, interval)]
    ours = candidate.by_slice.get(change.slice)
    if not ours:
        return [
            GateCheck(
                "change_threshold",
                change.metric,
                change.slice,
                None,
                threshold,
                False,
                f"candidate has no evaluation by slice {change.slice!r}",
            )
        ]
    theirs = champion.by_slice.get(change.slice) or {}
    checks = []
    for value, metrics in sorted(ours.items()):
        where = f"{change.slice}={value}"
        if value not in theirs:
            checks.append(
                GateCheck(
                    "change_threshold",
                    change.metric,
                    where,
                    finite_metric(metrics, change.metric),
                    threshold,
                    None,
                    "skipped: slice value absent from the champion's evaluation",
                )
            )
            continue
        interval = intervals.get((change.metric, where))
        checks.append(_change_one(change, threshold, where, metrics, theirs[value], interval))
    for value in sorted(set(theirs) - set(ours)):
        checks.append(
            GateCheck(
                "change_threshold",
                change.metric,
                f"{change.slice}={value}",
                None,
                threshold,
                False,
                "candidate has no metrics for a slice value the champion has",
            )
        )
    return checks


def _change_one(
    change: ChangeThreshold,
    threshold: str,
    where: str | None,
    ours: Mapping[str, float] | None,
    theirs: Mapping[str, float] | None,
    interval: Interval | None = None,
) -> GateCheck:
    """Judged on the paired interval of the improvement when there is one, like a value threshold."""
    cand, champ = finite_metric(ours, change.metric), finite_metric(theirs, change.metric)
    if cand is None or champ is None:
        which, source = ("candidate", ours) if cand is None else ("champion", theirs)
        return GateCheck(
            "change_threshold",
            change.metric,
            where,
            _raw(ours, change.metric),
            threshold,
            False,
            f"{which}: {_missing(source, change.metric)}",
        )
    hib = higher_is_better(change.metric)
    delta = cand - champ if hib else champ - cand
    detail = f"candidate {cand:.6g} vs champion {champ:.6g} (improvement {delta:+.6g})"
    if interval is None or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        ok = delta >= change.slack - EPS
        return GateCheck("change_threshold", change.metric, where, delta, threshold, ok, detail)
    low, high = (interval.low, interval.high) if hib else (-interval.high, -interval.low)
    span = f"paired interval [{low:+.6g}, {high:+.6g}] on {interval.n:,} holdout units"
    if low >= change.slack - EPS:
        return GateCheck("change_threshold", change.metric, where, delta, threshold, True, detail, low, high)
    if high < change.slack - EPS:
        detail += f"; the whole {span} is below the slack"
        return GateCheck("change_threshold", change.metric, where, delta, threshold, False, detail, low, high)
    detail += f"; undecided: {span} straddles the slack"
    return GateCheck(
        "change_threshold", change.metric, where, delta, threshold, True, detail, low, high, True
    )


def _significance_check(rule: SignificanceRule, deltas: Deltas, first_run: bool) -> GateCheck:
    hib = higher_is_better(rule.metric)
    bound = "lower" if hib else "upper"
    threshold = (
        f"{bound} CI bound of candidate − {rule.against} "
        f"{'>' if hib else '<'} {rule.min_delta if hib else -rule.min_delta:+g} ({rule.confidence:.0%})"
    )
    name = f"significance_vs_{rule.against}"
    if rule.against == "champion" and first_run:
        return GateCheck(name, rule.metric, None, None, threshold, None, "skipped: no champion (first run)")
    ci = deltas.get((rule.metric, rule.against))
    if ci is None:
        return GateCheck(
            name, rule.metric, None, None, threshold, False, "no bootstrap CI of the delta given"
        )
    if len(ci) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ci):
        return GateCheck(name, rule.metric, None, None, threshold, False, f"bootstrap CI is not finite: {ci}")
    lower, point, upper = (float(v) for v in ci)
    observed = lower if hib else upper
    ok = observed > rule.min_delta if hib else observed < -rule.min_delta
    detail = f"delta {point:+.6g}, CI [{lower:+.6g}, {upper:+.6g}]"
    if not ok:
        detail += f": not significantly better than the {rule.against}"
    return GateCheck(name, rule.metric, None, observed, threshold, ok, detail)


def _bound_text(lower: float | None, upper: float | None) -> str:
    low = "-inf" if lower is None else f"{lower:g}"
    high = "+inf" if upper is None else f"{upper:g}"
    return f"[{low}, {high}] inclusive"


def _raw(metrics: Mapping[str, float] | None, metric: str) -> float | None:
    """The metric as given (NaN kept, for the report), or None when absent."""
    if metrics is None or metric not in metrics:
        return None
    try:
        return float(metrics[metric])
    except (TypeError, ValueError):
        return None


def _missing(metrics: Mapping[str, float] | None, metric: str) -> str:
    if metrics is None:
        return "no metrics for this slice"
    if metric not in metrics:
        return f"metric {metric!r} is missing"
    return f"metric {metric!r} is not finite ({metrics[metric]!r})"
