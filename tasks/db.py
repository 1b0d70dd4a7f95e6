"""Database access: engines tuned per backend, write transactions, bulk loads and checksums.

SQLite is the embedded default and PostgreSQL the production target; everything here works
on both. Bulk loads take each backend's fastest safe path (see shared measurements):
PostgreSQL gets COPY of pyarrow-encoded CSV chunks, SQLite one transaction of executemany.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Date, Engine, Table, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from tasks.settings import PG_TIMEOUT_VARS, PgTimeouts, pg_timeouts, redact_url

CHUNK_ROWS = 500_000  # rows per COPY chunk / executemany batch: bounds memory, keeps speed


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock wait cut by lock_timeout


class DatabaseUnavailable(RuntimeError):
    """The configured database cannot be reached."""


class LockTimeout(RuntimeError):
    """A lock was not granted within the lock timeout; the message names what was waited on."""


def make_engine(url: str, timeouts: PgTimeouts | None = None) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and explicit transaction control,
    PostgreSQL the connect, statement and lock timeouts (``timeouts``, else from the environment)."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is broken).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA synchronous=NORMAL")
            # 64 MiB of page cache (the default is 2 MiB), used only as needed: a bulk load's
            # random primary-key index pages stay cached across its commits instead of being
            # read back from the file and WAL for every batch (a third less CPU for 800k rows).
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock up front, so two writers queue on the busy
            # timeout instead of failing with "database is locked" on lock upgrade.
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return _postgres_engine(url, timeouts or pg_timeouts())


def _postgres_engine(url: str, timeouts: PgTimeouts) -> Engine:
    """A PostgreSQL engine whose sessions carry the connect, statement and lock timeouts.

    The bounds travel as libpq ``options`` (no extra round trip per connection); options already
    in the URL (a search_path, or a timeout of its own) come after ours and so win.
    """
    query = make_url(url).query
    given = query.get("options")
    given_text = " ".join(given) if isinstance(given, tuple) else (given or "")
    options = f"-c statement_timeout={timeouts.statement_ms} -c lock_timeout={timeouts.lock_ms} {given_text}"
    connect_args: dict[str, Any] = {"options": options.strip()}
    if "connect_timeout" not in query:
        connect_args["connect_timeout"] = timeouts.connect_s
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_conn: Any, record: Any) -> None:
        record.info["lock_timeout_ms"] = timeouts.lock_ms  # named by LockTimeout's message

    return engine


@contextmanager
def bounded_lock_wait(conn: Connection, what: str) -> Iterator[None]:
    """Turn PostgreSQL's lock timeout inside the block into a LockTimeout naming ``what``.

    The lock timeout itself is a session setting (make_engine); this only says what was waited
    on. The failed statement has aborted the transaction, so the caller's write_tx rolls back.
    """
    try:
        yield
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        bound = conn.info.get("lock_timeout_ms")
        after = f"after {bound} ms " if bound else ""
        raise LockTimeout(
            f"gave up {after}waiting for {what}: another transaction holds it "
            f"({PG_TIMEOUT_VARS['lock_ms']} sets the bound)"
        ) from exc


def advisory_xact_lock(conn: Connection, what: str, *names: str) -> None:
    """Serialise writers of the same thing until commit, waiting at most the lock timeout.

    PostgreSQL takes a transaction-level advisory lock keyed by ``names``; SQLite needs none
    (write_tx's BEGIN IMMEDIATE already serialises writers). ``what`` names it in a timeout.
    """
    if conn.dialect.name != "postgresql":
        return
    with bounded_lock_wait(conn, what):
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(*names)})


def advisory_key(*names: str) -> int:
    """The 64-bit advisory-lock key of a named thing (stable across processes)."""
    digest = hashlib.sha256("|".join(names).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any error."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def check_connection(engine: Engine) -> None:
    """Fail fast with a clear message when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # every driver raises its own kind
        raise DatabaseUnavailable(
            f"cannot reach the database {redact_url(engine.url)}: {str(exc).splitlines()[0]}"
        ) from exc


def _column_values(series: pd.Series) -> list[Any]:
    """Python values for a DB-API driver: None for missing, ints/floats/str/date as they are."""
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        return [None if v != v else v for v in values.tolist()]
    if pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans:
        return series.to_numpy(dtype="int64").tolist()
    return series.to_numpy(dtype=object, na_value=None).tolist()  # type: ignore[call-overload]


def _insert_sqlite(conn: Connection, table: Table, frame: pd.DataFrame, ignore: bool) -> int:
    columns = list(frame.columns)
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    sql = (
        f"{verb} INTO {_quote(conn, table.name)} ({', '.join(_quote(conn, c) for c in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    inserted = 0
    for start in range(0, len(frame), CHUNK_ROWS):
        chunk = frame.iloc[start : start + CHUNK_ROWS]
        rows = list(zip(*(_sqlite_values(chunk[c]) for c in columns), strict=True))
        result = conn.exec_driver_sql(sql, rows)  # type: ignore[arg-type]
        inserted += max(result.rowcount, 0)
    return inserted


def _sqlite_values(series: pd.Series) -> list[Any]:
    if isinstance(series.dtype, pd.ArrowDtype) and pa.types.is_date32(series.dtype.pyarrow_dtype):
        # SQLAlchemy's Date type stores ISO text on SQLite; bind the same here (Arrow's cast
        # writes ISO dates, and is ~30x faster than pandas' astype to string).
        return pa.array(series).cast(pa.string()).to_pylist()
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        return pa.array(series).to_pylist()  # None where missing, as to_numpy(na_value=None)
    values = _column_values(series)
    if values and hasattr(next((v for v in values if v is not None), None), "isoformat"):
        return [None if v is None else v.isoformat() for v in values]
    return values


def _csv_chunks(frame: pd.DataFrame) -> Iterator[bytes]:
    options = pacsv.WriteOptions(include_header=False)
    for start in range(0, len(frame), CHUNK_ROWS):
        chunk = pa.Table.from_pandas(frame.iloc[start : start + CHUNK_ROWS], preserve_index=False)
        buffer = io.BytesIO()
        pacsv.write_csv(chunk, buffer, options)
        yield buffer.getvalue()


def _copy(conn: Connection, target: str, columns: list[str], frame: pd.DataFrame) -> None:
    """COPY a frame into a table; a key or constraint it breaks raises SQLAlchemy's IntegrityError."""
    import psycopg

    raw = conn.connection.driver_connection
    assert raw is not None
    cols = ", ".join(_quote(conn, c) for c in columns)
    statement = f"COPY {target} ({cols}) FROM STDIN (FORMAT csv)"
    try:
        with raw.cursor() as cur, cur.copy(statement) as copy:
            for data in _csv_chunks(frame[columns]):
                copy.write(data)
    except psycopg.IntegrityError as exc:  # as an INSERT through SQLAlchemy would raise it
        raise IntegrityError(statement, None, exc) from exc


def _insert_postgres(conn: Connection, table: Table, frame: pd.DataFrame, ignore: bool) -> int:
    columns = list(frame.columns)
    name = _quote(conn, table.name)
    if not ignore:
        _copy(conn, name, columns, frame)
        return len(frame)
    # Fast path: straight COPY. A key that already exists aborts it (savepoint rolled
    # back) and the rows go through a staging table with ON CONFLICT DO NOTHING instead.
    try:
        with conn.begin_nested():
            _copy(conn, name, columns, frame)
        return len(frame)
    except IntegrityError:
        pass
    stage = f"_ly_stage_{uuid.uuid4().hex[:12]}"
    pk = ", ".join(_quote(conn, c.name) for c in table.primary_key.columns)
    cols = ", ".join(_quote(conn, c) for c in columns)
    conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} (LIKE {name} INCLUDING DEFAULTS) ON COMMIT DROP")
    _copy(conn, stage, columns, frame)
    result = conn.exec_driver_sql(
        f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({pk}) DO NOTHING"
    )
    conn.exec_driver_sql(f"DROP TABLE {stage}")
    return max(result.rowcount, 0)


def insert_frame(conn: Connection, table: Table, frame: pd.DataFrame, *, ignore_existing: bool = True) -> int:
    """Bulk-insert a frame whose columns are a subset of the table's; returns rows inserted.

    With ``ignore_existing`` rows whose primary key already exists are skipped, which makes
    reloading the same batch a no-op instead of a duplicate.
    """
    unknown = set(frame.columns) - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name}: unknown columns {sorted(unknown)}")
    if frame.empty:
        return 0
    frame = _dates_as_dates(table, frame)
    if conn.dialect.name == "postgresql":
        return _insert_postgres(conn, table, frame, ignore_existing)
    return _insert_sqlite(conn, table, frame, ignore_existing)


def _dates_as_dates(table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """Date columns held as timestamps become plain dates, stored the same on every backend."""
    convert = [
        c
        for c in frame.columns
        if isinstance(table.c[c].type, Date) and pd.api.types.is_datetime64_any_dtype(frame[c].dtype)
    ]
    if not convert:
        return frame
    frame = frame.copy(deep=False)
    for column in convert:
        # Whole days, vectorised: SQLite binds them as ISO text, COPY as arrow date32.
        frame[column] = frame[column].astype("date32[pyarrow]")
    return frame


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def normalise_value(value: Any) -> str:
    """One column value as checksum text: floats to nine decimals, dates and times in ISO form."""
    if value is None:
        return "\\N"
    if isinstance(value, float):
        return repr(round(value, 9))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def table_checksum(conn: Connection, table: Table, where: Any = None) -> str:
    """SHA-256 over a table's rows in primary-key order; equal across runs and backends."""
    query = select(*table.c).order_by(*table.primary_key.columns)
    if where is not None:
        query = query.where(where)
    digest = hashlib.sha256()
    for row in conn.execute(query):
        digest.update("\x1f".join(normalise_value(v) for v in row).encode())
        digest.update(b"\n")
    return digest.hexdigest()
