"""Bounded waits on PostgreSQL: connect, statement and lock timeouts, and the errors they give.

Each case injects the real fault: a server that accepts and never answers, a statement that runs
longer than the bound, a row or advisory lock held by another open transaction. The asserts are on
the error (its type and what it names), never on elapsed time.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tasks.db import (
    DatabaseUnavailable,
    LockTimeout,
    advisory_key,
    check_connection,
    make_engine,
    write_tx,
)
from tasks.featurestore import materialize_partition
from tasks.schema import model_champions
from tasks.scoring import publish, published_score_set, validate_score_set, write_score_set
from tasks.settings import PgTimeouts, pg_timeouts
from tasks.warehouse import upgrade_schema
from tests.conftest import _database_url
from tests.featurestore.helpers import DAY, gift_view

MODEL = "churn"
SHORT = PgTimeouts(connect_s=2, statement_ms=5_000, lock_ms=300)


@pytest.fixture
def pg_url(tmp_path: Path, pg_available: bool) -> Iterator[str]:
    """A PostgreSQL database (a schema) of this test's own."""
    yield from _database_url("postgresql", tmp_path, pg_available)


@pytest.fixture
def pg(pg_url: str) -> Iterator[Engine]:
    """A migrated warehouse on PostgreSQL whose lock waits are bounded at 300 ms."""
    engine = make_engine(pg_url, SHORT)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def holder(pg_url: str) -> Iterator[Engine]:
    """A second engine, the other transaction that holds the locks (no lock timeout of its own)."""
    engine = make_engine(pg_url, PgTimeouts(lock_ms=0))
    yield engine
    engine.dispose()


def _validated_set(engine: Engine, version: int, as_of: int) -> str:
    frame = pd.DataFrame({"entity_key": [f"u{i}" for i in range(5)], "score": [0.1, 0.2, 0.3, 0.4, 0.5]})
    set_id = write_score_set(
        engine, model=MODEL, version=version, as_of=as_of, run_id=f"r{as_of}", frame=frame, created_ts=as_of
    )
    validate_score_set(engine, set_id, (0.0, 1.0))
    return set_id


def _champion(engine: Engine, version: int) -> None:
    with write_tx(engine) as conn:
        conn.execute(
            model_champions.insert().values(model_name=MODEL, version=version, ledger_id=1, updated_ts=1)
        )


def test_settings_reach_every_session_and_keep_the_urls_options(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEYIELD_PG_STATEMENT_TIMEOUT_MS", "4321")
    monkeypatch.setenv("LIVEYIELD_PG_LOCK_TIMEOUT_MS", "250")
    monkeypatch.setenv("LIVEYIELD_PG_CONNECT_TIMEOUT_S", "7")
    assert pg_timeouts() == PgTimeouts(connect_s=7, statement_ms=4321, lock_ms=250)
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "4321ms"
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "250ms"
            # The test URL's own options (its schema) still apply.
            assert conn.execute(text("SHOW search_path")).scalar() == pg_url.rsplit("%3D", 1)[1]
    finally:
        engine.dispose()
    assert pg_timeouts({}) == PgTimeouts()  # documented defaults
    with pytest.raises(ValueError, match="LIVEYIELD_PG_LOCK_TIMEOUT_MS"):
        pg_timeouts({"LIVEYIELD_PG_LOCK_TIMEOUT_MS": "soon"})


def test_a_statement_longer_than_the_bound_is_cancelled(pg_url: str) -> None:
    engine = make_engine(pg_url, PgTimeouts(statement_ms=200))
    try:
        with engine.connect() as conn, pytest.raises(OperationalError, match="statement timeout") as info:
            conn.execute(text("SELECT pg_sleep(30)"))
        assert getattr(info.value.orig, "sqlstate", None) == "57014"  # query_canceled
        with engine.connect() as conn:  # the pool hands out a healthy session afterwards
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_a_server_that_never_answers_fails_the_connect(pg_available: bool) -> None:
    # A listening socket that accepts and never speaks: the connect waits on the bound, then fails.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", PgTimeouts(connect_s=2))
    try:
        with pytest.raises(DatabaseUnavailable, match="timeout"):
            check_connection(engine)
        assert accepted, "the client never reached the silent server"
    finally:
        engine.dispose()
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def test_publish_waits_a_bounded_time_on_a_held_champion_row(pg: Engine, holder: Engine) -> None:
    _champion(pg, 1)
    set_id = _validated_set(pg, 1, 100)
    with holder.connect() as other, other.begin():
        other.execute(
            text("SELECT version FROM model_champions WHERE model_name = :m FOR UPDATE"), {"m": MODEL}
        )
        with pytest.raises(LockTimeout, match=f"the champion row of {MODEL}") as info:
            publish(pg, MODEL, set_id, published_ts=101)
        assert "300 ms" in str(info.value) and "LIVEYIELD_PG_LOCK_TIMEOUT_MS" in str(info.value)
    assert published_score_set(pg, MODEL) is None  # the timed-out publish rolled back
    assert publish(pg, MODEL, set_id, published_ts=102).published  # and works once the lock is gone


def test_publish_waits_a_bounded_time_on_a_held_publication_lock(pg: Engine, holder: Engine) -> None:
    set_id = _validated_set(pg, 1, 100)
    with holder.connect() as other, other.begin():
        other.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key("publish-scores", MODEL)})
        with pytest.raises(LockTimeout, match=f"the score publication lock of {MODEL}"):
            publish(pg, MODEL, set_id, published_ts=101)
    assert published_score_set(pg, MODEL) is None


@pytest.mark.parametrize("held", ["registration", "build"])
def test_feature_build_waits_a_bounded_time_on_a_held_advisory_lock(
    pg: Engine, holder: Engine, held: str
) -> None:
    view = gift_view()
    if held == "registration":
        names: tuple[str, ...] = ("fs-register",)
        named = "the feature-store registration lock"
    else:
        names = (view.table_name, DAY.isoformat())
        named = f"the build lock of {view.table_name} {DAY.isoformat()}"
    with holder.connect() as other, other.begin():
        other.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(*names)})
        with pytest.raises(LockTimeout, match=named):
            materialize_partition(pg, view, DAY, created_ts=int(dt.datetime(2026, 2, 1).timestamp()))
