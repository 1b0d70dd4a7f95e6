"""One monitoring run of one model at an as_of: freshness, feature, dataset and prediction drift,
realised performance; every statistic a row of ``monitoring_checks``.

The current frame is the one a scoring run scores at as_of (the same builder), predicted by the
champion; it is compared with the reference the champion's training run stored
(tasks/monitoring/reference.py). A scoring run builds that frame and those predictions once and
hands them to ``compare`` (tasks/lifecycle.py ``score``); ``monitor``, the standalone run, builds
its own. A model without a champion, or whose champion stored no reference, gives a skipped
result with the reason (a ``reference`` row), never an exception. Stale inputs are freshness rows
with status ``error``; a scoring run records them and raises ``refusal``'s StaleFeatures.

Entity inputs are compared over distinct entities, by the keys the reference pair was profiled
with (tasks/monitoring/reference.py): on a ranking frame, one row per candidate streamer or
product (and per user for the user's own inputs), not one per (user, candidate) row; the
predictions are compared per row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, func, select

from tasks.dates import floor_to_day, partition_day, utc
from tasks.featurestore.definitions import DAY_S, FeatureView, parse_ref
from tasks.featurestore.views import FEATURE_VIEWS as VIEWS
from tasks.models.context import context_refs
from tasks.models.scoring_frame import StaleFeatures, check_fresh
from tasks.models.spec import LabelWindow, ModelSpec
from tasks.monitoring.drift import DRIFT, ERROR, OK, WARN, DriftPolicy
from tasks.monitoring.reference import Reference, load_reference
from tasks.monitoring.store import CheckRow, check_rows, record_checks
from tasks.schema import partition_status, score_sets, scores
from tasks.settings import Settings

SKIPPED = "skipped"
_SEVERITY = {OK: 0, WARN: 1, DRIFT: 2, ERROR: 3}
SCORED_STATUSES = ("published", "superseded")
RETENTION_MARGIN_DAYS = 2


@dataclass(frozen=True)
class Finding:
    """Something a monitoring run found that deserves attention (one event each, later)."""

    model: str
    version: int | None
    kind: str  # "drift", "performance" or "stale"
    detail: str


@dataclass(frozen=True)
class MonitorResult:
    """A monitoring run's rows and verdict (``status``: ok, warn, drift, error or skipped)."""

    model: str
    version: int | None
    as_of: int
    status: str
    summary: str
    rows: tuple[CheckRow, ...] = ()
    compared_with: str = ""
    plot: Path | None = field(default=None, compare=False)
    deciding: tuple[str, ...] = ()  # the statistics that make a feature's verdict under the policy

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for a flow's result)."""
        return {
            "model": self.model,
            "version": self.version,
            "as_of": self.as_of,
            "status": self.status,
            "summary": self.summary,
            "compared_with": self.compared_with,
            "deciding": list(self.deciding),
            "rows": [
                {k: getattr(r, k) for k in ("check", "feature", "statistic", "value", "threshold", "status")}
                | {"detail": r.detail}
                for r in self.rows
            ],
        }


def worst(statuses: Sequence[str]) -> str:
    """The most severe of some statuses (error > drift > warn > ok); ok when there are none."""
    return max(statuses, key=lambda s: _SEVERITY.get(s, 0), default=OK)


def findings(result: MonitorResult) -> list[Finding]:
    """What a run found: dataset or prediction drift, a realised-performance drop, stale inputs."""
    found: list[Finding] = []
    for row in result.rows:
        if row.status not in (DRIFT, ERROR):
            continue
        if row.check == "dataset_drift" and row.status == DRIFT:
            found.append(Finding(result.model, row.version, "drift", row.detail))
        elif row.check == "prediction_drift" and row.statistic == "verdict" and row.status == DRIFT:
            found.append(Finding(result.model, row.version, "drift", f"predictions: {row.detail}"))
        elif row.check == "realised_performance" and row.status == DRIFT:
            found.append(Finding(result.model, row.version, "performance", row.detail))
        elif row.check == "freshness" and row.status == ERROR:
            found.append(Finding(result.model, row.version, "stale", row.detail))
    return found


def announced(result: MonitorResult) -> MonitorResult:
    """The result, once its findings are sent as Prefect events (tasks/monitoring/events.py):
    what an automation acts on, such as the retraining trigger of the model's deployment."""
    from tasks.monitoring.events import emit_findings

    emit_findings(result)
    return result


