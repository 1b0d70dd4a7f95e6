"""Ingestion through the data-quality gate on SQLite and PostgreSQL (testplan D1–D7, R3, R7)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from tasks import landing
from tasks.db import table_checksum
from tasks.ingest import BATCH_REJECTED, ingest_table
from tasks.schema import RAW_TABLES, partition_status, quarantine, validation_runs
from tests.data.quality_frames import DAY, MAX_TS, good_frame

GIFTS = RAW_TABLES["raw_gifts"]


def _land(root: Path, table: str, frame: pd.DataFrame) -> list[Path]:
    return landing.write_batch(root, table, frame.drop(columns=["event_date"]))


def _count(engine: Engine, table, where=None) -> int:  # type: ignore[no-untyped-def]
    query = select(func.count()).select_from(table)
    if where is not None:
        query = query.where(where)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _statuses(engine: Engine, table: str) -> dict[dt.date, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(partition_status.c.partition_date, partition_status.c.status).where(
                partition_status.c.table_name == table
            )
        )
        return {r.partition_date: r.status for r in rows}


def test_good_batches_load_with_a_run_per_partition(engine: Engine, tmp_path: Path) -> None:
    _land(tmp_path, "raw_gifts", good_frame("raw_gifts", n=90, days=3))
    results = ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    assert [r.partition for r in results] == ["2026-01-05", "2026-01-06", "2026-01-07"]
    assert all(r.accepted and r.rows_loaded == 30 for r in results)
    assert _count(engine, GIFTS) == 90
    assert _count(engine, validation_runs) == 3
    assert set(_statuses(engine, "raw_gifts").values()) == {"validated"}
    assert landing.pending(tmp_path) == {}  # processed batches leave the landing zone


def test_replays_and_duplicate_ids_are_deduplicated(engine: Engine, tmp_path: Path) -> None:
    frame = good_frame("raw_gifts", n=40)
    _land(tmp_path, "raw_gifts", frame)
    ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    with engine.connect() as conn:
        clean = table_checksum(conn, GIFTS)
    # D4: the same batch replayed, then a batch holding each row twice.
    _land(tmp_path, "raw_gifts", frame)
    (replay,) = ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    assert replay.skipped
    doubled = pd.concat([frame, frame.iloc[:25]], ignore_index=True)
    _land(tmp_path, "raw_gifts", doubled)
    (result,) = ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    assert result.rows_duplicate == 25 and result.rows_loaded == 0 and result.accepted
    with engine.connect() as conn:
        assert table_checksum(conn, GIFTS) == clean
    assert _count(engine, GIFTS) == 40


@pytest.mark.parametrize(
    ("bad_rows", "accepted"),
    [(1, True), (15, False)],
    ids=["under-threshold", "over-threshold"],
)
def test_bad_rows_go_to_quarantine_and_threshold_decides(
    engine: Engine, tmp_path: Path, bad_rows: int, accepted: bool
) -> None:
    good = good_frame("raw_gifts", n=60, days=2)
    frame = good.copy()
    day1 = frame.index[frame["event_date"] == pd.Timestamp(DAY)][:bad_rows]
    frame.loc[day1, "amount"] = -5.0  # D5: a negative gift
    _land(tmp_path, "raw_gifts", frame)
    by_day = {r.partition: r for r in ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)}
    first, second = by_day["2026-01-05"], by_day["2026-01-06"]
    assert second.accepted and second.rows_loaded == 30  # the other partition is untouched
    assert first.accepted is accepted
    with engine.connect() as conn:
        rows = conn.execute(select(quarantine).where(quarantine.c.partition_date == DAY)).all()
    broken = [r for r in rows if r.rule != BATCH_REJECTED]
    assert len(broken) == bad_rows and {r.column_name for r in broken} == {"amount"}
    assert all(json.loads(r.payload)["amount"] == -5.0 for r in broken)
    if accepted:
        assert first.rows_loaded == 30 - bad_rows
        assert _statuses(engine, "raw_gifts")[DAY] == "validated"
    else:
        # Nothing of a rejected batch loads, and nothing is lost: every row is in quarantine.
        assert first.rows_loaded == 0 and len(rows) == 30
        assert _statuses(engine, "raw_gifts")[DAY] == "rejected"
        assert "amount" in first.message and "2026-01-05" in first.message


@pytest.mark.parametrize(("nulls", "accepted"), [(1, True), (30, False)], ids=["partly-null", "all-null"])
def test_null_keys_are_quarantined_or_reject_the_batch(
    engine: Engine, tmp_path: Path, nulls: int, accepted: bool
) -> None:
    """D2: a null user_key is a bad row; a whole column of them rejects the partition."""
    frame = good_frame("raw_gifts", n=30)
    frame["user_key"] = frame["user_key"].astype(object)
    frame.loc[: nulls - 1, "user_key"] = None
    _land(tmp_path, "raw_gifts", frame)
    (result,) = ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    assert result.accepted is accepted
    assert result.rows_loaded == (30 - nulls if accepted else 0)
    with engine.connect() as conn:
        rules = conn.execute(
            select(quarantine.c.rule, quarantine.c.column_name).where(quarantine.c.rule != BATCH_REJECTED)
        ).all()
    assert len(rules) == nulls and set(rules) == {("expect_column_values_to_not_be_null", "user_key")}


def test_empty_batch_is_rejected_never_a_vacuous_pass(engine: Engine, tmp_path: Path) -> None:
    columns = [c for c in good_frame("raw_gifts").columns if c != "event_date"]
    landing.write_empty(tmp_path, "raw_gifts", DAY, columns)
    (result,) = ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    assert not result.accepted and "row_count" in result.message
    assert _statuses(engine, "raw_gifts")[DAY] == "rejected"


def test_renamed_column_is_rejected_naming_it(engine: Engine, tmp_path: Path) -> None:
    frame = good_frame("raw_gifts", n=20).rename(columns={"amount": "amount_usd"})
    _land(tmp_path, "raw_gifts", frame)
    (result,) = ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    assert not result.accepted
    assert "amount" in result.message and "amount_usd" in result.message
    assert _count(engine, GIFTS) == 0 and _count(engine, quarantine) == 20


def test_unreadable_timestamps_are_quarantined_not_dropped(engine: Engine, tmp_path: Path) -> None:
    frame = good_frame("raw_gifts", n=10).drop(columns=["event_date"])
    frame["event_ts"] = frame["event_ts"].astype("Float64")
    frame.loc[:2, "event_ts"] = None
    landing.write_batch(tmp_path, "raw_gifts", frame)
    results = {r.partition: r for r in ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)}
    assert results[landing.UNKNOWN].rows_quarantined == 3
    assert results["2026-01-05"].rows_loaded == 7
    assert _count(engine, quarantine, quarantine.c.rule == "event_ts_readable") == 3


def test_late_rows_extend_a_built_partition(engine: Engine, tmp_path: Path) -> None:
    frame = good_frame("raw_gifts", n=40, days=2)
    _land(tmp_path, "raw_gifts", frame.iloc[:30])
    ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    with engine.connect() as conn:
        other = table_checksum(conn, GIFTS, GIFTS.c.event_date == DAY + dt.timedelta(days=1))
    late = frame.iloc[30:]
    late = late[late["event_date"] == pd.Timestamp(DAY)]
    _land(tmp_path, "raw_gifts", late)  # D6: late, out-of-order rows for the first day
    (result,) = ingest_table(engine, tmp_path, "raw_gifts", max_ts=MAX_TS)
    assert result.partition == "2026-01-05" and result.rows_loaded == len(late)
    assert _count(engine, GIFTS, GIFTS.c.event_date == DAY) == 20
    with engine.connect() as conn:
        assert table_checksum(conn, GIFTS, GIFTS.c.event_date == DAY + dt.timedelta(days=1)) == other
        runs = conn.execute(select(func.count()).where(validation_runs.c.partition_date == DAY)).scalar_one()
    assert runs == 2


_WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tasks.db import make_engine
    from tasks.ingest import ingest_table
    engine = make_engine(sys.argv[1])
    results = ingest_table(engine, Path(sys.argv[2]), "raw_gifts", max_ts=int(sys.argv[3]))
    print(sum(r.rows_loaded for r in results))
    """
)


