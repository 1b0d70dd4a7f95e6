"""The platform's health on one screen: per catalog model, its champion and how long it has been
champion, the last training and its gate verdict, the published scoring, the freshness of its
inputs, the latest drift and realised performance, and the next scheduled runs.

Everything is read where it already lives, and nothing another part owns is recomputed: the
champion pointer (``model_champions``), the training runs (the model's MLflow experiment) and gate
verdicts (the version tags ``record_gate_verdict`` writes), the published score set
(``published_scores``, ``score_sets``), freshness by monitoring's own check (``freshness_rows``:
``check_fresh`` per view and the newest validated partition of its source, at as_of), the latest
monitoring rows (``monitoring_checks``), and the schedule from the Prefect API of a served platform
(``PREFECT_API_URL``, else the stack ``liveyield serve`` started; none: "not served").

Nothing here writes. A model without a champion, runs, scores or monitoring gets a cell that says
so, never an exception; ``cells`` words a model's row once for the command line and the artifact.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from tasks.dates import utc
from tasks.models.spec import ModelSpec
from tasks.monitoring.drift import DRIFT, ERROR, OK, WARN
from tasks.monitoring.run import SKIPPED, freshness_rows, worst
from tasks.monitoring.store import CheckRow, latest_checks
from tasks.schema import model_champions, published_scores, score_sets
from tasks.settings import Settings, redact_url

NOT_SERVED = "not served"
NONE = "—"
COLUMNS = ("model", "champion", "trained", "scored", "freshness", "drift", "realised", "next runs")
NOT_JUDGED = "not judged"
NOT_REGISTERED = "not registered"
PREFECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Training:
    """A model's newest training run and the gate verdict of the version it registered (or reused)."""

    run_id: str
    started: int
    as_of: str | None
    version: int | None
    verdict: str  # passed, failed, "not judged" (registered, no verdict yet), "not registered"
    reason: str


@dataclass(frozen=True)
class Scoring:
    """The score set consumers read now."""

    score_set_id: str
    version: int
    as_of: int
    published: int
    rows: int


@dataclass(frozen=True)
class Verdict:
    """One summarised check: its status, the as_of and version it was judged at, a detail."""

    status: str
    detail: str
    as_of: int | None = None
    version: int | None = None
    value: float | None = None
    reference: float | None = None  # realised performance: the gate's holdout value
    statistic: str | None = None


@dataclass(frozen=True)
class NextRun:
    """The next scheduled flow run of a deployment (``state`` is Scheduled, or Late once due)."""

    deployment: str
    expected: int
    state: str


@dataclass(frozen=True)
class ModelStatus:
    """One model's row of the status table (None: nothing of that kind yet)."""

    model: str
    champion: int | None
    champion_since: int | None
    training: Training | None
    scoring: Scoring | None
    freshness: Verdict
    drift: Verdict | None
    realised: Verdict | None
    next_runs: tuple[NextRun, ...]


@dataclass(frozen=True)
class StatusReport:
    """Every model's status at ``as_of`` (freshness) seen at ``now`` (ages), and the schedule's source."""

    as_of: int
    now: int
    schedule: str  # "served at URL", "not served", or "unreachable: ..."
    served: bool
    models: tuple[ModelStatus, ...]
    platform_runs: tuple[NextRun, ...] = ()  # the deployments of no single model (ingest, features)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times as ISO 8601 UTC strings."""
        return _iso_times(dataclasses.asdict(self))


_TIME_KEYS = {"as_of", "now", "started", "published", "expected", "champion_since"}


