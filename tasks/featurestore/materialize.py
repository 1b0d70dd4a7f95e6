"""Materialisation: build a view's feature rows per event-date partition, idempotently, in the database.

**When a row is known: ``created_ts``.** Every feature row carries the time from which it is
known, and retrieval (training and scoring alike, tasks/featurestore/retrieval.py) gives an
entity row at time t only rows with ``created_ts <= t``:

* a partition's first build writes ``created_ts = feature_ts``: whatever had been loaded when a
  partition is first built counts as on time, so a backfill of history is known when it
  happened (a row's window ends at its ``feature_ts``, so it holds nothing from later);
* source rows loaded after a partition was built are *late* (``liveyield import`` of an old
  day, a second delivery of a partition): they give a new validation run, hence a new data
  version, and the rebuild *adds* a version of the partition known from its ``created_ts``
  (never before the partition's day is over, and after any earlier version). The rows built
  before stay, as what was known until then. So late rows never reach a training row whose
  time precedes the rebuild that read them (the rebuild comes after their arrival), and a
  training row at time t holds what scoring at t read;
* a rebuild over unchanged source data (a rerun, ``--full``, a retry after a crash) replaces
  the partition's latest version in place with the same ``created_ts``: reruns are idempotent.

``fs_materializations`` records each partition's latest build: its data version and the
wall-clock ``created_ts`` of that build.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable

import pandas as pd
from sqlalchemy import Connection, Date, Engine, Table, and_, bindparam, delete, func, select, text, union

from tasks.db import advisory_xact_lock, insert_frame, write_tx
from tasks.featurestore.definitions import BuildWindow, FeatureView
from tasks.featurestore.registry import fs_materializations, register_view
from tasks.schema import partition_status
from tasks.warehouse import raw_table

CHUNK_ENTITIES = 50_000  # entity keys per pandas chunk: bounds memory on large windows

StatusRows = dict[tuple[str, dt.date], tuple[str, str]]


class PartitionNotReady(RuntimeError):
    """A source partition of a build is rejected, or the primary partition is not validated."""


def _load_statuses(conn: Connection, view: FeatureView, first: dt.date, last: dt.date) -> StatusRows:
    ps = partition_status
    query = select(ps.c.table_name, ps.c.partition_date, ps.c.status, ps.c.last_run_id).where(
        and_(ps.c.table_name.in_(view.sources), ps.c.partition_date.between(first, last))
    )
    return {(r.table_name, r.partition_date): (r.status, r.last_run_id) for r in conn.execute(query)}


def _window_dates(view: FeatureView, partition: dt.date) -> list[dt.date]:
    return [partition - dt.timedelta(days=i) for i in range(view.lookback_days - 1, -1, -1)]


def data_version_of(statuses: StatusRows, view: FeatureView, partition: dt.date) -> str:
    """Hash of the validation runs behind every source partition in the window of a build."""
    digest = hashlib.sha256()
    for table in sorted(view.sources):
        for day in _window_dates(view, partition):
            status, run_id = statuses.get((table, day), ("-", "-"))
            digest.update(f"{table}|{day.isoformat()}|{status}|{run_id}\n".encode())
    return digest.hexdigest()


def check_sources(statuses: StatusRows, view: FeatureView, partition: dt.date) -> None:
    """Refuse a build whose window holds a rejected partition or whose primary day is not validated."""
    for table in view.sources:
        for day in _window_dates(view, partition):
            if statuses.get((table, day), ("", ""))[0] == "rejected":
                raise PartitionNotReady(
                    f"feature view {view.name}: cannot build partition {partition}: "
                    f"source table {table} partition {day} is rejected"
                )
    status = statuses.get((view.primary_source, partition), ("missing", ""))[0]
    if status != "validated":
        raise PartitionNotReady(
            f"feature view {view.name}: cannot build partition {partition}: "
            f"primary source table {view.primary_source} partition {partition} is {status}, not validated"
        )


def _lock(conn: Connection, *names: str) -> None:
    """Serialise writers of the same thing until commit (SQLite's BEGIN IMMEDIATE already does);
    the wait is bounded by the lock timeout and a timeout names what was waited on."""
    what = (
        "the feature-store registration lock"
        if names == ("fs-register",)
        else f"the build lock of {' '.join(names)}"
    )
    advisory_xact_lock(conn, what, *names)


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _build_sql(
    conn: Connection, view: FeatureView, table: Table, window: BuildWindow, known_from: int | None
) -> int:
    """Insert the partition's rows known from ``known_from`` (None: each from its feature_ts)."""
    assert view.sql is not None
    names = [view.key, "feature_ts", *(f.name for f in view.features)]
    target = ", ".join(_quote(conn, n) for n in [*names, "created_ts", "partition_date"])
    picked = ", ".join(f"src.{_quote(conn, n)}" for n in names)
    known = (
        "CAST(:created_ts AS BIGINT)"
        if known_from is not None
        else f"CAST(src.{_quote(conn, 'feature_ts')} AS BIGINT)"
    )
    statement = text(
        f"INSERT INTO {_quote(conn, table.name)} ({target}) "
        f"SELECT {picked}, {known}, :partition_date FROM ({view.sql}) src"
    )
    # Dates need their SQL type so SQLite gets the same ISO text the raw tables hold.
    dates = ["partition_date"] + (["first_date"] if re.search(r":first_date\b", view.sql) else [])
    statement = statement.bindparams(*(bindparam(name, type_=Date) for name in dates))
    params = window.params() if known_from is None else {**window.params(), "created_ts": known_from}
    result = conn.execute(statement, params)
    return max(result.rowcount, 0)


def _key_chunks(conn: Connection, view: FeatureView, window: BuildWindow, size: int) -> list[tuple[str, str]]:
    """Key ranges of at most `size` entities, in the database's own collation order."""
    keys = union(
        *(
            select(t.c[view.key].label("k")).where(
                t.c.event_date.between(window.first_date, window.partition)
            )
            for t in (raw_table(s) for s in view.sources)
        )
    ).subquery()
    # DISTINCT here too: a one-source union renders as a plain select, duplicates and all.
    distinct_keys = select(keys.c.k).where(keys.c.k.is_not(None)).distinct().order_by(keys.c.k)
    ordered = [r[0] for r in conn.execute(distinct_keys)]
    return [(ordered[i], ordered[min(i + size, len(ordered)) - 1]) for i in range(0, len(ordered), size)]


def _build_pandas(
    conn: Connection,
    view: FeatureView,
    table: Table,
    window: BuildWindow,
    known_from: int | None,
    chunk: int,
) -> int:
    assert view.transform is not None
    columns = [view.key, *(f.name for f in view.features)]
    written = 0
    for low, high in _key_chunks(conn, view, window, chunk):
        frames = {}
        for source in view.sources:
            t = raw_table(source)
            query = select(t).where(
                and_(
                    t.c.event_date.between(window.first_date, window.partition),
                    t.c[view.key].between(low, high),
                )
            )
            result = conn.execute(query)
            frames[source] = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        out = view.transform(frames, window)
        missing = set(columns) - set(out.columns)
        if missing:
            raise ValueError(f"feature view {view.name}: transform returned no {sorted(missing)}")
        out = out[[*columns, *(["feature_ts"] if "feature_ts" in out.columns else [])]].copy()
        if "feature_ts" not in out.columns:
            out["feature_ts"] = window.part_end
        out["created_ts"] = out["feature_ts"] if known_from is None else known_from
        out["partition_date"] = window.partition
        written += insert_frame(conn, table, out, ignore_existing=False)
    return written


def _record_build(
    conn: Connection, view: FeatureView, partition: dt.date, rows: int, data_version: str, created_ts: int
) -> None:
    m = fs_materializations
    conn.execute(
        delete(m).where(
            and_(m.c.view == view.name, m.c.version == view.version, m.c.partition_date == partition)
        )
    )
    conn.execute(
        m.insert().values(
            view=view.name,
            version=view.version,
            partition_date=partition,
            rows=rows,
            data_version=data_version,
            created_ts=created_ts,
        )
    )


def materialize_partition(
    engine: Engine,
    view: FeatureView,
    partition: dt.date,
    *,
    created_ts: int,
    chunk_entities: int = CHUNK_ENTITIES,
) -> int:
    """Build one partition of a view in one transaction (its old rows replaced); returns rows written."""
    window = BuildWindow.of(partition, view.lookback_days)
    with write_tx(engine) as conn:
        _lock(conn, "fs-register")  # concurrent first builds must not race on CREATE TABLE
        table = register_view(conn, view, registered_ts=created_ts)
    with write_tx(engine) as conn:
        _lock(conn, view.table_name, partition.isoformat())
        statuses = _load_statuses(conn, view, window.first_date, partition)
        check_sources(statuses, view, partition)
        data_version = data_version_of(statuses, view, partition)
        # Delete + insert in one transaction: a rerun or a crash never leaves duplicates or gaps.
        known_from = _make_room(conn, view, table, window, data_version, created_ts)
        if view.sql is not None:
            rows = _build_sql(conn, view, table, window, known_from)
        else:
            rows = _build_pandas(conn, view, table, window, known_from, chunk_entities)
        _record_build(conn, view, partition, rows, data_version, created_ts)
    return rows


def _make_room(
    conn: Connection, view: FeatureView, table: Table, window: BuildWindow, data_version: str, created_ts: int
) -> int | None:
    """Delete the rows this build replaces; returns when its rows are known (None: at their feature_ts).

    See the module docstring: a build over changed source data (late rows) keeps the earlier
    versions and is known from ``created_ts``; any other build replaces the latest version.
    """
    m = fs_materializations
    built = conn.execute(
        select(m.c.data_version).where(
            and_(m.c.view == view.name, m.c.version == view.version, m.c.partition_date == window.partition)
        )
    ).scalar_one_or_none()
    in_partition = table.c.partition_date == window.partition
    # Rows of a first build are known at their feature_ts; a later version's rows after it.
    latest = conn.execute(
        select(func.max(table.c.created_ts)).where(
            and_(in_partition, table.c.created_ts > table.c.feature_ts)
        )
    ).scalar_one_or_none()
    if built is not None and built != data_version:
        floor = max(window.part_end, int(latest) if latest is not None else 0) + 1
        return max(created_ts, floor)
    if latest is not None:
        conn.execute(delete(table).where(and_(in_partition, table.c.created_ts == latest)))
        return int(latest)
    conn.execute(delete(table).where(in_partition))
    return None


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from start to end, both included."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def backfill(
    engine: Engine,
    view: FeatureView,
    start: dt.date,
    end: dt.date,
    *,
    created_ts: int,
    chunk_entities: int = CHUNK_ENTITIES,
) -> list[dt.date]:
    """Rebuild every partition in [start, end], one transaction each; returns the partitions built."""
    built = []
    for day in days_between(start, end):
        materialize_partition(engine, view, day, created_ts=created_ts, chunk_entities=chunk_entities)
        built.append(day)
    return built