def _worker(db_url: str, root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, db_url, str(root), str(MAX_TS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
    )


def test_two_ingests_of_the_same_batches_at_once(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """R7: racing processes load every row once, record each batch once, never 'database is locked'."""
    _land(tmp_path, "raw_gifts", good_frame("raw_gifts", n=3000, days=6))
    workers = [_worker(db_url, tmp_path) for _ in range(2)]
    outputs = [w.communicate(timeout=180) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "locked" not in err
    assert sum(int(out.strip().splitlines()[-1]) for out, _ in outputs) == 3000
    assert _count(engine, GIFTS) == 3000
    assert _count(engine, validation_runs) == 6


def test_sigkill_mid_ingest_then_rerun_equals_clean_run(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """R3: a killed ingest leaves whole batches or none; the rerun converges on a clean run."""
    frame = good_frame("raw_gifts", n=60_000, days=12)
    clean_root, killed_root = tmp_path / "clean", tmp_path / "killed"
    _land(killed_root, "raw_gifts", frame)
    worker = _worker(db_url, killed_root)
    deadline = time.monotonic() + 120
    while _count(engine, validation_runs) == 0 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.005)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert 0 < _count(engine, validation_runs) < 12, "the kill should land between two batches"
    ingest_table(engine, killed_root, "raw_gifts", max_ts=MAX_TS)
    with engine.connect() as conn:
        rerun = table_checksum(conn, GIFTS)
        (runs,) = conn.execute(select(func.count()).select_from(validation_runs)).one()
    assert runs == 12 and _count(engine, GIFTS) == 60_000

    from tasks.db import make_engine
    from tasks.warehouse import upgrade_schema

    clean_engine = make_engine(f"sqlite:///{tmp_path / 'clean.db'}")
    upgrade_schema(clean_engine)
    _land(clean_root, "raw_gifts", frame)
    ingest_table(clean_engine, clean_root, "raw_gifts", max_ts=MAX_TS)
    with clean_engine.connect() as conn:
        assert table_checksum(conn, GIFTS) == rerun
    clean_engine.dispose()
