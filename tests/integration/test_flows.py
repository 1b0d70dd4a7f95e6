"""The ingest-validate flow under the shared Prefect harness, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from flows.ingest_validate import ingest_validate
from tasks import ingest, landing
from tasks.db import make_engine, table_checksum
from tasks.quality import QualityError
from tasks.quality.report import DataQualityError
from tasks.schema import RAW_TABLES, identity_users, partition_status, validation_runs
from tasks.settings import Settings, pseudonym_key
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation
from tasks.warehouse import upgrade_schema
from tests.data.quality_frames import good_frame

pytestmark = pytest.mark.usefixtures("prefect_harness")

SMALL = SimConfig(users=150, streamers=12, days=3, seed=11)
AS_OF = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def warehouse(settings: Settings) -> Iterator[Engine]:
    """A migrated warehouse for the configured settings."""
    engine = make_engine(settings.db_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def _simulate(settings: Settings, engine: Engine, config: SimConfig = SMALL) -> dict[str, int]:
    config = dataclasses.replace(config, pseudonym_key=pseudonym_key(settings))
    return run_simulation(settings, engine, config)


def _checksums(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {name: table_checksum(conn, table) for name, table in RAW_TABLES.items()}


def test_simulated_platform_validates_and_loads(settings: Settings, warehouse: Engine) -> None:
    rows = _simulate(settings, warehouse)
    summary = ingest_validate(as_of=AS_OF)
    assert summary.rejected == 0
    raw_rows = sum(n for t, n in rows.items() if t in RAW_TABLES)
    assert summary.rows_loaded == raw_rows
    with warehouse.connect() as conn:
        statuses = conn.execute(select(partition_status.c.status).distinct()).scalars().all()
        assert statuses == ["validated"]
    assert summary.data_docs is not None and Path(summary.data_docs).exists()


def test_same_seed_gives_the_same_tables_on_every_backend(
    settings: Settings, warehouse: Engine, tmp_path: Path
) -> None:
    _simulate(settings, warehouse)
    ingest_validate(as_of=AS_OF)
    # A second platform from the same seed, into a fresh SQLite warehouse.
    reference = dataclasses.replace(
        settings, home=tmp_path / "ref", db_url=f"sqlite:///{tmp_path / 'ref.db'}"
    )
    ref_engine = make_engine(reference.db_url)
    upgrade_schema(ref_engine)
    _simulate(reference, ref_engine)
    for table in RAW_TABLES:
        ingest.ingest_table(ref_engine, reference.landing_dir, table, max_ts=int(AS_OF.timestamp()))
    assert _checksums(warehouse) == _checksums(ref_engine)
    ref_engine.dispose()


def test_no_raw_identifier_reaches_any_table_but_identity(settings: Settings, warehouse: Engine) -> None:
    """S4: raw user ids and emails live only in identity_users."""
    _simulate(settings, warehouse)
    ingest_validate(as_of=AS_OF)
    with warehouse.connect() as conn:
        raw_ids = set(conn.execute(select(identity_users.c.user_id)).scalars())
        emails = set(conn.execute(select(identity_users.c.email)).scalars())
        signups = conn.execute(select(func.count()).select_from(RAW_TABLES["raw_users"])).scalar_one()
        assert len(raw_ids) == signups > 0  # one identity per user who signed up
        for name, table in RAW_TABLES.items():
            frame = pd.read_sql(select(table), conn)
            values = set(frame.astype(str).to_numpy().ravel())
            assert not values & raw_ids, name
            assert not values & emails, name
            assert not any("@" in v for v in values), name


def test_rejected_batch_fails_the_flow_with_a_report(settings: Settings, warehouse: Engine) -> None:
    good = good_frame("raw_orders", n=40, days=2).drop(columns=["event_date"])
    bad = good.copy()
    bad.loc[bad.index[::2], "quantity"] = -1  # cancellations everywhere
    landing.write_batch(settings.landing_dir, "raw_orders", bad)
    with pytest.raises(DataQualityError) as caught:
        ingest_validate(as_of=AS_OF)
    report = str(caught.value)
    assert "raw_orders 2026-01-05" in report and "quantity" in report
    assert "expect_column_values_to_be_between" in report


def test_transient_db_errors_are_retried_without_duplicates(
    settings: Settings, warehouse: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R1: a feature/raw write that fails twice with an I/O error is retried and completes once."""
    landing.write_batch(
        settings.landing_dir, "raw_gifts", good_frame("raw_gifts", n=30).drop(columns=["event_date"])
    )
    calls = {"n": 0}
    real = ingest.ingest_table

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "ingest_table", flaky)
    monkeypatch.setattr("tasks.steps.ingest.ingest_table", flaky)
    summary = ingest_validate(as_of=AS_OF)
    assert calls["n"] == 3 and summary.rows_loaded == 30
    with warehouse.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RAW_TABLES["raw_gifts"])).scalar_one() == 30
        assert conn.execute(select(func.count()).select_from(validation_runs)).scalar_one() == 1


def test_data_errors_are_not_retried(settings: Settings, warehouse: Engine, tmp_path: Path) -> None:
    """D7: a broken suite fails the flow at once; the batch stays pending, never 'skipped'."""
    from tasks.quality import suites

    broken = tmp_path / "suites"
    broken.mkdir()
    (broken / "raw_gifts.json").write_text("{ not json")
    landing.write_batch(
        settings.landing_dir, "raw_gifts", good_frame("raw_gifts", n=5).drop(columns=["event_date"])
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(suites, "SUITE_DIR", broken)
        with pytest.raises(QualityError):
            ingest_validate(as_of=AS_OF)
    assert landing.pending(settings.landing_dir)  # nothing lost: still waiting
    with warehouse.connect() as conn:
        assert conn.execute(select(func.count()).select_from(validation_runs)).scalar_one() == 0


def test_database_down_fails_fast_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """R8: an unreachable database fails the flow quickly and names the database."""
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path))
    monkeypatch.setenv("LIVEYIELD_DB_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    from tasks.db import DatabaseUnavailable

    with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
        ingest_validate(as_of=AS_OF)


def test_sqlite_file_survives_concurrent_reader(settings: Settings, warehouse: Engine) -> None:
    if warehouse.dialect.name != "sqlite":
        pytest.skip("SQLite reader/writer concurrency")
    landing.write_batch(
        settings.landing_dir, "raw_gifts", good_frame("raw_gifts", n=50).drop(columns=["event_date"])
    )
    count = select(func.count()).select_from(RAW_TABLES["raw_gifts"])
    with warehouse.connect() as reader:
        assert reader.execute(count).scalar_one() == 0  # a read transaction stays open
        summary = ingest_validate(as_of=AS_OF)  # a WAL reader never blocks the writer
        assert reader.execute(count).scalar_one() == 0  # and keeps its snapshot
        reader.commit()
        assert reader.execute(count).scalar_one() == 50
    assert summary.rows_loaded == 50