def _iso_times(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _iso_times(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_iso_times(v, key) for v in value]
    if key in _TIME_KEYS and isinstance(value, int) and not isinstance(value, bool):
        return utc(value).isoformat()
    return value


# --- the warehouse: champion, published scores, monitoring ------------------------------------


def champion(engine: Engine, model: str) -> tuple[int | None, int | None]:
    """The champion version and when it became champion (the pointer's last move), or (None, None)."""
    mc = model_champions
    with engine.connect() as conn:
        row = conn.execute(select(mc.c.version, mc.c.updated_ts).where(mc.c.model_name == model)).first()
    return (None, None) if row is None else (int(row.version), int(row.updated_ts))


def last_scoring(engine: Engine, model: str) -> Scoring | None:
    """The published score set of a model (what consumers read), or None before the first."""
    ps, ss = published_scores, score_sets
    query = (
        select(ss.c.score_set_id, ss.c.model_version, ss.c.as_of, ss.c.rows, ps.c.published_ts)
        .join(ps, ps.c.score_set_id == ss.c.score_set_id)
        .where(ps.c.model_name == model)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return Scoring(str(row.score_set_id), int(row.model_version), int(row.as_of), int(row.published_ts),
                   int(row.rows))  # fmt: skip


def freshness(engine: Engine, spec: ModelSpec, version: int | None, as_of: int, now: int) -> Verdict:
    """Monitoring's freshness check of every view the model reads, at as_of, summarised: the worst
    status, and the first stale input (or the oldest feature row when all are fresh)."""
    rows = freshness_rows(engine, spec, version, as_of, recorded_at=now, run_id=None)
    status = worst([r.status for r in rows])
    bad = [r for r in rows if r.status in (ERROR, WARN)]
    if bad:
        first = next(r for r in bad if r.status == status)
        detail = f"{first.feature}: {first.detail}"
        return Verdict(status, detail, as_of, version, first.value, statistic=first.statistic)
    ages = [r for r in rows if r.statistic == "feature_age_hours" and r.value is not None]
    oldest = max(ages, key=lambda r: r.value or 0.0, default=None)
    if oldest is None:
        return Verdict(status, "reads no feature view", as_of, version)
    detail = f"oldest input {oldest.feature}: {oldest.value:.0f} h old (TTL {oldest.threshold or 0:.0f} h)"
    return Verdict(status, detail, as_of, version, oldest.value, statistic=oldest.statistic)


def _newer(a: CheckRow | None, b: CheckRow | None) -> CheckRow | None:
    if a is None or b is None:
        return a or b
    return max(a, b, key=lambda r: (r.as_of, r.id or 0))


def drift(rows: Sequence[CheckRow]) -> Verdict | None:
    """The latest drift verdict: the worse of dataset drift and prediction drift of the newest
    monitoring run; a newer skip (no champion, no reference) says why nothing was compared."""
    dataset = next((r for r in rows if r.check == "dataset_drift"), None)
    predicted = next((r for r in rows if r.check == "prediction_drift" and r.statistic == "verdict"), None)
    skipped = next((r for r in rows if r.check == "reference"), None)
    compared = _newer(dataset, predicted)
    if compared is None and skipped is None:
        return None
    if skipped is not None and _newer(compared, skipped) is skipped:
        return Verdict(SKIPPED, skipped.detail, skipped.as_of, skipped.version)
    assert compared is not None
    parts = [(r, name) for r, name in ((dataset, "dataset"), (predicted, "predictions")) if r is not None]
    status = worst([r.status for r, _ in parts])
    detail = "; ".join(f"{name} {r.status}: {r.detail}" for r, name in parts)
    share = dataset.value if dataset is not None else None
    return Verdict(status, detail, compared.as_of, compared.version, share, statistic="drift_share")


def realised(rows: Sequence[CheckRow], metric: str) -> Verdict | None:
    """The latest realised value of the model's primary metric next to its holdout value."""
    found = next((r for r in rows if r.check == "realised_performance" and r.statistic == metric), None)
    if found is None:
        return None
    holdout = next(
        (r for r in rows if r.check == "realised_performance" and r.statistic == f"holdout_{metric}"
         and r.as_of == found.as_of),
        None,
    )  # fmt: skip
    return Verdict(found.status, found.detail, found.as_of, found.version, found.value,
                   holdout.value if holdout is not None else None, metric)  # fmt: skip


# --- MLflow: the newest training run and its gate verdict ------------------------------------


def last_training(client: Any, model: str) -> Training | None:
    """The newest run of the model's experiment, the version it registered (an identical earlier
    version when registration reused one: same training fingerprint) and that version's verdict."""
    from tasks.registry import model_versions
    from tasks.registry.tags import FINGERPRINT_TAG

    experiment = client.get_experiment_by_name(model)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                              max_results=1)  # fmt: skip
    if not runs:
        return None
    run = runs[0]
    tags = dict(run.data.tags or {})
    versions = [mv for mv in model_versions(client, model) if mv.run_id == run.info.run_id]
    if not versions and tags.get(FINGERPRINT_TAG):
        versions = [
            mv
            for mv in model_versions(client, model)
            if (mv.tags or {}).get(FINGERPRINT_TAG) == tags[FINGERPRINT_TAG]
        ]
    started = int(run.info.start_time // 1000)
    if not versions:
        return Training(run.info.run_id, started, tags.get("as_of"), None, NOT_REGISTERED, "")
    version = versions[-1]
    version_tags = dict(version.tags or {})
    verdict = version_tags.get("gate_verdict", NOT_JUDGED)
    return Training(run.info.run_id, started, tags.get("as_of"), int(version.version), verdict,
                    version_tags.get("gate_reason", ""))  # fmt: skip


# --- Prefect: the next scheduled runs ----------------------------------------------------------


def _model_of(tags: Sequence[str]) -> str | None:
    return next((t.removeprefix("model:") for t in tags if t.startswith("model:")), None)


def next_runs(api_url: str | None) -> tuple[str, dict[str | None, list[NextRun]]]:
    """Where the schedule was read, and the next scheduled run of every deployment by model (None:
    the platform's own deployments); "not served" without an API, "unreachable: ..." when it does
    not answer."""
    import httpx

    if api_url is None:
        return NOT_SERVED, {}
    shown = redact_url(api_url)  # a URL with credentials is shown without its password
    try:
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=PREFECT_TIMEOUT_S).raise_for_status()
    except httpx.HTTPError as exc:
        return f"unreachable: {shown} ({type(exc).__name__})", {}
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import temporary_settings

    from tasks.ops.servers import prefect_client_settings

    found: dict[str | None, list[NextRun]] = {}
    scheduled = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
    try:
        with temporary_settings(prefect_client_settings(api_url)), get_client(sync_client=True) as client:
            for deployment in client.read_deployments():
                upcoming = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]), state=scheduled
                    ),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=1,
                )
                expected = upcoming[0].expected_start_time if upcoming else None
                if expected is None:
                    continue
                first = upcoming[0]
                state = (first.state.name if first.state is not None else None) or "Scheduled"
                run = NextRun(deployment.name, int(expected.timestamp()), state)
                found.setdefault(_model_of(deployment.tags or []), []).append(run)
    except httpx.HTTPError as exc:  # the API's own errors (PrefectHTTPStatusError is one)
        return f"unreachable: {shown} ({type(exc).__name__})", {}
    for listed in found.values():
        listed.sort(key=lambda r: (r.expected, r.deployment))
    return f"served at {shown}", found