def stale_partitions(
    engine: Engine, view: FeatureView, start: dt.date | None = None, end: dt.date | None = None
) -> list[dt.date]:
    """Validated primary partitions (in range) never built for this version or built from older data."""
    ps, m = partition_status, fs_materializations
    with engine.connect() as conn:
        query = select(ps.c.partition_date).where(
            and_(ps.c.table_name == view.primary_source, ps.c.status == "validated")
        )
        if start is not None:
            query = query.where(ps.c.partition_date >= start)
        if end is not None:
            query = query.where(ps.c.partition_date <= end)
        candidates = sorted(r[0] for r in conn.execute(query))
        if not candidates:
            return []
        first = candidates[0] - dt.timedelta(days=view.lookback_days - 1)
        statuses = _load_statuses(conn, view, first, candidates[-1])
        built: dict[dt.date, str] = {}
        if conn.dialect.has_table(conn, m.name):
            rows = conn.execute(
                select(m.c.partition_date, m.c.data_version).where(
                    and_(m.c.view == view.name, m.c.version == view.version)
                )
            )
            built = {r.partition_date: r.data_version for r in rows}
    return [d for d in candidates if built.get(d) != data_version_of(statuses, view, d)]


def materialize_incremental(
    engine: Engine,
    view: FeatureView,
    *,
    created_ts: int,
    start: dt.date | None = None,
    end: dt.date | None = None,
    chunk_entities: int = CHUNK_ENTITIES,
) -> list[dt.date]:
    """Build only the partitions that are missing or whose source data changed; returns them."""
    todo = stale_partitions(engine, view, start, end)
    for day in todo:
        materialize_partition(engine, view, day, created_ts=created_ts, chunk_entities=chunk_entities)
    return todo


def materialize_views(
    engine: Engine, views: Iterable[FeatureView], *, created_ts: int, start: dt.date, end: dt.date
) -> dict[str, list[dt.date]]:
    """Incrementally materialise several views over a range; returns the partitions built per view."""
    return {
        v.name: materialize_incremental(engine, v, created_ts=created_ts, start=start, end=end) for v in views
    }
