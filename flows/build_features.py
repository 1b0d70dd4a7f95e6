"""The build-features flow: validate landed data, then materialise every feature view.

Each view is its own task, so one view whose window holds a rejected partition fails on
its own (named in the report) while the others build. Incremental by default: only
partitions never built for the view's current version, or whose source data changed
(late rows), are rebuilt.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from flows.ingest_validate import ingest_validate
from flows.results import FeatureBuild
from flows.schedule import last_full_day, latest_wins, scheduled_time
from tasks import steps
from tasks.dates import resolve_as_of
from tasks.featurestore.views import FEATURE_VIEWS


class FeatureBuildError(RuntimeError):
    """One or more feature views could not be built."""


def _run_name() -> str:
    """build-features-<first>-<last> (or -all), readable in the UI."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    start, end = params.get("start"), params.get("end")
    if end is None and params.get("as_of") is not None:
        end = last_day_before(params["as_of"])
    return f"build-features-{start or 'first'}-{end or 'last'}" + ("-full" if params.get("full") else "")


def last_day_before(as_of: dt.datetime | dt.date | str) -> dt.date:
    """The last partition day wholly before ``as_of`` (tasks/dates.py rule): a date D gives D."""
    moment = dt.datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    return (resolve_as_of(moment) - dt.timedelta(microseconds=1)).date()


@flow(name="build-features", flow_run_name=_run_name, log_prints=True)
@latest_wins
def build_features(
    start: dt.date | None = None,
    end: dt.date | None = None,
    full: bool = False,
    views: list[str] | None = None,
    validate_first: bool = True,
    as_of: dt.datetime | None = None,
) -> FeatureBuild:
    """Materialise the catalog's feature views for [start, end].

    ``end`` defaults to the last day before ``as_of`` when one is given (or, in a deployment run,
    before its scheduled time: flows/schedule.py), else to every validated day.
    """
    logger = get_run_logger()
    if end is None and as_of is not None:
        end = last_day_before(as_of)
    elif end is None and (scheduled := scheduled_time()) is not None:
        end = last_full_day(scheduled)  # a scheduled run builds through the day before its own
    if validate_first:
        ingest_validate(fail_on_rejected=False)
    created_ts = int(dt.datetime.now(dt.UTC).timestamp())
    names = views or sorted(FEATURE_VIEWS)
    built: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    progress: Any = create_progress_artifact(  # a UUID when called from sync code
        0.0, key="feature-build-progress", description=f"Feature views built (0 of {len(names)})"
    )
    for done, name in enumerate(names, start=1):
        state = steps.materialize_view(name, created_ts, start, end, full, return_state=True)
        if state.is_completed():
            built[name] = state.result()
        else:
            failed[name] = str(state.message or "failed")
        update_progress_artifact(
            progress,
            100.0 * done / len(names),
            description=f"Feature views built ({done} of {len(names)}; last: {name})",
        )
    logger.info("built %d partitions over %d views", sum(map(len, built.values())), len(built))
    lines = ["| view | partitions built |", "|---|---:|"] + [f"| {v} | {len(p)} |" for v, p in built.items()]
    lines += [f"| {v} | FAILED: {msg} |" for v, msg in failed.items()]
    create_markdown_artifact(key="feature-build", markdown="\n".join(lines), description="Feature build")
    if failed:
        raise FeatureBuildError("; ".join(f"{v}: {m}" for v, m in failed.items()))
    return FeatureBuild(built)