# --- freshness ----------------------------------------------------------------------------


def model_views(spec: ModelSpec) -> list[FeatureView]:
    """The feature views a model's scoring reads: its refs, its scoring context's and its histories."""
    refs = (*spec.feature_refs, *context_refs(spec.scoring.context))
    names = dict.fromkeys([parse_ref(ref, VIEWS)[0].name for ref in refs] + list(spec.history_views))
    return [VIEWS[name] for name in names]


def _newest_validated(engine: Engine, table: str, as_of: int) -> dt.date | None:
    ps = partition_status
    with engine.connect() as conn:
        value = conn.execute(
            select(func.max(ps.c.partition_date)).where(
                and_(
                    ps.c.table_name == table,
                    ps.c.status == "validated",
                    ps.c.partition_date <= partition_day(as_of - 1),
                )
            )
        ).scalar()
    return value  # type: ignore[no-any-return]


def freshness_rows(
    engine: Engine, spec: ModelSpec, version: int | None, as_of: int, **meta: Any
) -> list[CheckRow]:
    """Per view: the age of its newest feature row against its TTL (error: scoring refuses it), and
    the age of its primary source's newest validated partition (warn beyond the TTL)."""
    rows: list[CheckRow] = []
    for view in model_views(spec):
        ttl_h = view.ttl_s / 3600 if view.ttl_s > 0 else None

        def add(
            statistic: str,
            value: float | None,
            status: str,
            detail: str,
            name: str = view.name,
            ttl: float | None = ttl_h,
        ) -> None:
            rows.append(_row(spec, version, as_of, "freshness", name, statistic, value, ttl, status, detail,
                             **meta))  # fmt: skip

        try:
            newest = check_fresh(engine, view, as_of)
        except StaleFeatures as exc:
            add("feature_age_hours", None, ERROR, f"stale: {exc}")
        else:
            add("feature_age_hours", (as_of - newest) / 3600, OK, f"newest row {utc(newest):%Y-%m-%d %H:%M}")
        table = view.primary_source
        day = _newest_validated(engine, table, as_of)
        if day is None:
            add("partition_age_hours", None, ERROR, f"{table}: no validated partition before as_of")
            continue
        end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp())
        age = max(as_of - end, 0) / 3600
        status = WARN if ttl_h is not None and age > ttl_h else OK
        add("partition_age_hours", age, status, f"{table}: newest validated partition {day}")
    return rows


def _row(
    spec: ModelSpec,
    version: int | None,
    as_of: int,
    check: str,
    feature: str | None,
    statistic: str,
    value: float | None,
    threshold: float | None,
    status: str,
    detail: str,
    *,
    recorded_at: int,
    run_id: str | None,
) -> CheckRow:
    return CheckRow(spec.name, version, as_of, check, feature, statistic, value, threshold, status, detail,
                    run_id, recorded_at)  # fmt: skip


# --- realised performance -------------------------------------------------------------------


def realised_applies(spec: ModelSpec) -> bool:
    """Whether a published score set can be judged against labels: one score per entity of a
    snapshot whose outcome horizon ends later (the binary and regression user/streamer snapshots)."""
    return spec.kind in ("binary", "regression") and spec.horizon_days > 0 and spec.format_scores is None


def retention_days(spec: ModelSpec) -> int:
    """How many days of published score sets a model keeps for realised performance: its label
    horizon plus a margin (a late or skipped run), or 0 when realised performance does not apply."""
    return spec.horizon_days + RETENTION_MARGIN_DAYS if realised_applies(spec) else 0


def _scored_set(engine: Engine, spec: ModelSpec, as_of: int) -> Any:
    """The newest published (or since superseded) score set whose outcome horizon is over at as_of."""
    horizon = spec.horizon_days * DAY_S
    with engine.connect() as conn:
        sets = conn.execute(
            select(score_sets)
            .where(score_sets.c.model_name == spec.name, score_sets.c.status.in_(SCORED_STATUSES))
            .order_by(score_sets.c.as_of.desc(), score_sets.c.created_ts.desc())
        ).all()
    return next((s for s in sets if floor_to_day(int(s.as_of)) + horizon <= as_of), None)