# --- the report --------------------------------------------------------------------------------


def collect(
    settings: Settings,
    engine: Engine,
    models: Sequence[str] | None,
    as_of: dt.datetime,
    *,
    now: int,
    api_url: str | None,
) -> StatusReport:
    """The status of the named catalog models (default: all) at as_of; see the module notes."""
    from tasks.lifecycle import mlflow_client
    from tasks.models.catalog import MODELS, get_spec

    ts = int(as_of.timestamp())
    client = mlflow_client(settings)
    schedule, runs = next_runs(api_url)
    rows: list[ModelStatus] = []
    for name in models or sorted(MODELS):
        spec = get_spec(name)
        version, since = champion(engine, name)
        checks = latest_checks(engine, name)
        rows.append(
            ModelStatus(
                model=name,
                champion=version,
                champion_since=since,
                training=last_training(client, name),
                scoring=last_scoring(engine, name),
                freshness=freshness(engine, spec, version, ts, now),
                drift=drift(checks),
                realised=realised(checks, spec.primary_metric),
                next_runs=tuple(runs.get(name, ())),
            )
        )
    served = schedule.startswith("served")
    return StatusReport(ts, now, schedule, served, tuple(rows), tuple(runs.get(None, ())))


# --- words: one row of cells for the command line and the artifact ----------------------------


