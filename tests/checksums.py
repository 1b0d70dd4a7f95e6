"""Checksums of every warehouse table, for comparing the tables two runs left (testplan R5, R8, R9).

A run is compared with another by what it stored, not by how it got there: the tables and views
are reflected from the database itself, so a table the platform creates at run time (each
feature view's table, the feature store's registry) is compared without being listed here.
Rows are compared as a multiset (order-independent: a rerun may write them in another order, and
PostgreSQL returns them in any), and the row count is shown beside the digest, so a failing
comparison says at once whether rows were lost or duplicated.

Left out of every row: the columns in ``VOLATILE_COLUMNS`` (identities minted per run and
wall-clock times of the writes). Two runs on two separate databases also differ in the columns
of ``ACROSS_DATABASES`` (``table_checksums(engine, volatile=CROSS_DATABASE)``). Any other column
that differs is a finding.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from sqlalchemy import Connection, Engine, MetaData, Table, inspect, select

from tasks.db import normalise_value

VOLATILE_COLUMNS: dict[str, str] = {
    # Identities minted per run: another run that stores exactly the same rows has its own.
    "run_id": "validation runs (uuid4), scoring and monitoring runs (the Prefect flow run)",
    "last_run_id": "partition_status: the validation run that last judged the partition",
    "flow_run_id": "the Prefect flow run that wrote the row",
    "score_set_id": "derived from the scoring flow run's id (tasks/scoring/publish.py)",
    # Wall-clock times of the writes: the flows read the clock (the tasks below them never do).
    "created_ts": "when a feature row, a build, a score set or a ledger entry was written",
    "updated_ts": "when a partition verdict or a champion row was written",
    "finished_ts": "when a validation run finished",
    "registered_ts": "when a feature view version was first registered",
    "published_ts": "when a score set was published",
    "recorded_at": "when a monitoring statistic was recorded",
    # Sequence-assigned surrogate keys: PostgreSQL never hands a number back, so a transaction
    # rolled back by a killed worker shifts every later id; the rows are compared by the rest.
    "id": "quarantine, alias_ledger, monitoring_checks: sequence-assigned",
    "ledger_id": "model_champions: the alias_ledger id of the move",
}

ACROSS_DATABASES: dict[str, str] = {
    # Derived from per-run identities, so equal between two runs on one database but not between
    # two databases that each validated and trained once.
    "data_version": "fs_materializations: a hash of the validation run ids behind a partition's window",
    "model_sha256": "alias_ledger: every file of the logged artifact, whose MLmodel names its MLflow "
    "run and creation time (the gate report's checksum, report_sha256, is still compared)",
}

SAME_DATABASE = frozenset(VOLATILE_COLUMNS)
CROSS_DATABASE = frozenset(VOLATILE_COLUMNS) | frozenset(ACROSS_DATABASES)


def _rows(conn: Connection, name: str, volatile: frozenset[str]) -> Counter[bytes]:
    table = Table(name, MetaData(), autoload_with=conn)
    columns = [c for c in table.columns if c.name not in volatile]
    return Counter(
        hashlib.sha256("\x1f".join(normalise_value(v) for v in row).encode()).digest()
        for row in conn.execute(select(*columns))
    )


def table_rows(engine: Engine, name: str, *, volatile: frozenset[str] = SAME_DATABASE) -> Counter[bytes]:
    """The multiset of a table's (or view's) rows, each the digest of its non-volatile columns."""
    with engine.connect() as conn:
        return _rows(conn, name, volatile)


def table_checksums(engine: Engine, *, volatile: frozenset[str] = SAME_DATABASE) -> dict[str, str]:
    """``{table or view: "<rows> rows <digest>"}`` over every table and view of the warehouse.

    The digest is SHA-256 over the sorted digests of the rows; a row's digest covers its columns
    but ``volatile``, in declaration order: equal multisets of rows give equal digests.
    """
    inspector = inspect(engine)
    names = sorted(set(inspector.get_table_names()) | set(inspector.get_view_names()))
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for name in names:
            rows = _rows(conn, name, volatile)
            digest = hashlib.sha256(b"".join(sorted(rows.elements()))).hexdigest()[:16]
            out[name] = f"{rows.total()} rows {digest}"
    return out


def differences(left: dict[str, str], right: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """The tables whose checksums differ (or that only one side has): name -> (left, right)."""
    return {
        name: (left.get(name), right.get(name))
        for name in sorted(set(left) | set(right))
        if left.get(name) != right.get(name)
    }
