"""Prefect task wrappers: the thin edge (names, retries, tags) around the plain functions in tasks/.

Tasks take and return small identifiers and summaries, never engines or DataFrames, so
their parameters stay readable in the UI and cache keys stay meaningful.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from sqlalchemy.exc import DBAPIError, OperationalError

from tasks import ingest, quality
from tasks.db import DatabaseUnavailable, check_connection, make_engine
from tasks.settings import get_settings, redact_url
from tasks.warehouse import upgrade_schema


def is_transient(exc: BaseException | None) -> bool:
    """I/O failures worth a retry; data and logic errors are not."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, (OSError, DatabaseUnavailable))


def retry_on_io(_task: Any, _run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry only transient I/O failures."""
    return is_transient(state.result(raise_on_failure=False))  # type: ignore[arg-type]


@task(name="prepare-warehouse", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_on_io)
def prepare_warehouse() -> str:
    """Check the database answers and migrate it to the latest schema."""
    settings = get_settings()
    engine = make_engine(settings.db_url)
    try:
        check_connection(engine)
        upgrade_schema(engine)
    finally:
        engine.dispose()
    return redact_url(engine.url)


@task(
    name="ingest-table",
    task_run_name="ingest-{table}",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_on_io,
)
def ingest_table(
    table: str,
    max_ts: int,
    partition: dt.date | None = None,
    max_bad_share: float | None = None,
    warehouse: str | None = None,
) -> dict[str, Any]:
    """Validate and load one raw table's pending landed batches.

    Returns ``partitions`` (one summary per batch), ``worker`` (the Dask worker it ran on, None
    in the flow's process) and, from a worker, ``gx_results``: its GX validation results for the
    flow's Data Docs. ``warehouse`` is the flow's (tasks/ops/cluster.py): a worker set up for
    another database refuses.
    """
    from prefect.runtime import flow_run

    from tasks.ops.cluster import check_warehouse, worker_label
    from tasks.quality import docs

    check_warehouse(warehouse)
    worker = worker_label()
    kept = set(docs.kept_runs()) if worker else set()
    settings = get_settings()
    engine = make_engine(settings.db_url)
    try:
        results = ingest.ingest_table(
            engine,
            settings.landing_dir,
            table,
            max_ts=max_ts,
            partition=partition,
            flow_run_id=flow_run.get_id(),
            max_bad_share=max_bad_share,
        )
    finally:
        engine.dispose()
    shipped = docs.export_results(r for r in docs.kept_runs() if r not in kept) if worker else []
    return {"partitions": [r.as_dict() for r in results], "worker": worker, "gx_results": shipped}


@task(name="land-file", task_run_name="land-{table}")
def land_file(
    table: str, file: Path, mapping: Path | None = None, max_ts: int | None = None
) -> dict[str, Any]:
    """Read, map and pseudonymise a file into the landing zone; store the identities it carried.

    Returns the rows and batches landed and the mapping's ``max_bad_share`` (None: the suites' own).
    """
    from tasks import importer
    from tasks.db import write_tx
    from tasks.settings import pseudonym_key
    from tasks.warehouse import store_identities

    settings = get_settings()
    spec = importer.load_mapping(mapping) if mapping else None
    files, identities, rows = importer.land_import(
        file, table, settings.landing_dir, pseudonym_key(settings), spec, max_ts=max_ts
    )
    if len(identities):
        engine = make_engine(settings.db_url)
        try:
            upgrade_schema(engine)
            with write_tx(engine) as conn:
                store_identities(conn, identities.frame)
        finally:
            engine.dispose()
    return {"rows": rows, "batches": len(files), "max_bad_share": spec.max_bad_share if spec else None}


@task(name="build-data-docs")
def build_data_docs(gx_results: list[Any] | None = None) -> str:
    """Build the Great Expectations Data Docs of this process's validations and of the results
    shipped from Dask workers (``gx_results``, see ingest_table)."""
    from tasks.quality import docs

    if gx_results:
        docs.adopt_results(gx_results)
    return str(quality.build_data_docs(get_settings().data_docs_dir))


@task(
    name="materialize-view",
    task_run_name="materialize-{view_name}",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_on_io,
)
def materialize_view(
    view_name: str,
    created_ts: int,
    start: dt.date | None = None,
    end: dt.date | None = None,
    full: bool = False,
) -> list[str]:
    """Build one feature view's stale partitions (or every partition in range with ``full``)."""
    from tasks import featurestore
    from tasks.featurestore.views import get_view

    view = get_view(view_name)
    engine = make_engine(get_settings().db_url)
    try:
        if full and start is not None and end is not None:
            built = featurestore.backfill(engine, view, start, end, created_ts=created_ts)
        else:
            built = featurestore.materialize_incremental(
                engine, view, created_ts=created_ts, start=start, end=end
            )
    finally:
        engine.dispose()
    return [d.isoformat() for d in built]


@task(name="plan-feature-builds")
def plan_feature_builds(
    view_names: list[str], start: dt.date | None = None, end: dt.date | None = None, full: bool = False
) -> dict[str, list[dt.date]]:
    """The partitions each view's build takes, as materialize_view would: every day in range with
    ``full`` (and both ends), else the stale ones. For fanning a build out per (view, partition)."""
    from tasks import featurestore
    from tasks.featurestore.materialize import days_between
    from tasks.featurestore.views import get_view

    if full and start is not None and end is not None:
        return {name: days_between(start, end) for name in view_names}
    engine = make_engine(get_settings().db_url)
    try:
        return {
            name: featurestore.stale_partitions(engine, get_view(name), start, end) for name in view_names
        }
    finally:
        engine.dispose()


@task(
    name="materialize-partition",
    task_run_name="materialize-{view_name}-{partition}",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_on_io,
)
def materialize_partition(
    view_name: str, partition: dt.date, created_ts: int, warehouse: str | None = None
) -> dict[str, Any]:
    """Build one partition of a feature view (one transaction: idempotent, so a rerun on another
    worker is harmless); returns the view, the partition (ISO), the rows and the Dask worker."""
    from tasks import featurestore
    from tasks.featurestore.views import get_view
    from tasks.ops.cluster import check_warehouse, worker_label

    check_warehouse(warehouse)
    engine = make_engine(get_settings().db_url)
    try:
        rows = featurestore.materialize_partition(
            engine, get_view(view_name), partition, created_ts=created_ts
        )
    finally:
        engine.dispose()
    return {"view": view_name, "partition": partition.isoformat(), "rows": rows, "worker": worker_label()}


def _engine() -> Any:
    return make_engine(get_settings().db_url)


@task(name="train-candidate", task_run_name="train-{model}", retries=1, retry_condition_fn=retry_on_io)
def train_candidate(model: str, as_of: dt.datetime, code_version: str) -> dict[str, Any]:
    """Training set → fit → holdout evaluation → one MLflow run; returns the run id and metrics."""
    from prefect.runtime import flow_run

    from tasks import lifecycle

    engine = _engine()
    try:
        return lifecycle.train_candidate(
            get_settings(), engine, model, as_of, code_version=code_version, flow_run_id=flow_run.get_id()
        )
    finally:
        engine.dispose()


@task(name="register-candidate", task_run_name="register-{model}", retries=2, retry_condition_fn=retry_on_io)
def register_candidate(model: str, run_id: str) -> dict[str, Any]:
    """Register the run's model as a version (reusing an identical one) and mark it @challenger."""
    from tasks import lifecycle

    return lifecycle.register(get_settings(), model, run_id)


@task(name="gate-candidate", task_run_name="gate-{model}-v{version}")
def gate_candidate(model: str, version: int, run_id: str) -> dict[str, Any]:
    """Judge the candidate against its policy and the champion; returns the report as a dict."""
    from tasks import lifecycle

    engine = _engine()
    try:
        return lifecycle.gate(get_settings(), engine, model, version, run_id).to_dict()
    finally:
        engine.dispose()


@task(name="promote-candidate", task_run_name="promote-{model}")
def promote_candidate(model: str, report: dict[str, Any], actor: str, reason: str) -> dict[str, Any]:
    """Move @champion to the candidate by compare-and-set when its gate passed."""
    from prefect.runtime import flow_run

    from tasks import lifecycle
    from tasks.gates import GateReport

    engine = _engine()
    try:
        return lifecycle.promote_if_passed(
            get_settings(),
            engine,
            GateReport.from_dict(report),
            actor=actor,
            flow_run_id=flow_run.get_id(),
            reason=reason,
        )
    finally:
        engine.dispose()


@task(name="score-model", task_run_name="score-{model}", retries=1, retry_condition_fn=retry_on_io)
def score_model(model: str, as_of: dt.datetime, now: int) -> dict[str, Any]:
    """Check freshness, score with the champion resolved once, monitor what was scored (the summary
    under ``monitor``), validate the set, publish it atomically."""
    import tempfile

    from prefect.runtime import flow_run

    from tasks import lifecycle

    engine = _engine()
    try:
        with tempfile.TemporaryDirectory(prefix="ly-score-") as tmp:
            return lifecycle.score(
                get_settings(),
                engine,
                model,
                as_of,
                run_id=flow_run.get_id() or "local",
                now=now,
                plots=Path(tmp),
            )
    finally:
        engine.dispose()


@task(name="plan-scoring", task_run_name="plan-scoring-{model}", retries=1, retry_condition_fn=retry_on_io)
def plan_scoring(model: str, as_of: dt.datetime, now: int, workers: int) -> dict[str, Any]:
    """A fanned-out scoring run's start, in the flow: check freshness, monitor the whole frame,
    stage the score set empty, choose the partitions (tasks/scoring/partitions.py)."""
    import tempfile

    from prefect.runtime import flow_run

    from tasks import lifecycle

    engine = _engine()
    try:
        with tempfile.TemporaryDirectory(prefix="ly-score-") as tmp:
            return lifecycle.plan_scoring(
                get_settings(),
                engine,
                model,
                as_of,
                run_id=flow_run.get_id() or "local",
                now=now,
                workers=workers,
                plots=Path(tmp),
            )
    finally:
        engine.dispose()


@task(
    name="score-partition",
    task_run_name="score-{model}-{part}-of-{parts}",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_on_io,
)
def score_partition(
    model: str,
    version: int,
    as_of: dt.datetime,
    score_set_id: str,
    part: int,
    parts: int,
    warehouse: str | None = None,
) -> dict[str, Any]:
    """Score one entity-key partition into the staged set (one transaction replacing the
    partition's rows: a rerun on another worker is harmless); returns its rows and the worker."""
    from tasks import lifecycle
    from tasks.ops.cluster import check_warehouse, worker_label

    check_warehouse(warehouse)
    engine = _engine()
    try:
        rows = lifecycle.score_partition(
            get_settings(), engine, model, version, as_of, score_set_id=score_set_id, part=part, parts=parts
        )
    finally:
        engine.dispose()
    return {"part": part, "rows": rows, "worker": worker_label()}


@task(name="publish-scores", task_run_name="publish-{model}", retries=1, retry_condition_fn=retry_on_io)
def publish_scores(model: str, score_set_id: str, rows: int, now: int) -> dict[str, Any]:
    """Validate the staged set the partitions wrote and publish it with the single atomic flip."""
    from tasks import lifecycle

    engine = _engine()
    try:
        return lifecycle.publish_staged(engine, model, score_set_id, rows=rows, now=now)
    finally:
        engine.dispose()


@task(name="monitor-model", task_run_name="monitor-{model}", retries=1, retry_condition_fn=retry_on_io)
def monitor_model(model: str, as_of: dt.datetime, now: int) -> dict[str, Any]:
    """Drift, freshness and realised performance of the champion at as_of, recorded; the summary."""
    import tempfile

    from prefect.runtime import flow_run

    from tasks.monitoring.run import monitor

    engine = _engine()
    try:
        with tempfile.TemporaryDirectory(prefix="ly-monitor-") as tmp:
            result = monitor(
                get_settings(),
                engine,
                model,
                as_of,
                now=now,
                run_id=flow_run.get_id(),
                plots=Path(tmp),
            )
    finally:
        engine.dispose()
    return result.as_dict()


@task(name="platform-status", retries=1, retry_condition_fn=retry_on_io)
def platform_status(as_of: dt.datetime, now: int) -> str:
    """Every catalog model's status (tasks/ops/status.py) as the markdown of the status artifact."""
    from tasks.ops.servers import prefect_api_url
    from tasks.ops.status import collect, to_markdown

    settings = get_settings()
    engine = _engine()
    try:
        report = collect(settings, engine, None, as_of, now=now, api_url=prefect_api_url(settings))
    finally:
        engine.dispose()
    return to_markdown(report)
