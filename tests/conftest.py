"""Shared fixtures: a fresh database per test on SQLite and PostgreSQL, and one Prefect harness."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from tasks.settings import Settings, apply_process_defaults, get_settings

apply_process_defaults()  # before any library that phones home loads

from tasks.db import make_engine  # noqa: E402
from tasks.warehouse import upgrade_schema  # noqa: E402

PG_URL = os.environ.get("LIVEYIELD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _pg_admin() -> Engine:
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_available() -> bool:
    """PostgreSQL must be up for `make test`; LIVEYIELD_SKIP_PG=1 skips its cases explicitly."""
    if os.environ.get("LIVEYIELD_SKIP_PG") == "1":
        return False
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.exit(f"PostgreSQL at {PG_URL} is unreachable ({exc}); start it or set LIVEYIELD_SKIP_PG=1", 3)
    finally:
        admin.dispose()
    return True


def _database_url(backend: str, tmp_path: Path, pg_available: bool) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    if not pg_available:
        pytest.skip("PostgreSQL cases skipped (LIVEYIELD_SKIP_PG=1)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_available: bool) -> Iterator[str]:
    """A URL of an empty database of its own, once per backend."""
    yield from _database_url(request.param, tmp_path, pg_available)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a freshly migrated warehouse."""
    eng = make_engine(db_url)
    upgrade_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Platform settings pointing at this test's database and a home folder of its own."""
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIVEYIELD_DB_URL", db_url)
    monkeypatch.setenv("LIVEYIELD_PSEUDONYM_KEY", "test-key")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return get_settings()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (a temporary ephemeral API) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _prefect_console_follows_capture() -> None:
    """Point Prefect's console log handlers at this test's stderr.

    Prefect binds its handlers to the stderr of the moment they were made; under pytest's
    capture that stream is closed once its test ends, and later flows would log into it.
    """
    import logging
    import sys

    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler).__module__.startswith("prefect") and hasattr(handler, "console"):
                # Assigned, not setStream(): that would flush the old, possibly closed, stream.
                handler.stream = sys.stderr  # type: ignore[attr-defined]
                handler.console.file = sys.stderr  # its rich console keeps a file of its own
