"""Prefect events of the platform: what monitoring found and what was promoted, per model.

Every event has the model as its resource (``liveyield.model.NAME``), so an automation can act on
one model's events: the retraining deployment's trigger (tasks/ops/deployments.py) starts that
model's retraining on ``drift-detected`` or ``performance-dropped``, at most once per cooldown.

    liveyield.model.drift-detected       dataset or prediction drift of the champion's inputs
    liveyield.model.performance-dropped  realised performance below the champion's holdout value
    liveyield.data.stale                 an input of the model is past its TTL (scoring refuses)
    liveyield.model.promoted             @champion moved to a new version

Events go only to a configured Prefect API (PREFECT_API_URL: `liveyield serve`'s server, or a
test harness). Without one, Prefect would start a throwaway server just to receive them, where no
automation runs: emitting is then a silent no-op, so the serverless demo stays as it was.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.events import Event

    from tasks.monitoring.run import MonitorResult

DRIFT_DETECTED = "liveyield.model.drift-detected"
PERFORMANCE_DROPPED = "liveyield.model.performance-dropped"
DATA_STALE = "liveyield.data.stale"
PROMOTED = "liveyield.model.promoted"
RETRAIN_EVENTS = (DRIFT_DETECTED, PERFORMANCE_DROPPED)  # what starts a model's retraining

_BY_KIND = {"drift": DRIFT_DETECTED, "performance": PERFORMANCE_DROPPED, "stale": DATA_STALE}


def model_resource_id(model: str) -> str:
    """The resource id of a model in every event about it (what a trigger matches)."""
    return f"liveyield.model.{model}"


def api_configured() -> bool:
    """Whether a Prefect API is configured to receive events (see the module notes)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def emit(event: str, model: str, payload: dict[str, Any]) -> Event | None:
    """Emit one event about a model; None (and nothing sent) when no Prefect API is configured.

    Delivery is Prefect's: queued, sent in the background, flushed at exit; a failure to send is
    logged by Prefect and never fails the run that emitted it."""
    if not api_configured():
        return None
    from prefect.events import emit_event

    resource = {"prefect.resource.id": model_resource_id(model), "prefect.resource.name": model}
    return emit_event(event=event, resource=resource, payload={"model": model, **payload})


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def emit_findings(result: MonitorResult) -> list[Event]:
    """One event per kind of finding of a monitoring run (drift, performance, stale), with every
    detail of that kind; nothing for a run that found nothing."""
    from tasks.monitoring.run import findings

    details: dict[str, list[str]] = {}
    for finding in findings(result):
        details.setdefault(finding.kind, []).append(finding.detail)
    sent: list[Event] = []
    for kind, lines in details.items():
        payload = {
            "version": result.version,
            "as_of": _iso(result.as_of),
            "status": result.status,
            "details": lines,
        }
        event = emit(_BY_KIND[kind], result.model, payload)
        if event is not None:
            sent.append(event)
    return sent


def emit_promoted(
    model: str, version: int, previous: int | None, *, actor: str, reason: str, flow_run_id: str | None
) -> Event | None:
    """The promotion of ``version`` of a model to @champion (``previous``: the former champion)."""
    payload = {
        "version": version,
        "previous_version": previous,
        "actor": actor,
        "reason": reason,
        "flow_run_id": flow_run_id,
    }
    return emit(PROMOTED, model, payload)
