"""The monitoring table: every statistic of every monitoring run, on SQLite and PostgreSQL.

One row per (model, version, as_of, check, feature, statistic) measurement with its threshold and
status. Rows are only ever added; ``latest_checks`` reads the newest row of each
(model, check, feature, statistic), newest meaning the latest ``as_of`` and, within it, the last
row written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sqlalchemy import Engine, func, insert, select

from tasks.db import write_tx
from tasks.monitoring.drift import STATUSES, DriftReport, DriftResult
from tasks.schema import monitoring_checks

CHECKS = (
    "feature_drift",
    "prediction_drift",
    "dataset_drift",
    "freshness",
    "realised_performance",
    "reference",
)


class BadCheckRow(ValueError):
    """A monitoring row that must not be stored (unknown check or status, a NaN value)."""


@dataclass(frozen=True)
class CheckRow:
    """One row of ``monitoring_checks``; ``id`` is set once stored."""

    model: str
    version: int | None
    as_of: int
    check: str
    feature: str | None
    statistic: str
    value: float | None
    threshold: float | None
    status: str
    detail: str
    run_id: str | None
    recorded_at: int
    id: int | None = None


def _validated(row: CheckRow) -> dict[str, object]:
    if row.check not in CHECKS:
        raise BadCheckRow(f"{row.model}: unknown check {row.check!r}; known: {', '.join(CHECKS)}")
    if row.status not in STATUSES:
        raise BadCheckRow(
            f"{row.model} {row.check}: unknown status {row.status!r}; known: {', '.join(STATUSES)}"
        )
    for name in ("value", "threshold"):
        number = getattr(row, name)
        if number is not None and not math.isfinite(number):
            raise BadCheckRow(
                f"{row.model} {row.check} {row.feature or ''} {row.statistic}: {name} is {number}; "
                "a statistic that cannot be computed is stored as no value with status 'error'"
            )
    values = asdict(row)
    values.pop("id")
    return values


def record_checks(engine: Engine, rows: Iterable[CheckRow]) -> int:
    """Store monitoring rows in one transaction (all or none); returns how many were stored."""
    values = [_validated(r) for r in rows]
    if not values:
        return 0
    with write_tx(engine) as conn:
        conn.execute(insert(monitoring_checks), values)
    return len(values)


def latest_checks(engine: Engine, model: str | None = None) -> list[CheckRow]:
    """The newest row of each (model, check, feature, statistic), of one model or of all."""
    mc = monitoring_checks
    newest = func.row_number().over(
        partition_by=(mc.c.model, mc.c.check, mc.c.feature, mc.c.statistic),
        order_by=(mc.c.as_of.desc(), mc.c.id.desc()),
    )
    ranked = select(*mc.c, newest.label("newest"))
    if model is not None:
        ranked = ranked.where(mc.c.model == model)
    sub = ranked.subquery()
    query = (
        select(*(sub.c[c.name] for c in mc.c))
        .where(sub.c.newest == 1)
        .order_by(sub.c.model, sub.c.check, sub.c.feature, sub.c.statistic)
    )
    with engine.connect() as conn:
        return [CheckRow(**row._asdict()) for row in conn.execute(query)]


def check_rows(
    report: DriftReport,
    *,
    model: str,
    version: int | None,
    as_of: int,
    check: str,
    recorded_at: int,
    run_id: str | None = None,
    summary_check: str | None = "dataset_drift",
) -> list[CheckRow]:
    """A drift report as monitoring rows: each statistic under ``check``, the verdict under
    ``summary_check`` (None: leave it out)."""

    def row(check_name: str, r: DriftResult) -> CheckRow:
        return CheckRow(
            model=model,
            version=version,
            as_of=as_of,
            check=check_name,
            feature=r.feature,
            statistic=r.statistic,
            value=r.value,
            threshold=r.threshold,
            status=r.status,
            detail=r.detail,
            run_id=run_id,
            recorded_at=recorded_at,
        )

    rows = [row(check, r) for r in report.results]
    if summary_check is not None:
        rows.append(row(summary_check, report.summary))
    return rows
