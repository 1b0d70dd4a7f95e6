"""The ingest-validate flow: landed raw batches → data-quality gate → warehouse.

Each raw table's pending batches are validated per event-date partition; good rows land in
the raw tables, bad rows in quarantine, and every batch leaves a validation run. The flow
fails, with a report naming table, partition, column and rule, when any batch is rejected;
the other partitions are loaded all the same.

One task per raw table. In-process (the default) they run one after another; with a Dask
cluster configured (``LIVEYIELD_DASK_WORKERS`` / ``LIVEYIELD_DASK_ADDRESS``, tasks/ops/cluster.py)
every table's task is submitted at once and runs on the workers, each with its own database
connection; the summary's ``workers`` says where they ran. A table's batches are idempotent (a
batch already recorded is skipped), so a task Dask reruns after a worker died loads nothing
twice.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.results import ImportResult, IngestSummary
from flows.schedule import latest_wins, name_day, run_as_of
from tasks import landing, steps
from tasks.dates import resolve_as_of
from tasks.ops import cluster
from tasks.quality.report import DataQualityError, summarise, summary_markdown
from tasks.settings import get_settings


def _run_name() -> str:
    """ingest-validate-<table or all>-<as-of date>, readable in the UI."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    day = name_day(params.get("as_of"))
    return f"ingest-validate-{params.get('table') or 'all'}-{day}"


@flow(
    name="ingest-validate",
    flow_run_name=_run_name,
    log_prints=True,
    task_runner=cluster.SettingsTaskRunner(),
)
@latest_wins
def ingest_validate(
    as_of: dt.datetime | None = None,
    table: str | None = None,
    partition: dt.date | None = None,
    fail_on_rejected: bool = True,
    max_bad_share: float | None = None,
) -> IngestSummary:
    """Validate and load every pending landed batch (optionally one table or partition).

    ``as_of`` (tasks/dates.py rule; default now) bounds which landed batches are taken;
    ``max_bad_share`` overrides the suites' limits for a source known to be dirty.
    """
    as_of = run_as_of(as_of)
    logger = get_run_logger()
    steps.prepare_warehouse()
    tables = sorted(landing.pending(get_settings().landing_dir, table, partition))
    logger.info("pending batches in %d tables: %s", len(tables), ", ".join(tables) or "none")
    common: dict[str, Any] = {
        "max_ts": int(as_of.timestamp()),
        "partition": partition,
        "max_bad_share": max_bad_share,
    }
    if cluster.on_cluster():
        common["warehouse"] = cluster.warehouse_id()
    outcomes = cluster.run_each(steps.ingest_table, [{"table": name, **common} for name in tables])
    results: list[dict[str, Any]] = [r for outcome in outcomes for r in outcome["partitions"]]
    shipped = [item for outcome in outcomes for item in outcome["gx_results"]]
    docs = steps.build_data_docs(shipped) if results else None
    summary = summarise(results, data_docs=docs)
    summary["workers"] = cluster.tally(outcome["worker"] for outcome in outcomes)
    create_markdown_artifact(
        key="data-quality-summary", markdown=summary_markdown(summary), description="Data-quality gate"
    )
    if summary["rejected"] and fail_on_rejected:
        raise DataQualityError(summary["report"])
    return IngestSummary.from_dict(summary)


@flow(name="import-file", flow_run_name="import-{table}", log_prints=True)
def import_file(table: str, file: Path, mapping: Path | None = None) -> ImportResult:
    """Land a CSV or Parquet file in a raw table (pseudonymised), then validate and load it.

    A rejected batch does not fail this flow: the result's ``quality`` names it.
    """
    from tasks.warehouse import raw_table

    raw_table(table)  # an unknown table fails before anything lands
    as_of = resolve_as_of(None)  # one 'now' for landing and the gate: later rows are quarantined
    landed = steps.land_file(table, file, mapping, int(as_of.timestamp()))
    quality = ingest_validate(
        as_of=as_of, table=table, fail_on_rejected=False, max_bad_share=landed["max_bad_share"]
    )
    return ImportResult(
        table=table, file_name=file.name, rows=landed["rows"], batches=landed["batches"], quality=quality
    )
