"""The ingest-validate flow: landed raw batches → data-quality gate → warehouse.

Each raw table's pending batches are validated per event-date partition; good rows land in
the raw tables, bad rows in quarantine, and every batch leaves a validation run. The flow
fails, with a report naming table, partition, column and rule, when any batch is rejected;
the other partitions are loaded all the same.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks import landing, steps
from tasks.quality.report import DataQualityError, summarise, summary_markdown
from tasks.settings import get_settings


def _run_name() -> str:
    """ingest-validate-<table or all>-<as-of date>, readable in the UI."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    as_of = params.get("as_of") or dt.datetime.now(dt.UTC)
    return f"ingest-validate-{params.get('table') or 'all'}-{str(as_of)[:10]}"


@flow(name="ingest-validate", flow_run_name=_run_name, log_prints=True)
def ingest_validate(
    as_of: dt.datetime | None = None,
    table: str | None = None,
    partition: dt.date | None = None,
    fail_on_rejected: bool = True,
    max_bad_share: float | None = None,
) -> dict[str, Any]:
    """Validate and load every pending landed batch (optionally one table or partition).

    ``max_bad_share`` overrides the suites' limits for a source known to be dirty.
    """
    as_of = as_of or dt.datetime.now(dt.UTC)
    logger = get_run_logger()
    steps.prepare_warehouse()
    tables = sorted(landing.pending(get_settings().landing_dir, table, partition))
    logger.info("pending batches in %d tables: %s", len(tables), ", ".join(tables) or "none")
    results: list[dict[str, Any]] = []
    for name in tables:
        results += steps.ingest_table(name, int(as_of.timestamp()), partition, max_bad_share)
    docs = steps.build_data_docs() if results else None
    summary = summarise(results, data_docs=docs)
    create_markdown_artifact(
        key="data-quality-summary", markdown=summary_markdown(summary), description="Data-quality gate"
    )
    if summary["rejected"] and fail_on_rejected:
        raise DataQualityError(summary["report"])
    return summary