def realised_rows(
    engine: Engine,
    spec: ModelSpec,
    holdout_value: Any,
    as_of: int,
    policy: DriftPolicy,
    **meta: Any,
) -> tuple[list[CheckRow], str]:
    """The primary metric of the newest score set whose labels have arrived, next to the holdout
    value of the version that scored it; the rows and a line saying what was (not) measured.

    ``holdout_value(version)`` gives that version's holdout value of the primary metric (or None).
    """
    from tasks.models.evaluation import metric_value
    from tasks.models.metrics import higher_is_better

    if not realised_applies(spec):
        return [], f"realised performance: not measured for a {spec.kind} model's published rows"
    scored = _scored_set(engine, spec, as_of)
    if scored is None:
        return [], f"realised performance: no published score set {spec.horizon_days} days old yet"
    snapshot = floor_to_day(int(scored.as_of))
    horizon = spec.horizon_days * DAY_S
    with engine.connect() as conn:
        labels = spec.build_labels(conn, LabelWindow(snapshot, snapshot + horizon, horizon))
        published = pd.read_sql(
            select(scores.c.entity_key, scores.c.score).where(scores.c.score_set_id == scored.score_set_id),
            conn,
        )
    labels = labels[labels["event_ts"].astype("int64") == snapshot]
    joined = published.merge(
        pd.DataFrame({"entity_key": labels[spec.scoring.key].astype(str), "label": labels["label"]}),
        on="entity_key",
    )
    version = int(scored.model_version)
    where = f"score set {scored.score_set_id[:8]} (v{version}, snapshot {utc(snapshot):%Y-%m-%d})"
    if joined.empty:
        return [], f"realised performance: {where} has no labelled entity"
    metric = spec.primary_metric
    y = joined["label"].to_numpy("float64")
    value = float(metric_value(metric, y, pd.DataFrame({"prediction": joined["score"].astype("float64")})))
    holdout = holdout_value(version)
    detail = f"{where}: {len(joined):,} of {len(published):,} scored entities labelled"
    if not np.isfinite(value):
        row = _row(spec, version, as_of, "realised_performance", None, metric, None, None, ERROR,
                   f"{detail}; {metric} is undefined on these labels (one class?)", **meta)  # fmt: skip
        return [row], f"realised {metric}: undefined"
    if holdout is None:
        row = _row(spec, version, as_of, "realised_performance", None, metric, value, None, ERROR,
                   f"{detail}; v{version} logged no holdout {metric}", **meta)  # fmt: skip
        return [row], f"realised {metric} {value:.4g}"
    higher = higher_is_better(metric)
    margin = policy.performance_drop * abs(holdout)
    bound = holdout - margin if higher else holdout + margin
    dropped = value < bound if higher else value > bound
    detail += f"; holdout {metric} {holdout:.4g}, drift when {'below' if higher else 'above'} {bound:.4g}"
    rows = [
        _row(spec, version, as_of, "realised_performance", None, metric, value, bound,
             DRIFT if dropped else OK, detail, **meta),
        _row(spec, version, as_of, "realised_performance", None, f"holdout_{metric}", holdout, None, OK,
             f"the gate's holdout value of v{version}", **meta),
    ]  # fmt: skip
    return rows, f"realised {metric} {value:.4g} (holdout {holdout:.4g})"


# --- the run ------------------------------------------------------------------------------


def _skip(spec: ModelSpec, version: int | None, as_of: int, reason: str, **meta: Any) -> MonitorResult:
    row = _row(spec, version, as_of, "reference", None, "available", None, None, ERROR, reason, **meta)
    return MonitorResult(spec.name, version, as_of, SKIPPED, f"{spec.name}: skipped — {reason}", (row,))


def check_inputs(
    engine: Engine, spec: ModelSpec, version: int | None, as_of: dt.datetime, **meta: Any
) -> tuple[list[CheckRow], pd.DataFrame | None]:
    """The freshness rows and the frame a scoring run scores at as_of; no frame when an input is
    stale (the rows then hold an ``error`` row saying which)."""
    from tasks.lifecycle import scoring_frame

    ts = int(as_of.timestamp())
    rows = freshness_rows(engine, spec, version, ts, **meta)
    if any(r.status == ERROR for r in rows):
        return rows, None
    try:
        return rows, scoring_frame(engine, spec, as_of)
    except StaleFeatures as exc:
        rows.append(_row(spec, version, ts, "freshness", None, "scoring_frame", None, None, ERROR,
                         f"stale: {exc}", **meta))  # fmt: skip
        return rows, None


