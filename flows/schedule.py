"""What a scheduled run is for, and the late-run policy.

**The day a run is for.** A run of a deployment (started by its schedule, a trigger or
``run_deployment``) that is given no ``as_of`` works as of its *scheduled* start time, not the
clock when it happens to start: a run scheduled for 05:00 that a busy worker starts at 07:30 still
scores as of 05:00, and a run created for a past time (a backfill, the live-chain test) works on
that time. Runs outside a deployment (the command line, a subflow, a test) use now: the as_of rule
of tasks/dates.py with "now" read here, once.

**Late runs do not pile up: the newest due run wins.** When the worker was down or busy, several
runs of one deployment can be due at once (its schedule kept creating them). A run that starts
while a newer run of the same deployment with the same parameters is already due (scheduled at or
before now, and not cancelled, failed or crashed) completes at once with the message "superseded
by …" and does nothing; the newest does the work. A run with other parameters (a drift-triggered
retraining for an as_of, a hand-made run) supersedes nothing. That is safe for every deployment of
the platform because each one's work is cumulative: simulate-daily appends every missing day up to
its own, ingest-validate loads every pending batch, build-features builds every missing partition,
a retrain trains on everything up to its as_of, and a score set as of the newest time replaces the
older ones (readers take the latest published set). Together with each deployment's concurrency
limit of one (later runs wait, never run beside it), a worker that comes back after three days
runs each deployment once, not three times.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from tasks.dates import resolve_as_of

P = ParamSpec("P")
R = TypeVar("R")

# A run in one of these states will not do the work, so it supersedes nothing.
_NOT_COMING = ("CANCELLED", "CANCELLING", "FAILED", "CRASHED")


def _deployment_run() -> Any | None:
    """This process's current flow run when it belongs to a deployment, else None."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    return run if run is not None and run.deployment_id is not None else None


def scheduled_time() -> dt.datetime | None:
    """The scheduled start of the current deployment run (None outside one)."""
    run = _deployment_run()
    if run is None or run.expected_start_time is None:
        return None
    moment: dt.datetime = run.expected_start_time
    return moment.astimezone(dt.UTC)


def run_as_of(value: dt.datetime | dt.date | None) -> dt.datetime:
    """The as_of rule (tasks/dates.py), where "now" is a deployment run's scheduled start."""
    return resolve_as_of(value, now=scheduled_time())


def last_full_day(moment: dt.datetime) -> dt.date:
    """The last UTC day wholly over at ``moment``: a run scheduled at 00:15 (or at 00:00) on day D
    works through D - 1, never on the day it runs in, whose events have not all happened yet."""
    return moment.astimezone(dt.UTC).date() - dt.timedelta(days=1)


def name_day(as_of: object) -> str:
    """The day a run is for, for its name in the UI: its ``as_of`` parameter's date when given,
    else the run's scheduled start (named before the run's context exists, so read from the API)."""
    if isinstance(as_of, str):
        return as_of[:10]
    if isinstance(as_of, dt.datetime | dt.date):
        return resolve_as_of(as_of).date().isoformat()
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time  # now, outside a flow run
    return resolve_as_of(None, now=dt.datetime.fromisoformat(str(scheduled))).date().isoformat()


def superseded_by() -> str | None:
    """A newer, already due run of this run's deployment (its name and scheduled time), or None."""
    run = _deployment_run()
    if run is None or run.expected_start_time is None:
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    mine = run.expected_start_time
    now: Any = dt.datetime.now(dt.UTC)  # the filter's type is a DateTime subclass; it takes this
    with get_client(sync_client=True) as client:
        due = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(not_any_=[run.id]),
                deployment_id=FlowRunFilterDeploymentId(any_=[run.deployment_id]),
                expected_start_time=FlowRunFilterExpectedStartTime(after_=mine, before_=now),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(not_any_=[StateType(s) for s in _NOT_COMING])
                ),
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=50,
        )
    # Only a run of the same parameters stands in for this one: a triggered or hand-made run
    # (another as_of, actor or reason) does other work and supersedes no scheduled run.
    newer = [
        (r.name, r.expected_start_time)
        for r in due
        if r.expected_start_time is not None and r.parameters == run.parameters
    ]
    newer = [(name, when) for name, when in newer if when is not None and when > mine]
    if not newer:
        return None
    name, when = newer[0]
    return f"{name} (scheduled {when.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC)"


def latest_wins(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a deployment's flow function in the late-run policy (module docstring): a deployment
    run with a newer due run of its deployment ends Completed, "superseded by …", without working.
    Put it under ``@flow`` so the flow keeps the function's name, signature and parameters."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        newer = superseded_by()
        if newer is None:
            return fn(*args, **kwargs)
        from prefect import get_run_logger
        from prefect.states import Completed

        message = f"superseded by {newer}: the newest due run does the work"
        get_run_logger().info(message)
        # A flow that returns a state ends in it; the caller of a deployment run reads the state.
        return cast(R, Completed(message=message))

    # Prefect reads the parameters from the signature; resolve its annotations in fn's module.
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    wrapper.__annotations__ = typing.get_type_hints(fn, include_extras=True)
    return wrapper
