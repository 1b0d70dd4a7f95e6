"""The warehouse layer on both backends: migrations, bulk loads, checksums, identifier allowlist."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text

from tasks.db import insert_frame, table_checksum, write_tx
from tasks.schema import metadata, raw_gifts
from tasks.warehouse import UnknownTable, raw_table


def _gifts(n: int, start: int = 0) -> pd.DataFrame:
    base = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp())
    return pd.DataFrame(
        {
            "event_id": [f"g-{i}" for i in range(start, start + n)],
            "event_ts": [base + 60 * i for i in range(start, start + n)],
            "event_date": [dt.date(2026, 1, 5)] * n,
            "user_key": [f"k{i % 7}" for i in range(start, start + n)],
            "streamer_id": "s1",
            "stream_id": "st1",
            "amount": [1.5 * i for i in range(start, start + n)],
            "platform_share": [0.45 * i for i in range(start, start + n)],
        }
    )


def test_migrations_create_exactly_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())


def test_bulk_insert_is_idempotent_and_counts_new_rows(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert insert_frame(conn, raw_gifts, _gifts(1000)) == 1000
    with write_tx(engine) as conn:
        first = table_checksum(conn, raw_gifts)
        # A replay of half the rows plus 10 new ones: only the new ones land.
        assert insert_frame(conn, raw_gifts, _gifts(510, start=500)) == 10
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(raw_gifts)).scalar_one() == 1010
        assert table_checksum(conn, raw_gifts) != first
        assert table_checksum(conn, raw_gifts, raw_gifts.c.event_id == "g-3") == table_checksum(
            conn, raw_gifts, raw_gifts.c.event_id == "g-3"
        )


def test_failed_write_leaves_nothing(engine: Engine) -> None:
    with pytest.raises(RuntimeError), write_tx(engine) as conn:
        insert_frame(conn, raw_gifts, _gifts(100))
        raise RuntimeError("disk write failed")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(raw_gifts)).scalar_one() == 0


def test_unknown_columns_and_tables_are_refused_before_sql(engine: Engine) -> None:
    frame = _gifts(3).assign(**{"x; DROP TABLE raw_gifts;--": 1})
    with pytest.raises(ValueError, match="unknown columns"), write_tx(engine) as conn:
        insert_frame(conn, raw_gifts, frame)
    with pytest.raises(UnknownTable, match="unknown raw table"):
        raw_table("raw_gifts; DROP TABLE raw_gifts;--")
    assert "raw_gifts" in inspect(engine).get_table_names()


def test_sqlite_runs_in_wal_mode_with_busy_timeout(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite-specific settings")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() >= 30_000


def test_checksum_is_equal_across_backends(tmp_path, pg_available) -> None:  # type: ignore[no-untyped-def]
    from tasks.db import make_engine
    from tasks.warehouse import upgrade_schema
    from tests.conftest import _database_url

    sums = []
    for backend in ("sqlite", "postgresql"):
        urls = _database_url(backend, tmp_path, pg_available)
        url = next(urls)
        eng = make_engine(url)
        upgrade_schema(eng)
        with write_tx(eng) as conn:
            insert_frame(conn, raw_gifts, _gifts(250))
        with eng.connect() as conn:
            sums.append(table_checksum(conn, raw_gifts))
        eng.dispose()
        next(urls, None)  # runs the fixture's clean-up
    assert sums[0] == sums[1]
