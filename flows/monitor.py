"""monitor-model: drift, freshness and realised performance of one model's champion at as_of.

The logic is tasks/monitoring/run.py; this flow runs it, records it (monitoring_checks) and shows
the table as a Prefect artifact. A model without a champion or reference is skipped, not failed.
Its last step, and score-model's, refreshes the platform's status table (tasks/ops/status.py) as
the ``liveyield-status`` artifact; the platform-status flow does only that.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.models import ModelName, _name
from flows.schedule import run_as_of
from tasks import steps
from tasks.monitoring.run import to_markdown

STATUS_KEY = "liveyield-status"


def publish_status(as_of: dt.datetime) -> str | None:
    """Refresh the ``liveyield-status`` artifact: every model's status at as_of (its markdown).

    A status that cannot be read is a warning, never a failure of the run it ends: the models were
    scored and monitored all the same."""
    try:
        markdown = steps.platform_status(as_of, int(dt.datetime.now(dt.UTC).timestamp()))
    except Exception as exc:
        get_run_logger().warning("status not refreshed: %s: %s", type(exc).__name__, exc)
        return None
    create_markdown_artifact(key=STATUS_KEY, markdown=markdown, description="liveyield status: every model")
    return markdown


def publish_artifact(summary: dict[str, Any]) -> None:
    """The run's table as the model's ``monitor-MODEL`` markdown artifact."""
    create_markdown_artifact(
        key=f"monitor-{summary['model'].replace('_', '-')}",
        markdown=to_markdown(summary),
        description=f"Monitoring of {summary['model']}: {summary['status']}",
    )


@flow(name="monitor-model", flow_run_name=_name("monitor"), log_prints=True)
def monitor_model(model: ModelName, as_of: dt.datetime | None = None) -> dict[str, Any]:
    """Compare what the champion would score at as_of with its training reference; record it all."""
    as_of = run_as_of(as_of)
    summary = steps.monitor_model(model, as_of, int(dt.datetime.now(dt.UTC).timestamp()))
    publish_artifact(summary)
    print(summary["summary"])
    publish_status(as_of)
    return summary


@flow(name="platform-status", log_prints=True)
def platform_status(as_of: dt.datetime | None = None) -> str | None:
    """Every model's health on one screen (`liveyield status`), as the liveyield-status artifact."""
    return publish_status(run_as_of(as_of))
