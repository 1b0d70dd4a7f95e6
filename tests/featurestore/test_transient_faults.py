"""Real transient faults during a feature write, retried by the Prefect task itself (testplan R1).

Unlike the unit test in test_materialize.py, nothing here raises a made-up error: on PostgreSQL
the writing connection's server process is killed (``pg_terminate_backend``) in the middle of
the partition's transaction, twice; on SQLite another process holds the write lock a little
longer than the busy timeout. The ``materialize-view`` task's own retries must complete the
build, and the result must equal a clean build: same rows, same checksum, no duplicates.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, func, select, text

from tasks.db import make_engine, table_checksum, write_tx
from tasks.featurestore import backfill, feature_table
from tasks.featurestore import materialize as mat
from tasks.featurestore.views import get_view
from tasks.settings import Settings
from tasks.warehouse import upgrade_schema
from tests.featurestore.helpers import DAY, days, epoch, gift, load, set_status

DAYS = days(DAY, 4)
CREATED = epoch(DAY, 24 * 30)
VIEW = "user_gifts"


@pytest.fixture
def warehouse(settings: Settings) -> Iterator[Engine]:
    """The settings' warehouse, migrated, holding four validated days of gifts from three users."""
    engine = make_engine(settings.db_url)
    upgrade_schema(engine)
    with write_tx(engine) as conn:
        rows = [
            gift(u, epoch(d, 9 + i), 1.5 * (i + 1)) for d in DAYS for i, u in enumerate(("u1", "u2", "u3"))
        ]
        load(conn, "raw_gifts", rows)
        set_status(conn, "raw_gifts", DAYS)
    yield engine
    engine.dispose()


def _state(engine: Engine) -> tuple[str, int, int]:
    """(checksum, rows, rows beyond one per key and partition) of the view's table."""
    table = feature_table(get_view(VIEW))
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(table)).scalar_one()
        distinct = select(table.c.user_key, table.c.partition_date).distinct().subquery()
        keys = conn.execute(select(func.count()).select_from(distinct)).scalar_one()
        return table_checksum(conn, table), int(rows), int(rows - keys)


def _run_task() -> list[str]:
    from prefect import flow

    from tasks import steps

    @flow(name="materialize-under-faults")
    def build() -> list[str]:
        return steps.materialize_view(VIEW, CREATED, DAYS[0], DAYS[-1], full=True)

    return build()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("prefect_harness")
def test_a_killed_writer_connection_twice_is_retried_by_the_task_without_duplicates(
    settings: Settings, warehouse: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R1: the writing connection's backend is terminated twice mid-transaction; the task's retries
    finish the build and the table equals a clean build (checksum, row count, no duplicates)."""
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    real_record = mat._record_build
    killed: list[int] = []

    def record_after_a_kill(conn: Connection, *args: Any, **kwargs: Any) -> None:
        if len(killed) < 2:  # the partition's rows are written, its transaction still open
            pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            with admin.connect() as other:
                assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
            killed.append(pid)
        real_record(conn, *args, **kwargs)

    monkeypatch.setattr(mat, "_record_build", record_after_a_kill)
    started = time.monotonic()
    try:
        built = _run_task()
    finally:
        admin.dispose()
    elapsed = time.monotonic() - started
    print(f"built {len(built)} partitions in {elapsed:.1f} s after {len(killed)} killed connections")
    assert len(killed) == 2 and killed[0] != killed[1]
    assert built == [d.isoformat() for d in DAYS]
    faulted = _state(warehouse)
    assert faulted[2] == 0 and faulted[1] > 0

    monkeypatch.setattr(mat, "_record_build", real_record)
    assert backfill(warehouse, get_view(VIEW), DAYS[0], DAYS[-1], created_ts=CREATED) == DAYS
    assert _state(warehouse) == faulted  # a clean rebuild gives exactly the same table


_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("prefect_harness")
def test_a_write_lock_held_past_the_busy_timeout_is_retried_by_the_task_without_duplicates(
    settings: Settings, warehouse: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R1: another process holds SQLite's write lock past the busy timeout ("database is locked");
    the task's retry waits for it and the table equals a clean build."""
    busy_timeout_s = 60.0  # tasks.db.make_engine's PRAGMA busy_timeout
    database = warehouse.url.database
    assert database is not None
    real_partition, calls, holders = mat.materialize_partition, [], []

    def lock_before_the_second(engine: Engine, view: Any, partition: dt.date, **kwargs: Any) -> int:
        calls.append(partition)
        if len(calls) == 2:  # the first partition is committed; the next meets a held lock
            holder = subprocess.Popen(
                [sys.executable, "-c", _HOLD_LOCK, database, str(busy_timeout_s + 3)],
                stdout=subprocess.PIPE,
                text=True,
            )
            holders.append(holder)
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        return real_partition(engine, view, partition, **kwargs)

    monkeypatch.setattr(mat, "materialize_partition", lock_before_the_second)
    started = time.monotonic()
    try:
        built = _run_task()
    finally:
        for holder in holders:
            if holder.poll() is None:
                holder.kill()
            holder.wait()
    elapsed = time.monotonic() - started
    attempts = calls.count(DAYS[0])
    print(f"built {len(built)} partitions in {elapsed:.1f} s over {attempts} attempts")
    assert attempts == 2 and len(holders) == 1 and elapsed > busy_timeout_s
    assert built == [d.isoformat() for d in DAYS]
    faulted = _state(warehouse)
    assert faulted[2] == 0 and faulted[1] > 0

    monkeypatch.setattr(mat, "materialize_partition", real_partition)
    assert backfill(warehouse, get_view(VIEW), DAYS[0], DAYS[-1], created_ts=CREATED) == DAYS
    assert _state(warehouse) == faulted
