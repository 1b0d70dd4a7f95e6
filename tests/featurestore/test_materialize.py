"""Materialisation: idempotent partitions, source gates, late data, versions, kills (F3, R1, R3, R6, D6)."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import OperationalError

from tasks import landing
from tasks.db import table_checksum, write_tx
from tasks.featurestore import (
    PartitionNotReady,
    backfill,
    feature_table,
    freshness,
    get_historical_features,
    get_online_features,
    materialize_incremental,
    materialize_partition,
    stale_partitions,
)
from tasks.featurestore import materialize as mat
from tasks.featurestore.registry import fs_materializations, fs_registry
from tasks.featurestore.views import user_category_mix, user_gifts
from tasks.ingest import ingest_table
from tasks.schema import RAW_TABLES
from tests.data.quality_frames import MAX_TS, good_frame
from tests.featurestore.helpers import DAY, days, epoch, gift, gift_view, load, set_status

DAYS = days(DAY, 6)
CREATED = epoch(DAY, 24 * 30)


def _gifts(engine: Engine, dates: list[dt.date] = DAYS, prefix: str = "") -> None:
    with write_tx(engine) as conn:
        load(
            conn,
            "raw_gifts",
            [gift(u, epoch(d, 10), 1.0 + i) for i, d in enumerate(dates) for u in ("u1", "u2")],
            prefix=prefix,
        )
        set_status(conn, "raw_gifts", dates)


def _state(engine: Engine, view_name: str = "test_gifts", lookback: int = 2) -> tuple[str, int]:
    table = feature_table(gift_view(view_name, lookback=lookback))
    with engine.connect() as conn:
        return table_checksum(conn, table), conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_rerunning_a_partition_replaces_it(engine: Engine) -> None:
    view = gift_view(lookback=2)
    _gifts(engine)
    backfill(engine, view, DAYS[0], DAYS[-1], created_ts=CREATED)
    first = _state(engine)
    assert first[1] == 12
    backfill(engine, view, DAYS[0], DAYS[-1], created_ts=CREATED)
    assert _state(engine) == first
    assert materialize_partition(engine, view, DAYS[2], created_ts=CREATED + 1) == 2
    assert _state(engine)[1] == 12  # a later build of the same partition replaces, never adds
    with engine.connect() as conn:
        builds = conn.execute(select(func.count()).select_from(fs_materializations)).scalar_one()
    assert builds == 6


def test_rejected_or_unvalidated_sources_stop_the_build(engine: Engine) -> None:
    view = gift_view(lookback=3)
    _gifts(engine)
    with write_tx(engine) as conn:
        set_status(conn, "raw_gifts", [DAYS[1]], status="rejected", run_id="run-bad")
    with pytest.raises(PartitionNotReady, match=r"test_gifts.*raw_gifts partition 2026-01-11 is rejected"):
        materialize_partition(engine, view, DAYS[3], created_ts=CREATED)
    assert materialize_partition(engine, view, DAYS[4], created_ts=CREATED) == 2  # window 12-14 is clean
    with pytest.raises(PartitionNotReady, match=r"test_gifts.*raw_gifts partition 2026-02-01 is missing"):
        materialize_partition(engine, view, dt.date(2026, 2, 1), created_ts=CREATED)
    with pytest.raises(PartitionNotReady, match="rejected"):
        backfill(engine, view, DAYS[0], DAYS[-1], created_ts=CREATED)
    table = feature_table(view)
    with engine.connect() as conn:
        built = {r[0] for r in conn.execute(select(table.c.partition_date).distinct())}
    assert built == {DAYS[0], DAYS[4]}  # the backfill stopped at the rejected window, nothing half-built


def test_late_rows_rebuild_exactly_the_affected_partitions(engine: Engine) -> None:
    view = gift_view(lookback=2)
    _gifts(engine)
    assert materialize_incremental(engine, view, created_ts=CREATED) == DAYS
    assert materialize_incremental(engine, view, created_ts=CREATED) == []
    # Late rows land in day 3 and its validation reruns: days 3 and 4 (whose window holds it) change.
    with write_tx(engine) as conn:
        load(conn, "raw_gifts", [gift("u1", epoch(DAYS[2], 23), 100.0)], prefix="late-")
        set_status(conn, "raw_gifts", [DAYS[2]], run_id="run-2")
    assert stale_partitions(engine, view) == [DAYS[2], DAYS[3]]
    assert materialize_incremental(engine, view, created_ts=CREATED + 1) == [DAYS[2], DAYS[3]]
    assert materialize_incremental(engine, view, created_ts=CREATED + 2) == []
    table = feature_table(view)
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.partition_date, table.c.gifts_sum, table.c.created_ts).where(
                table.c.user_key == "u1"
            )
        ).all()
    versions: dict[dt.date, list[tuple[float, int]]] = {}
    for r in rows:
        versions.setdefault(r.partition_date, []).append((r.gifts_sum, r.created_ts))
    # D6: the first build is known at its feature_ts (the day's end); the rebuild adds a version
    # known from its created_ts and keeps the one known before.
    assert sorted(versions[DAYS[2]]) == [(2.0 + 3.0, epoch(DAYS[3])), (2.0 + 3.0 + 100.0, CREATED + 1)]
    assert sorted(versions[DAYS[3]]) == [(3.0 + 4.0, epoch(DAYS[4])), (3.0 + 4.0 + 100.0, CREATED + 1)]
    assert versions[DAYS[4]] == [(4.0 + 5.0, epoch(DAYS[5]))]  # untouched
    # A new validated day is picked up on its own.
    _gifts(engine, [DAYS[-1] + dt.timedelta(days=1)], prefix="new-")
    assert materialize_incremental(engine, view, created_ts=CREATED + 3) == [DAYS[-1] + dt.timedelta(days=1)]


def _land_and_ingest(engine: Engine, root: Path, frame: pd.DataFrame) -> None:
    """A delivery of raw_gifts through the landing zone and the ingest-validate gate."""
    landing.write_batch(root, "raw_gifts", frame.drop(columns=["event_date"], errors="ignore"))
    results = ingest_table(engine, root, "raw_gifts", max_ts=MAX_TS)
    assert results and all(r.accepted for r in results), [r.message for r in results]


def _partition_checksum(engine: Engine, view, day: dt.date | None = None) -> str:  # type: ignore[no-untyped-def]
    table = feature_table(view)
    with engine.connect() as conn:
        return table_checksum(conn, table, None if day is None else table.c.partition_date == day)


def test_d6_late_rows_never_reach_a_training_row_before_their_arrival(engine: Engine, tmp_path: Path) -> None:
    """D6: late, out-of-order rows landed after the features were built.

    The affected partitions (the late rows' days and the days whose 28-day window holds them)
    are rebuilt, and rebuilt again idempotently: the same checksums, the earlier day untouched.
    A training row (the point-in-time join build_training_set runs) whose time precedes the
    late rows' arrival gets exactly what scoring served at that time, without them; one after
    their arrival includes them, and equals what scoring serves then.
    """
    view, four = user_gifts, days(DAY, 4)
    on_time = good_frame("raw_gifts", n=80, day=four[0], days=4)
    _land_and_ingest(engine, tmp_path, on_time)
    built_at = epoch(four[-1], 25)  # the daily build, an hour after the last day ended
    assert materialize_incremental(engine, view, created_ts=built_at) == four
    first_day = _partition_checksum(engine, view, four[0])

    keys = pd.DataFrame({"user_key": sorted({*on_time["user_key"], "late-only"})})
    refs = [f"user_gifts:{f.name}" for f in view.features]
    before = epoch(four[-1], 26)  # after the build, before the late rows arrive
    served_before = get_online_features(engine, keys, refs, before)

    # Late rows: a new user and an existing one, out of order (day 3 before day 2).
    late = on_time.iloc[:3].copy()
    late["event_id"] = ["late-1", "late-2", "late-3"]
    late["event_ts"] = [epoch(four[2], 9), epoch(four[1], 22), epoch(four[1], 3)]
    late["user_key"] = ["late-only", str(on_time.at[5, "user_key"]), "late-only"]
    late["amount"] = [70.0, 50.0, 30.0]
    _land_and_ingest(engine, tmp_path, late)
    arrived = epoch(four[-1], 30)  # the rebuild that reads them
    assert stale_partitions(engine, view) == four[1:]
    assert materialize_incremental(engine, view, created_ts=arrived) == four[1:]
    rebuilt = _partition_checksum(engine, view)
    assert _partition_checksum(engine, view, four[0]) == first_day  # its window holds no late row

    # Idempotent: nothing is stale any more, and a full rebuild over the same data changes nothing.
    assert materialize_incremental(engine, view, created_ts=arrived + 3600) == []
    backfill(engine, view, four[0], four[-1], created_ts=arrived + 7200)
    assert _partition_checksum(engine, view) == rebuilt

    # What each training row sees: expected values from the delivered rows, not from the store.
    with engine.connect() as conn:
        raw = pd.read_sql(select(RAW_TABLES["raw_gifts"]), conn)
    assert len(raw) == len(on_time) + len(late)
    after = arrived + 3600
    for moment, delivered in ((before, on_time), (after, pd.concat([on_time, late]))):
        training = get_historical_features(engine, keys.assign(event_ts=moment), refs)
        sums = delivered.groupby("user_key")["amount"].sum()
        counts = delivered.groupby("user_key").size()
        expected_sum = [sums.get(k) for k in keys["user_key"]]
        expected_count = [counts.get(k) for k in keys["user_key"]]
        got_sum = [None if pd.isna(v) else v for v in training["user_gifts__gifts_sum_28d"]]
        got_count = [None if pd.isna(v) else v for v in training["user_gifts__gifts_count_28d"]]
        assert got_sum == pytest.approx(expected_sum) and got_count == expected_count, moment
        served = served_before if moment == before else get_online_features(engine, keys, refs, after)
        pd.testing.assert_frame_equal(training.drop(columns="event_ts"), served)
    assert served_before.set_index("user_key").loc["late-only"].isna().all()


def test_a_changed_definition_gets_a_new_version_and_table(engine: Engine) -> None:
    old, new = gift_view(lookback=2), gift_view(lookback=2, sql_extra="AND amount >= 2 ")
    assert old.version != new.version and old.table_name != new.table_name
    relabelled = gift_view(lookback=2)
    assert relabelled.version == old.version
    _gifts(engine)
    backfill(engine, old, DAYS[0], DAYS[1], created_ts=CREATED)
    before = _state(engine)
    assert materialize_incremental(engine, new, created_ts=CREATED, end=DAYS[1]) == DAYS[:2]
    assert _state(engine) == before  # the old version's rows are untouched
    with engine.connect() as conn:
        versions = conn.execute(select(fs_registry.c.version, fs_registry.c.feature_table)).all()
        new_rows = conn.execute(select(func.count()).select_from(feature_table(new))).scalar_one()
    assert {v.version for v in versions} == {old.version, new.version}
    assert new_rows == 2  # day 2's gifts (2.0) for u1 and u2; day 1's are filtered out
    report = {r["version"]: r for r in freshness(engine)}
    assert report[old.version]["partitions_built"] == 2 and report[old.version]["rows"] == 4
    assert report[new.version]["latest_feature_ts"] == epoch(DAYS[2])


def test_overlapping_backfills_with_a_kill_equal_one_clean_build(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = gift_view(lookback=2)
    _gifts(engine)
    backfill(engine, view, DAYS[0], DAYS[3], created_ts=CREATED)
    real_record = mat._record_build

    def killed_on_day_5(conn, v, partition, *args):  # type: ignore[no-untyped-def]
        real_record(conn, v, partition, *args)
        if partition == DAYS[4]:
            raise KeyboardInterrupt("killed after the insert, before commit")

    monkeypatch.setattr(mat, "_record_build", killed_on_day_5)
    with pytest.raises(KeyboardInterrupt):
        backfill(engine, view, DAYS[2], DAYS[5], created_ts=CREATED)
    table = feature_table(view)
    with engine.connect() as conn:
        done = {r[0] for r in conn.execute(select(table.c.partition_date).distinct())}
    assert done == set(DAYS[:4])  # day 5 rolled back whole, no half partition
    monkeypatch.setattr(mat, "_record_build", real_record)
    backfill(engine, view, DAYS[2], DAYS[5], created_ts=CREATED)
    after_kill = _state(engine)

    with write_tx(engine) as conn:
        conn.execute(delete(table))
        conn.execute(delete(fs_materializations))
    backfill(engine, view, DAYS[0], DAYS[5], created_ts=CREATED)
    assert _state(engine) == after_kill
    assert after_kill[1] == 12


def test_transient_write_errors_are_retried_without_duplicates(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = gift_view(lookback=2)
    _gifts(engine)
    backfill(engine, view, DAYS[0], DAYS[2], created_ts=CREATED)
    clean = _state(engine)
    real_build, failures = mat._build_sql, [2]

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        rows = real_build(*args, **kwargs)
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return rows

    monkeypatch.setattr(mat, "_build_sql", flaky)
    for attempt in range(3):  # what the Prefect task's retries do
        try:
            materialize_partition(engine, view, DAYS[1], created_ts=CREATED)
            break
        except OperationalError:
            assert attempt < 2
    assert failures == [0]
    assert _state(engine) == clean


def test_pandas_views_build_the_same_rows_in_any_chunking(engine: Engine) -> None:
    sessions = [
        {
            "event_ts": epoch(d, 5 + i),
            "user_key": f"u{i}",
            "stream_id": "st",
            "streamer_id": "s",
            "category": cat,
            "region": "eu",
            "device": "ios",
            "end_ts": epoch(d, 6 + i),
            "duration_s": 60 * (i + 1),
        }
        for d in DAYS[:3]
        for i, cat in enumerate(("gaming", "music", "gaming", "travel", "other"))
    ]
    with write_tx(engine) as conn:
        load(conn, "raw_watch_sessions", sessions)
        set_status(conn, "raw_watch_sessions", DAYS[:3])
    table = feature_table(user_category_mix)
    checksums = []
    for chunk in (1, 2, 1000):
        backfill(engine, user_category_mix, DAYS[0], DAYS[2], created_ts=CREATED, chunk_entities=chunk)
        with engine.connect() as conn:
            checksums.append(table_checksum(conn, table))
            count = conn.execute(select(func.count()).select_from(table)).scalar_one()
            other = (
                conn.execute(select(table.c.gaming_share_28d).where(table.c.user_key == "u4")).scalars().all()
            )
        assert count == 15
        assert other == [0.0, 0.0, 0.0]  # an uncatalogued category counts in the total only
    assert len(set(checksums)) == 1


KILL_SCRIPT = """
import os, signal, sys
from tasks.db import make_engine
from tasks.featurestore import backfill
from tasks.featurestore import materialize as mat
from tests.featurestore.helpers import DAY, days, gift_view

real = mat._record_build

def record_then_die(conn, view, partition, *args):
    real(conn, view, partition, *args)
    if partition == days(DAY, 6)[4]:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction: no rollback hook runs

mat._record_build = record_then_die
engine = make_engine(sys.argv[1])
backfill(engine, gift_view(lookback=2), days(DAY, 6)[2], days(DAY, 6)[5], created_ts=int(sys.argv[2]))
"""


def test_sigkill_mid_write_then_rerun_equals_a_clean_build(engine: Engine, db_url: str) -> None:
    view = gift_view(lookback=2)
    _gifts(engine)
    backfill(engine, view, DAYS[0], DAYS[3], created_ts=CREATED)
    root = Path(__file__).resolve().parents[2]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, db_url, str(CREATED)], cwd=root, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    backfill(engine, view, DAYS[2], DAYS[5], created_ts=CREATED)
    after_kill = _state(engine)
    table = feature_table(view)
    with write_tx(engine) as conn:
        conn.execute(delete(table))
        conn.execute(delete(fs_materializations))
    backfill(engine, view, DAYS[0], DAYS[5], created_ts=CREATED)
    assert _state(engine) == after_kill == (after_kill[0], 12)


def test_concurrent_builds_of_one_partition_neither_fail_nor_duplicate(engine: Engine) -> None:
    view = gift_view(lookback=2)
    _gifts(engine)
    with ThreadPoolExecutor(4) as pool:
        built = list(
            pool.map(lambda d: materialize_partition(engine, view, d, created_ts=CREATED), [DAYS[1]] * 4)
        )
    assert built == [2, 2, 2, 2]
    assert _state(engine)[1] == 2