def refusal(spec: ModelSpec, rows: Sequence[CheckRow]) -> StaleFeatures:
    """The error a scoring run raises on stale inputs, naming the first stale one."""
    stale = next(r for r in rows if r.check == "freshness" and r.status == ERROR)
    return StaleFeatures(f"{spec.name}: refusing to score on stale inputs: {stale.detail}")


def champion_reference(
    settings: Settings, spec: ModelSpec, version: int
) -> tuple[Reference | None, str | None]:
    """The reference the champion's training run stored (None when it stored none), and that run."""
    from tasks.lifecycle import mlflow_client

    run = mlflow_client(settings).get_model_version(spec.name, str(version)).run_id
    return (load_reference(settings.mlflow_tracking_uri, run) if run else None), run


def no_reference(
    spec: ModelSpec, version: int, as_of: int, rows: Sequence[CheckRow], **meta: Any
) -> MonitorResult:
    """The skipped result of a champion trained before monitoring (its freshness rows kept)."""
    reason = f"champion v{version} has no monitoring reference (trained before monitoring): retrain it"
    skipped = _skip(spec, version, as_of, reason, **meta)
    return dataclasses.replace(skipped, rows=(*rows, *skipped.rows))


def compare(
    settings: Settings,
    engine: Engine,
    spec: ModelSpec,
    version: int,
    as_of: dt.datetime,
    inputs: tuple[Sequence[CheckRow], pd.DataFrame, pd.Series],
    *,
    now: int,
    run_id: str | None = None,
    plots: Path | None = None,
    reference: tuple[Reference | None, str | None] | None = None,
) -> MonitorResult:
    """Compare a scoring frame and the champion's predictions on it with the champion's reference,
    judge realised performance, and record every row (the freshness rows of ``inputs`` included).

    ``inputs`` is (freshness rows, frame, predictions): what a scoring run built anyway, or what
    ``monitor`` builds for itself. ``reference`` is ``champion_reference``'s answer when the
    caller has it already.
    """
    from tasks.lifecycle import mlflow_client
    from tasks.monitoring.drift import compare_frame, compare_prediction

    freshness, frame, predictions = inputs
    ts = int(as_of.timestamp())
    meta: dict[str, Any] = {"recorded_at": now, "run_id": run_id}
    stored, champion_run = reference or champion_reference(settings, spec, version)
    if stored is None:
        result = no_reference(spec, version, ts, freshness, **meta)
        record_checks(engine, result.rows)
        return result
    client = mlflow_client(settings)
    against, pair = stored.compared
    features = compare_frame(pair.inputs, frame, spec.drift, keys=pair.keys)
    drift_rows = check_rows(features, model=spec.name, version=version, as_of=ts, check="feature_drift",
                            summary_check="dataset_drift", **meta)  # fmt: skip
    scored = compare_prediction(pair.predictions, predictions, spec.drift)
    pred_rows = check_rows(scored, model=spec.name, version=version, as_of=ts, check="prediction_drift",
                           summary_check="prediction_drift", **meta)  # fmt: skip

    def holdout_value(v: int) -> float | None:
        run = client.get_model_version(spec.name, str(v)).run_id
        return client.get_run(run).data.metrics.get(spec.primary_metric) if run else None

    realised, realised_line = realised_rows(engine, spec, holdout_value, ts, spec.drift, **meta)
    rows = [*freshness, *drift_rows, *pred_rows, *realised]
    record_checks(engine, rows)
    status = worst([features.status, scored.status, *(r.status for r in rows if r.check in
                    ("freshness", "realised_performance"))])  # fmt: skip
    drifted = features.drifted()
    summary = (
        f"{spec.name} v{version}: {status}; {len(drifted)} of {len(features.features)} inputs drift "
        f"(dataset {features.status}), predictions {scored.status}, freshness "
        f"{worst([r.status for r in rows if r.check == 'freshness'])}; {realised_line}; "
        f"against the {against} reference of {stored.as_of[:10]}"
    )
    plot = drift_plot(features, plots / f"{spec.name}-drift.png", spec.name) if plots is not None else None
    if plot is not None and champion_run:
        client.log_artifact(champion_run, str(plot), f"monitoring/{utc(ts):%Y-%m-%d}")
    deciding = tuple(dict.fromkeys((*spec.drift.deciding("numeric"), *spec.drift.deciding("categorical"))))
    result = MonitorResult(spec.name, version, ts, status, summary, tuple(rows), against, plot, deciding)
    return announced(result)


