"""Prefect events of monitoring and promotion: sent to a real Prefect API and read back from it.

The API is the session's Prefect test harness (a real, temporary server); each test uses a model
name of its own so the events of other tests never match. The no-API case checks that nothing is
sent when no server is configured (the serverless demo).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest

from tasks.monitoring import events
from tasks.monitoring.drift import DRIFT, ERROR, OK
from tasks.monitoring.run import MonitorResult
from tasks.monitoring.store import CheckRow

pytestmark = pytest.mark.usefixtures("prefect_harness")

AS_OF = int(dt.datetime(2026, 3, 9, tzinfo=dt.UTC).timestamp())


def model_events(
    model: str, since: dt.datetime, names: tuple[str, ...] = (), *, count: int = 0, timeout_s: float = 30
) -> list[Any]:
    """The events about a model since a moment, oldest first, as the Prefect API (PREFECT_API_URL)
    returns them; waits until at least ``count`` arrived (events are delivered in the background)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    query = EventFilter(
        occurred=EventOccurredFilter.model_validate(
            {"since": since, "until": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}
        ),
        resource=EventResourceFilter(id=[events.model_resource_id(model)]),
        event=EventNameFilter(name=list(names)) if names else None,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            found = client.read_events(filter=query, limit=50).events
        if len(found) >= count or time.monotonic() > deadline:
            return sorted(found, key=lambda e: e.occurred)
        time.sleep(0.5)


def _row(model: str, check: str, statistic: str, status: str, detail: str) -> CheckRow:
    return CheckRow(model, 3, AS_OF, check, None, statistic, 1.0, 0.5, status, detail, "run", AS_OF)


def _result(model: str, rows: list[CheckRow], status: str) -> MonitorResult:
    return MonitorResult(model, 3, AS_OF, status, f"{model}: {status}", tuple(rows))


def test_findings_are_events_about_the_model() -> None:
    model = f"m{uuid.uuid4().hex[:8]}"
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    rows = [
        _row(model, "dataset_drift", "drift_share", DRIFT, "4 of 20 inputs drift"),
        _row(model, "prediction_drift", "verdict", DRIFT, "psi 0.4"),
        _row(model, "realised_performance", "auc", DRIFT, "auc 0.55 below 0.61"),
        _row(model, "freshness", "feature_age_hours", ERROR, "stale: user_watch"),
        _row(model, "feature_drift", "psi", DRIFT, "one input (no finding of its own)"),
        _row(model, "freshness", "partition_age_hours", OK, "fresh"),
    ]
    sent = events.emit_findings(_result(model, rows, ERROR))
    assert sorted(e.event for e in sent) == sorted(
        [events.DRIFT_DETECTED, events.PERFORMANCE_DROPPED, events.DATA_STALE]
    )

    received = {e.event: e for e in model_events(model, since, count=3)}
    assert set(received) == {events.DRIFT_DETECTED, events.PERFORMANCE_DROPPED, events.DATA_STALE}
    drift = received[events.DRIFT_DETECTED]
    assert drift.resource.id == f"liveyield.model.{model}" and drift.resource.name == model
    # Both drift findings in one event (one trigger evaluation), with what the trigger passes on.
    assert drift.payload["details"] == ["4 of 20 inputs drift", "predictions: psi 0.4"]
    assert drift.payload["as_of"] == "2026-03-09T00:00:00+00:00" and drift.payload["version"] == 3
    assert received[events.PERFORMANCE_DROPPED].payload["details"] == ["auc 0.55 below 0.61"]
    assert received[events.DATA_STALE].payload["status"] == ERROR


def test_a_run_that_found_nothing_sends_nothing() -> None:
    model = f"m{uuid.uuid4().hex[:8]}"
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    quiet = [
        _row(model, "dataset_drift", "drift_share", OK, "0 of 20"),
        _row(model, "freshness", "x", OK, ""),
    ]
    assert events.emit_findings(_result(model, quiet, OK)) == []
    events.emit(events.PROMOTED, model, {"version": 1})  # a marker that does arrive
    assert [e.event for e in model_events(model, since, count=1)] == [events.PROMOTED]


def test_without_a_prefect_api_nothing_is_sent() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    model = f"m{uuid.uuid4().hex[:8]}"
    drifted = _result(model, [_row(model, "dataset_drift", "drift_share", DRIFT, "drift")], DRIFT)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert not events.api_configured()
        # Prefect alone would start a throwaway server for this event; the platform sends none.
        assert events.emit_findings(drifted) == []
        assert events.emit(events.PROMOTED, model, {"version": 1}) is None
    assert model_events(model, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), timeout_s=0) == []