def age(seconds: float) -> str:
    """A duration in its two largest units: 3d 4h, 5h 10m, 12m, 40s."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def _when(ts: int) -> str:
    """A moment in short: 12-06 at midnight (most as_of), else 12-06 04:30."""
    moment = utc(ts)
    return f"{moment:%m-%d}" if moment.time() == dt.time() else f"{moment:%m-%d %H:%M}"


def _soon(ts: int, now: int) -> str:
    """A scheduled moment: its weekday and time within the coming six days (Mon 03:00), else its date."""
    moment = utc(ts)
    return f"{moment:%a %H:%M}" if ts - now < 6 * 86_400 else f"{moment:%m-%d %H:%M}"


def _unless_champion(version: int | None, row: ModelStatus) -> str:
    """ " (vN)" when a cell's version is not the champion's, else nothing."""
    return "" if version is None or version == row.champion else f" (v{version})"


def _schedule_cell(report: StatusReport, row: ModelStatus) -> tuple[str, str]:
    if not report.served:
        return (NOT_SERVED if report.schedule == NOT_SERVED else "unreachable"), WARN
    if not row.next_runs:
        return "none scheduled", ""
    words = []
    for run in row.next_runs:
        label = run.deployment.removeprefix(f"{row.model}-")
        late = f" ({run.state.lower()})" if run.state != "Scheduled" else ""
        words.append(f"{label} {_soon(run.expected, report.now)}{late}")
    return "\n".join(words), OK


def cells(report: StatusReport, row: ModelStatus) -> list[tuple[str, str]]:
    """A model's row as (text, status) per column of ``COLUMNS`` (ages and each next run on a line
    of their own); the status ("ok", "warn", "drift", "error", "skipped" or "") colours it."""
    now = report.now
    if row.champion is None:
        champ = ("no champion", WARN)
    else:
        since = f" · {age(now - row.champion_since)}" if row.champion_since is not None else ""
        champ = (f"v{row.champion}{since}", OK)
    t = row.training
    if t is None:
        trained = (NONE, "")
    else:
        version = f"v{t.version} " if t.version is not None else ""
        status = {"passed": OK, "failed": ERROR}.get(t.verdict, WARN)
        trained = (f"{version}{t.verdict}\n{age(now - t.started)} ago", status)
    s = row.scoring
    if s is None:
        scored = (NONE, "")
    else:
        other = _unless_champion(s.version, row)
        scored = (f"{_when(s.as_of)}: {s.rows:,} rows{other}\n{age(now - s.published)} ago", OK)
    f = row.freshness
    fresh_word = {OK: "ok", WARN: "late", ERROR: "stale"}.get(f.status, f.status)
    if f.status == OK:
        fresh = (f"ok ({f.value:.0f} h)" if f.value is not None else "ok", OK)
    else:  # the first stale (or late) view on a line of its own
        fresh = (f"{fresh_word}\n{f.detail.split(':')[0]}", f.status)
    d = row.drift
    if d is None:
        drifted = (NONE, "")
    elif d.status == SKIPPED:
        drifted = ("skipped: " + ("no reference" if "reference" in d.detail else "no champion"), SKIPPED)
    else:
        share = f" {d.value:.0%} of inputs" if d.value is not None and d.status in (WARN, DRIFT) else ""
        when = f" · {_when(d.as_of)}" if d.as_of is not None else ""
        drifted = (f"{d.status}{share}{when}{_unless_champion(d.version, row)}", d.status)
    r = row.realised
    if r is None:
        real = (NONE, "")
    elif r.value is None:
        real = (f"{r.statistic}: {r.status}", r.status)
    else:
        holdout = f" vs {r.reference:.3g}" if r.reference is not None else ""
        real = (f"{r.statistic} {r.value:.3g}{holdout} {r.status}", r.status)
    return [(row.model, ""), champ, trained, scored, fresh, drifted, real, _schedule_cell(report, row)]


def headline(report: StatusReport) -> str:
    """The line above the table: when, freshness as of when, how many models have a champion."""
    champions = sum(1 for m in report.models if m.champion is not None)
    return (
        f"liveyield status at {utc(report.now):%Y-%m-%d %H:%M} UTC, freshness as of "
        f"{utc(report.as_of):%Y-%m-%d %H:%M} UTC: {champions} of {len(report.models)} models have a champion"
    )


def footer(report: StatusReport) -> str:
    """The line below the table: where the next runs came from, and the platform's own (ingest,
    features) when served."""
    if report.schedule == NOT_SERVED:
        return "next runs: not served (no Prefect API: `liveyield serve` starts one)"
    line = f"next runs: {report.schedule}"
    if report.platform_runs:
        line += "; platform: " + ", ".join(
            f"{r.deployment} {_soon(r.expected, report.now)}" for r in report.platform_runs
        )
    return line


def to_markdown(report: StatusReport) -> str:
    """The status table as markdown under its headline (the ``liveyield-status`` artifact)."""
    lines = [headline(report), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report.models:
        words = (text.replace("|", "/").replace("\n", ", ") for text, _ in cells(report, row))
        lines.append("| " + " | ".join(words) + " |")
    return "\n".join([*lines, "", footer(report)])