def monitor(
    settings: Settings,
    engine: Engine,
    model: str,
    as_of: dt.datetime,
    *,
    now: int,
    run_id: str | None = None,
    plots: Path | None = None,
) -> MonitorResult:
    """Monitor one model at as_of on a frame and predictions of its own, and record every statistic
    (the standalone run; a scoring run calls ``compare`` on what it scores); see the module notes."""
    from tasks.gates import current_champion
    from tasks.lifecycle import predict_chunks
    from tasks.models.catalog import get_spec
    from tasks.registry import load_approved

    spec = get_spec(model)
    ts = int(as_of.timestamp())
    meta: dict[str, Any] = {"recorded_at": now, "run_id": run_id}
    version = current_champion(engine, spec.name)
    if version is None:
        result = _skip(spec, None, ts, "no champion yet: nothing to monitor", **meta)
        record_checks(engine, result.rows)
        return result
    reference = champion_reference(settings, spec, version)
    if reference[0] is None:
        result = no_reference(spec, version, ts, (), **meta)
        record_checks(engine, result.rows)
        return result
    rows, frame = check_inputs(engine, spec, version, as_of, **meta)
    if frame is None:
        record_checks(engine, rows)
        summary = f"{spec.name} v{version}: stale inputs, nothing compared — {refusal(spec, rows)}"
        return announced(MonitorResult(spec.name, version, ts, ERROR, summary, tuple(rows)))
    champion = load_approved(settings.mlflow_tracking_uri, spec.name, version=version, warehouse=engine)
    predictions = predict_chunks(spec, champion.model, frame)["prediction"]
    inputs = (rows, frame, predictions)
    return compare(settings, engine, spec, version, as_of, inputs, now=now, run_id=run_id, plots=plots,
                   reference=reference)  # fmt: skip


def drift_plot(report: Any, path: Path, title: str) -> Path:
    """A bar chart of each input's deciding statistic (PSI by default) with the thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deciding = {
        r.feature: r for r in report.results if r.feature and r.statistic in ("psi",) and r.value is not None
    }
    names = sorted(deciding, key=lambda f: deciding[f].value or 0.0)
    values = [deciding[f].value or 0.0 for f in names]
    colours = {OK: "#4c9a2a", WARN: "#e0a800", DRIFT: "#c0392b"}
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(names) + 1.2))
    ax.barh(names, values, color=[colours.get(deciding[f].status, "#888888") for f in names])
    if names:
        first = deciding[names[0]]
        ax.axvline(first.threshold or 0.25, color="#c0392b", linestyle="--", linewidth=1, label="drift")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_xlabel("population stability index")
    ax.set_title(f"{title}: feature drift")
    ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def shown(row: dict[str, Any], deciding: Sequence[str]) -> bool:
    """Whether a row belongs in the short table: every row of freshness, realised performance,
    the predictions (one column, a handful of statistics) and the verdicts; of the features' drift
    statistics, the deciding ones (the first, PSI by default, always; the data-contract ones when
    not ok)."""
    if row["check"] != "feature_drift" or row["statistic"] == "verdict":
        return True
    if row["statistic"] not in deciding:
        return False
    return row["statistic"] == deciding[0] or row["status"] != OK


def to_markdown(summary: dict[str, Any], *, short: bool = True) -> str:
    """A monitoring summary (``MonitorResult.as_dict``) as a markdown table under its summary line."""
    lines = [summary["summary"], "", "| check | feature | statistic | value | threshold | status |",
             "|---|---|---|---:|---:|---|"]  # fmt: skip
    for row in summary["rows"]:
        if short and not shown(row, summary.get("deciding") or ("psi",)):
            continue
        lines.append(
            f"| {row['check']} | {row['feature'] or ''} | {row['statistic']} | {_cell(row['value'])} "
            f"| {_cell(row['threshold'])} | {row['status']} |"
        )
    return "\n".join(lines)
