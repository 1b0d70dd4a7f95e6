"""Drift of a current frame against a reference profile: per-feature statistics and a verdict.

Statistics (each a row: feature, kind, statistic, value, threshold, status, detail):

* numbers, over the reference's bins (see ``tasks.monitoring.profile``):
  ``psi`` (population stability index), ``jensen_shannon`` (scipy's Jensen–Shannon distance,
  natural log, as Evidently computes it; 0 … 0.83), and ``wasserstein_norm`` (scipy's first
  Wasserstein distance between the two K-atom quantile sketches, divided by the reference's std,
  floored at 0.001 as Evidently does, so that 0.1 means "a tenth of a standard deviation");
* categories, over the reference's top-K categories plus the other bucket: ``psi``,
  ``jensen_shannon``, ``linf`` (largest absolute change of a category's share, TFX's L-infinity
  comparator) and ``chi2_p_value`` (scipy's chi-square test of homogeneity of the reference and
  current counts, the reference's rebuilt from its shares and count);
* every feature: ``null_share`` (current share of missing values against the reference's plus
  an allowance), and for categorical references that kept every category, ``new_categories``
  (share of current values in categories never seen in training).

PSI = Σ (r − c) · ln(r / c) over bins; an empty bin's share is replaced by ``epsilon`` (1e-4,
Evidently's value) so that a bin empty on one side gives a large finite term, not infinity.

Size and significance. A distance over bins (PSI, Jensen–Shannon, L-infinity) says how far
apart two distributions are, not whether the samples show it: two samples of 30 values from one
distribution have a median PSI over ten bins of about 1.3 (the streams live at one moment, in a
recommender's scoring frame). So a binned distance that crosses its threshold counts (warn,
drift) only when scipy's chi-square test of homogeneity on the same bins' counts rejects at
``significance`` (0.05; the reference's counts are its shares times its count of values, of
distinct entities for an entity input); otherwise its row is ``ok`` and the detail gives the
p-value and the sizes. On the large frames drift is meant for, any distance over its threshold
is significant; on small ones it keeps sampling noise from being called drift. The normalised
Wasserstein distance is not held to it (it is not binned, and its sketch is not a sample count).

The verdict of a feature is the worst status of its *deciding* rows: the policy's statistic for
its kind (PSI by default) and the data-contract rows (``null_share``, ``new_categories``,
``missing``, ``rows``, ``dtype``); the other statistics are reported with their own status.
A statistic that cannot be computed is a row with status ``error``, no value and a reason, never
a NaN: a feature missing from the current frame, an empty current frame, a column of the wrong
type. An all-null current column is a ``null_share`` row (drift unless the reference was nearly
all null too); a constant reference is compared over three bins (below, equal, above) and its
Wasserstein distance uses the 0.001 floor, which the detail says.

Entity inputs (``keys``) are read from the current frame over distinct entities, by the rule their
reference profile was taken with (``tasks.monitoring.profile`` module notes, "Entities, not rows").

Dataset drift: the share of checked features whose verdict is ``drift``; the frame drifts when
that share reaches ``dataset_drift_share`` (0.5, Evidently's default ``drift_share``).

Prediction drift: the model's scores are one column, decided by the policy's ``prediction_test``
(numeric scores; a class, as segments predict, by ``categorical_test``): PSI by default, as the
inputs. The normalised Wasserstein distance (Evidently's choice for a numeric column of more than
1,000 rows) sees a slide of the scores by a fraction of their std that PSI over deciles misses,
but it also calls a forecaster's ordinary week-on-week change drift: measured once on 400-user
platforms monitored 7 days after training, traffic_forecast's predictions on the unshifted twin
0.23 (drift) against PSI 0.07 (ok), and with a planted traffic shift 0.34 against PSI 0.12 (warn);
ad_ctr's under a planted interest shift 0.067 and on its twin 0.054, PSI 0.03 on both. A spec may
choose it where its scores are comparable across days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, wasserstein_distance

from tasks.monitoring.profile import (
    OTHER,
    CategoricalProfile,
    ColumnProfile,
    FrameProfile,
    NumericProfile,
    bin_shares,
    category_counts,
    input_series,
    is_numeric,
    numeric_values,
    quantile_points,
    sorted_quantiles,
)

OK, WARN, DRIFT, ERROR = "ok", "warn", "drift", "error"
STATUSES = (OK, WARN, DRIFT, ERROR)
_SEVERITY = {OK: 0, WARN: 1, DRIFT: 2}
NUMERIC_TESTS = ("psi", "jensen_shannon", "wasserstein_norm")
CATEGORICAL_TESTS = ("psi", "jensen_shannon", "linf", "chi2_p_value")
CONTRACT = ("missing", "rows", "dtype", "null_share", "new_categories")
WASSERSTEIN_NORM_FLOOR = 0.001  # Evidently's floor for the reference std
_SHOWN_CATEGORIES = 5


@dataclass(frozen=True)
class DriftPolicy:
    """Drift thresholds of one model; the defaults and where they come from.

    - PSI 0.1 warn / 0.25 drift: the credit-scoring convention (Evidently's PSI test: 0.1).
    - Jensen–Shannon distance 0.1 and normalised Wasserstein 0.1: Evidently's defaults for large
      data (above 1,000 rows: Wasserstein for numbers, Jensen–Shannon for categories).
    - chi-square p-value 0.05: Evidently's default for its p-value tests (small data).
    - L-infinity 0.1: TFX's comparator has no default (its guide's example is 0.01, strict for
      daily batches); 0.1 is a ten-point move of one category's share.
    - null share: drift when the current share of missing values is 0.1 above the reference's.
    - new categories: warn when any current value is a category never seen in training, drift
      when they reach 5 % of the values.
    - dataset drift when at least half the checked features drift (Evidently's drift_share 0.5).
    - significance 0.05: a binned distance over its threshold counts only when the bins' chi-square
      test of homogeneity rejects at this level (see the module notes); None judges by size alone.
    - prediction drift (numeric scores) by PSI as the inputs; ``prediction_test`` may pick another
      numeric statistic (see the module notes); categorical predictions by ``categorical_test``.
    - realised performance: drift when the primary metric of a published score set, once its
      labels have arrived, is worse than the champion's holdout value by more than
      ``performance_drop`` of that value (0.1: a tenth, e.g. AUC 0.70 → below 0.63).
    """

    psi_warn: float = 0.1
    psi_drift: float = 0.25
    jensen_shannon: float = 0.1
    wasserstein_norm: float = 0.1
    linf: float = 0.1
    chi2_p_value: float = 0.05
    null_share_increase: float = 0.1
    new_category_share: float = 0.05
    dataset_drift_share: float = 0.5
    performance_drop: float = 0.1
    numeric_test: str = "psi"
    categorical_test: str = "psi"
    prediction_test: str = "psi"
    significance: float | None = 0.05
    epsilon: float = 1e-4

    def __post_init__(self) -> None:
        if self.numeric_test not in NUMERIC_TESTS:
            raise ValueError(f"numeric_test must be one of {NUMERIC_TESTS}, not {self.numeric_test!r}")
        if self.prediction_test not in NUMERIC_TESTS:
            raise ValueError(f"prediction_test must be one of {NUMERIC_TESTS}, not {self.prediction_test!r}")
        if self.categorical_test not in CATEGORICAL_TESTS:
            raise ValueError(
                f"categorical_test must be one of {CATEGORICAL_TESTS}, not {self.categorical_test!r}"
            )
        if not 0 <= self.psi_warn <= self.psi_drift:
            raise ValueError("PSI thresholds need 0 <= psi_warn <= psi_drift")
        if not 0 < self.dataset_drift_share <= 1:
            raise ValueError("dataset_drift_share must be in (0, 1]")
        if self.significance is not None and not 0 < self.significance <= 1:
            raise ValueError("significance must be in (0, 1], or None to judge distances by size alone")
        if self.performance_drop < 0:
            raise ValueError("performance_drop must be >= 0")

    def deciding(self, kind: str) -> tuple[str, ...]:
        """The statistics whose status makes a feature's verdict, for a feature of that kind."""
        test = self.numeric_test if kind == "numeric" else self.categorical_test
        return (test, *CONTRACT)

    def deciding_prediction(self, kind: str) -> tuple[str, ...]:
        """The statistics whose status makes the predictions' verdict."""
        test = self.prediction_test if kind == "numeric" else self.categorical_test
        return (test, *CONTRACT)


@dataclass(frozen=True)
class DriftResult:
    """One statistic of one feature (feature None: the whole frame)."""

    feature: str | None
    kind: str
    statistic: str
    value: float | None
    threshold: float | None
    status: str
    detail: str


@dataclass(frozen=True)
class DriftReport:
    """Every statistic, each feature's verdict and the frame's (``summary``)."""

    results: tuple[DriftResult, ...]
    features: Mapping[str, str]
    summary: DriftResult

    @property
    def status(self) -> str:
        """The frame's verdict: ok, warn, drift or error."""
        return self.summary.status

    def drifted(self) -> list[str]:
        """Features whose verdict is drift."""
        return [f for f, s in self.features.items() if s == DRIFT]


def _above(value: float, threshold: float) -> str:
    return DRIFT if value >= threshold else OK


def _psi(ref: np.ndarray, cur: np.ndarray, epsilon: float) -> float:
    r = np.where(ref == 0, epsilon, ref)
    c = np.where(cur == 0, epsilon, cur)
    return float(np.sum((r - c) * np.log(r / c)))


def homogeneity_p(ref: np.ndarray, cur: np.ndarray, n_ref: int, n_cur: int) -> float:
    """p-value of scipy's chi-square test of homogeneity of two samples given as shares over the
    same bins and their sizes (the counts rebuilt from them); 1.0 when fewer than two bins hold
    values (nothing to test)."""
    table = np.vstack((np.round(ref * n_ref), np.round(cur * n_cur)))
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(chi2_contingency(table, correction=False).pvalue)


def _significant(
    row: DriftResult, p_value: float, sizes: tuple[int, int], policy: DriftPolicy
) -> DriftResult:
    """A binned distance that crosses its threshold counts only when the bins' counts differ beyond
    sampling noise (see the module notes); otherwise ok, and the detail says why."""
    if row.status == OK or policy.significance is None or p_value < policy.significance:
        return row
    detail = (
        f"{row.detail}; {row.status} by size but within sampling noise: chi-square p = {p_value:.3g} "
        f"(>= {policy.significance:g}) on {sizes[0]:,} reference and {sizes[1]:,} current values"
    ).lstrip("; ")
    return replace(row, status=OK, detail=detail)


def _binned_rows(
    name: str, kind: str, ref: np.ndarray, cur: np.ndarray, sizes: tuple[int, int], policy: DriftPolicy
) -> tuple[list[DriftResult], float]:
    """PSI and Jensen–Shannon rows over the same bins, each held to the significance rule, and the
    bins' chi-square p-value."""
    p_value = homogeneity_p(ref, cur, *sizes)
    value = _psi(ref, cur, policy.epsilon)
    status = DRIFT if value >= policy.psi_drift else WARN if value >= policy.psi_warn else OK
    detail = f"{len(ref)} bins; warn at {policy.psi_warn:g}, drift at {policy.psi_drift:g}"
    psi = DriftResult(name, kind, "psi", value, policy.psi_drift, status, detail)
    distance = float(jensenshannon(ref, cur))
    js = DriftResult(
        name,
        kind,
        "jensen_shannon",
        distance,
        policy.jensen_shannon,
        _above(distance, policy.jensen_shannon),
        "",
    )
    return [_significant(psi, p_value, sizes, policy), _significant(js, p_value, sizes, policy)], p_value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _error(name: str, kind: str, statistic: str, detail: str) -> DriftResult:
    return DriftResult(name, kind, statistic, None, None, ERROR, detail)


def _null_row(profile: ColumnProfile, rows: int, nulls: int, policy: DriftPolicy) -> DriftResult:
    share = nulls / rows
    limit = profile.null_share + policy.null_share_increase
    detail = f"reference {profile.null_share:.2%} missing, current {share:.2%} ({nulls:,} of {rows:,})"
    if nulls == rows:
        detail += "; no current values, so no distribution statistic"
    status = DRIFT if share >= limit and share > profile.null_share else OK
    return DriftResult(profile.name, profile.kind, "null_share", share, min(limit, 1.0), status, detail)


def _compare_numeric(profile: NumericProfile, values: np.ndarray, policy: DriftPolicy) -> list[DriftResult]:
    name, kind = profile.name, profile.kind
    ordered = np.sort(values[~np.isnan(values)])
    ref = np.asarray(profile.shares)
    cur = bin_shares(ordered, np.asarray(profile.edges))
    rows, _ = _binned_rows(name, kind, ref, cur, (profile.count, len(ordered)), policy)
    current_q = sorted_quantiles(ordered, quantile_points(len(profile.quantiles)))
    std = profile.std or 0.0
    norm = max(std, WASSERSTEIN_NORM_FLOOR)
    value = float(wasserstein_distance(profile.quantiles, current_q)) / norm
    detail = (
        f"reference mean {_fmt(profile.mean)} std {_fmt(profile.std)} range [{_fmt(profile.min)}, "
        f"{_fmt(profile.max)}]; current mean {ordered.mean():.4g} std {ordered.std():.4g} "
        f"range [{ordered[0]:.4g}, {ordered[-1]:.4g}]"
    )
    if std < WASSERSTEIN_NORM_FLOOR:
        detail = (
            f"reference has zero variance: distance divided by the floor {WASSERSTEIN_NORM_FLOOR}; " + detail
        )
    rows.append(
        DriftResult(
            name,
            kind,
            "wasserstein_norm",
            value,
            policy.wasserstein_norm,
            _above(value, policy.wasserstein_norm),
            detail,
        )
    )
    return rows


def _compare_categorical(
    profile: CategoricalProfile, series: pd.Series, policy: DriftPolicy
) -> list[DriftResult]:
    name, kind = profile.name, profile.kind
    counts = category_counts(series)
    total = int(counts.sum())
    names = list(profile.frequencies)
    known = counts.reindex(names, fill_value=0).to_numpy(dtype="float64")
    outside = counts[~counts.index.isin(names)]
    ref = np.append(np.asarray([profile.frequencies[n] for n in names], dtype="float64"), profile.other_share)
    cur = np.append(known, float(outside.sum())) / total
    keep = (ref > 0) | (cur > 0)  # a slot empty on both sides carries no information
    ref, cur = ref[keep], cur[keep]
    labels = [n for n, k in zip([*names, OTHER], keep, strict=True) if k]
    rows, p_value = _binned_rows(name, kind, ref, cur, (profile.count, total), policy)
    moves = np.abs(ref - cur)
    top = int(np.argmax(moves))
    linf = DriftResult(
        name,
        kind,
        "linf",
        float(moves[top]),
        policy.linf,
        _above(float(moves[top]), policy.linf),
        f"largest move: {labels[top]} {ref[top]:.2%} → {cur[top]:.2%}",
    )
    rows.append(_significant(linf, p_value, (profile.count, total), policy))
    if len(ref) < 2:  # one category with values on either side: the same on both
        detail = f"one category ({labels[0]}) on both sides: nothing to test, the shares are equal"
        rows.append(DriftResult(name, kind, "chi2_p_value", 1.0, policy.chi2_p_value, OK, detail))
    else:
        # A two-sample test on the counts (the reference's are its shares times its count): the
        # reference is a sample too, and a goodness-of-fit test that takes its shares as exact
        # flags unchanged data more often than its p-value says.
        status = DRIFT if p_value < policy.chi2_p_value else OK
        detail = "two-sample chi-square on the counts; drift when the p-value is below the threshold"
        rows.append(DriftResult(name, kind, "chi2_p_value", p_value, policy.chi2_p_value, status, detail))
    if profile.complete:
        share = float(outside.sum()) / total
        shown = ", ".join(f"{k} ({v / total:.2%})" for k, v in outside.iloc[:_SHOWN_CATEGORIES].items())
        more = f" and {len(outside) - _SHOWN_CATEGORIES} more" if len(outside) > _SHOWN_CATEGORIES else ""
        status = DRIFT if share >= policy.new_category_share else WARN if share > 0 else OK
        detail = (
            f"never seen in training: {shown}{more}" if len(outside) else "no category unseen in training"
        )
        rows.append(
            DriftResult(name, kind, "new_categories", share, policy.new_category_share, status, detail)
        )
    # A reference cut at its top K cannot tell a new category from a rare one: both count as other.
    return rows


def compare_column(
    profile: ColumnProfile,
    series: pd.Series | None,
    policy: DriftPolicy | None = None,
    *,
    prediction: bool = False,
) -> tuple[DriftResult, ...]:
    """Every statistic of one column (a feature, or the predictions) against its reference."""
    policy = policy or DriftPolicy()
    deciding = policy.deciding_prediction if prediction else policy.deciding
    name, kind = profile.name, profile.kind
    if series is None:
        return (_error(name, kind, "missing", "feature not in the current frame"),)
    if len(series) == 0:
        return (DriftResult(name, kind, "rows", 0.0, None, ERROR, "the current frame has no rows"),)
    if kind == "numeric" and not is_numeric(series):
        return (_error(name, kind, "dtype", f"reference is numeric, current column is {series.dtype}"),)
    values = numeric_values(series) if isinstance(profile, NumericProfile) else None
    nulls = int(np.isnan(values).sum()) if values is not None else int(series.isna().sum())
    null_row = _null_row(profile, len(series), nulls, policy)
    if nulls == len(series):
        return (null_row,)
    if profile.count == 0:
        return (
            null_row,
            _error(name, kind, deciding(kind)[0], "the reference has no values: nothing to compare with"),
        )
    if isinstance(profile, NumericProfile):
        assert values is not None
        rows = _compare_numeric(profile, values, policy)
    else:
        rows = _compare_categorical(profile, series, policy)
    return (null_row, *rows)


def feature_status(
    results: Iterable[DriftResult], kind: str, policy: DriftPolicy, *, prediction: bool = False
) -> str:
    """A feature's verdict (or the predictions', ``prediction``): error if a deciding row failed,
    else its deciding rows' worst status."""
    tests = policy.deciding_prediction(kind) if prediction else policy.deciding(kind)
    deciding = [r for r in results if r.statistic in tests]
    if not deciding or any(r.status == ERROR for r in deciding):
        return ERROR
    return max((r.status for r in deciding), key=_SEVERITY.__getitem__)


def summarise(features: Mapping[str, str], policy: DriftPolicy, *, label: str = "features") -> DriftResult:
    """The frame's verdict from its features' verdicts (see the module notes)."""
    checked = [s for s in features.values() if s != ERROR]
    errors = sorted(f for f, s in features.items() if s == ERROR)
    drifted = sorted(f for f, s in features.items() if s == DRIFT)
    if not checked:
        detail = f"no {label} could be checked" + (f": {', '.join(errors)}" if errors else "")
        return DriftResult(None, "dataset", "drift_share", None, policy.dataset_drift_share, ERROR, detail)
    share = len(drifted) / len(checked)
    detail = f"{len(drifted)} of {len(checked)} {label} drifted" + (
        f": {', '.join(drifted)}" if drifted else ""
    )
    if errors:
        detail += f"; {len(errors)} not checked: {', '.join(errors)}"
    if share >= policy.dataset_drift_share:
        status = DRIFT
    elif errors:
        status = ERROR
    elif any(s in (WARN, DRIFT) for s in checked):
        status = WARN
    else:
        status = OK
    return DriftResult(None, "dataset", "drift_share", share, policy.dataset_drift_share, status, detail)


def compare_frame(
    reference: FrameProfile,
    current: pd.DataFrame,
    policy: DriftPolicy | None = None,
    *,
    keys: Mapping[str, str] | None = None,
) -> DriftReport:
    """Compare every profiled feature of the reference with the current frame; ``keys`` reads an
    entity input over distinct entities, as the reference was profiled (tasks/monitoring/profile.py)."""
    policy = policy or DriftPolicy()
    results: list[DriftResult] = []
    verdicts: dict[str, str] = {}
    cache: dict[str, pd.DataFrame] = {}
    for name, profile in reference.columns.items():
        series = input_series(current, name, keys or {}, cache) if name in current.columns else None
        rows = compare_column(profile, series, policy)
        results.extend(rows)
        verdicts[name] = feature_status(rows, profile.kind, policy)
    return DriftReport(tuple(results), verdicts, summarise(verdicts, policy))


def compare_prediction(
    reference: ColumnProfile, predictions: pd.Series, policy: DriftPolicy | None = None
) -> DriftReport:
    """Prediction drift: the scores about to be published against the holdout's (one column)."""
    policy = policy or DriftPolicy()
    rows = compare_column(reference, predictions, policy, prediction=True)
    verdict = feature_status(rows, reference.kind, policy, prediction=True)
    tests = policy.deciding_prediction(reference.kind)
    deciding = ", ".join(r.statistic for r in rows if r.statistic in tests)
    summary = DriftResult(
        reference.name, reference.kind, "verdict", None, None, verdict, f"decided by {deciding}"
    )
    return DriftReport(rows, {reference.name: verdict}, summary)
