"""The build-features flow: validate landed data, then materialise every feature view.

Each view is its own task, so one view whose window holds a rejected partition fails on
its own (named in the report) while the others build. Incremental by default: only
partitions never built for the view's current version, or whose source data changed
(late rows), are rebuilt.

With a Dask cluster configured (``LIVEYIELD_DASK_WORKERS`` / ``LIVEYIELD_DASK_ADDRESS``,
tasks/ops/cluster.py) the build fans out further: the partitions each view needs are planned in
the flow, then one task per (view, partition) is submitted at once and runs on the workers; a
view fails when any of its partitions does, and the others build all the same. Order is kept
where it matters: validation (the ingest-validate subflow) finishes before any partition is
planned, and every view reads only validated raw tables, never another view's partitions, so
the partitions are independent. Each partition's build is one transaction that replaces its
rows: a rerun after a lost worker is harmless. On SQLite the builds' transactions queue on the
database's write lock (tasks/db.py: BEGIN IMMEDIATE, a 60 s busy wait, then the task's retries);
PostgreSQL builds different partitions side by side.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from flows.ingest_validate import ingest_validate
from flows.results import FeatureBuild
from flows.schedule import last_full_day, latest_wins, scheduled_time
from tasks import steps
from tasks.dates import resolve_as_of
from tasks.featurestore.views import FEATURE_VIEWS
from tasks.ops import cluster


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


@flow(
    name="build-features",
    flow_run_name=_run_name,
    log_prints=True,
    task_runner=cluster.SettingsTaskRunner(),
)
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
    workers: list[str | None] = []
    progress: Any = create_progress_artifact(  # a UUID when called from sync code
        0.0, key="feature-build-progress", description=f"Feature views built (0 of {len(names)})"
    )
    builds = (
        _build_on_cluster(names, created_ts, start, end, full, workers)
        if cluster.on_cluster()
        else _build_in_process(names, created_ts, start, end, full)
    )
    for done, (name, outcome) in enumerate(builds, start=1):
        if isinstance(outcome, list):
            built[name] = outcome
        else:
            failed[name] = outcome
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
    return FeatureBuild(built, workers=cluster.tally(workers))


def _build_in_process(
    names: list[str], created_ts: int, start: dt.date | None, end: dt.date | None, full: bool
) -> Iterator[tuple[str, list[str] | str]]:
    """One task per view, one after another: each view's partitions built (ISO) or why it failed."""
    for name in names:
        state = steps.materialize_view(name, created_ts, start, end, full, return_state=True)
        yield name, (state.result() if state.is_completed() else str(state.message or "failed"))


def _build_on_cluster(
    names: list[str],
    created_ts: int,
    start: dt.date | None,
    end: dt.date | None,
    full: bool,
    workers: list[str | None],
) -> Iterator[tuple[str, list[str] | str]]:
    """One task per (view, partition), all submitted at once; per view (in order) the partitions
    built or the first failure. ``workers`` receives the worker of each partition built."""
    plan = steps.plan_feature_builds(names, start, end, full)
    warehouse = cluster.warehouse_id()
    submitted = {
        name: cluster.submit_each(
            steps.materialize_partition,
            [
                {"view_name": name, "partition": day, "created_ts": created_ts, "warehouse": warehouse}
                for day in plan[name]
            ],
        )
        for name in names
    }
    for name in names:
        states = [cluster.settle(future) for future in submitted[name]]
        failure = next((s for s in states if not s.is_completed()), None)
        if failure is not None:
            yield name, str(failure.message or "failed")
            continue
        results = [s.result() for s in states]
        workers.extend(r["worker"] for r in results)
        yield name, [r["partition"] for r in results]
