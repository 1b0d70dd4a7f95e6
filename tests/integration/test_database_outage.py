"""PostgreSQL going away in the middle of a real train-model run (testplan R8).

The shared PostgreSQL server cannot be stopped for one test, so the run reaches it through a TCP
relay of the test's own (its URL names the relay's port and an ``application_name`` of its own).
The database goes away as a stopped server does for its clients: the relay stops accepting
connections (a new connection is refused), every server process of the run's connections is
terminated with ``pg_terminate_backend`` (what a fast shutdown does to open sessions: the client
reads "terminating connection due to administrator command"), and the relay cuts what is left.
The test's own connections go straight to the server and watch what is stored.

The platform's policy (tasks/steps.py): I/O failures are retried by the steps that have retries;
promote-candidate has none, so a database that is gone fails the run at once. Each outage must
end the run within ``FAIL_WITHIN_S`` with the database error in one line, leave every warehouse
table exactly as it was committed when the database went away (no ledger entry without its
champion row, nothing half-written), register no version without its artifacts and move no
alias; and once the database is back, the same run completes with nothing to repair by hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError

from flows.models import train_model
from tasks import lifecycle, steps
from tasks.db import make_engine
from tasks.errors import user_facing
from tasks.gates import ledger
from tasks.models import catalog
from tasks.registry.hashing import artifact_sha256
from tasks.registry.tags import SHA_TAG
from tasks.settings import Settings
from tasks.warehouse import upgrade_schema
from tests.checksums import table_checksums
from tests.conftest import PG_URL
from tests.integration.train_racer import LENIENT
from tests.models.warehouse import START, build_warehouse

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = "ad_ctr"
DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
FAIL_WITHIN_S = 10.0  # from the database going away to the run's failure


class Relay:
    """A TCP relay to PostgreSQL on a port of its own; ``go_dark`` closes it, ``start`` reopens it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0  # chosen by the first start, kept by the next
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def stop_accepting(self) -> None:
        """Close the listening socket: from now on a connection to the port is refused."""
        if self._listener is not None:
            self._listener.close()
            assert self._acceptor is not None
            self._acceptor.join(timeout=5)
            self._listener = self._acceptor = None

    def cut(self) -> None:
        """Close every relayed connection that is still open."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by stop_accepting
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@dataclasses.dataclass
class Outage:
    """The database going away for the run, and what the test saw at that moment."""

    relay: Relay
    admin: Engine
    application: str
    watch: Engine
    started: float | None = None
    terminated: int = 0
    committed: dict[str, str] | None = None  # every table's checksum as committed at the outage

    def begin(self) -> None:
        self.relay.stop_accepting()
        with self.admin.connect() as conn:
            self.terminated = len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :app AND pid <> pg_backend_pid()"
                    ),
                    {"app": self.application},
                ).all()
            )
        self.relay.cut()
        self.started = time.monotonic()
        self.committed = table_checksums(self.watch)

    def end(self) -> None:
        self.relay.start()
        self.started = None


@pytest.fixture
def outage(settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Outage]:
    """A small built warehouse (ad_ctr's views materialised) that the run reaches through a relay."""
    watch = make_engine(db_url)
    upgrade_schema(watch)
    build_warehouse(settings, watch, users=250, streamers=20, days=DAYS, seed=5)
    monkeypatch.setitem(catalog.MODELS, MODEL, dataclasses.replace(catalog.MODELS[MODEL], policy=LENIENT))
    direct = make_url(db_url)
    relay = Relay((direct.host or "127.0.0.1", direct.port or 5432))
    relay.start()
    application = f"liveyield-outage-{uuid.uuid4().hex[:8]}"
    through_relay = direct.set(port=relay.port, query={**direct.query, "application_name": application})
    monkeypatch.setenv("LIVEYIELD_DB_URL", through_relay.render_as_string(hide_password=False))
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        yield Outage(relay, admin, application, watch)
    finally:
        relay.stop_accepting()
        relay.cut()
        admin.dispose()
        watch.dispose()


def _registry(client: MlflowClient) -> list[tuple[str, tuple[str, ...]]]:
    found = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    return [(str(n), tuple(sorted(client.get_model_version(MODEL, str(n)).aliases))) for n in found]


def _artifacts_complete(client: MlflowClient, version: str) -> bool:
    """The version's artifacts download and hash to the checksum recorded at registration."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        uri = client.get_model_version_download_uri(MODEL, version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=tmp, tracking_uri=client.tracking_uri
        )
        return artifact_sha256(Path(local)) == client.get_model_version(MODEL, version).tags[SHA_TAG]


def _fails_fast(outage: Outage) -> str:
    """Run train-model into the outage; the one line a person reads. Asserts it failed fast."""
    with pytest.raises(OperationalError) as failed:
        train_model(MODEL, as_of=AS_OF, build=False)
    assert outage.started is not None, "the database never went away"
    elapsed = time.monotonic() - outage.started
    print(f"failed {elapsed:.2f} s after the database went away ({outage.terminated} backends terminated)")
    assert elapsed < FAIL_WITHIN_S
    line = user_facing(failed.value)
    assert line is not None and line.startswith("database error: ") and "LIVEYIELD_DB_URL" in line, line
    return line


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_r8_postgresql_going_away_mid_run_fails_fast_and_leaves_no_half_written_table(
    outage: Outage, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R8: PostgreSQL goes away twice during train-model: first between two steps (the gate done,
    the promotion next), then inside the promotion's transaction (its ledger row written, the
    champion row not yet). Each time the run fails within FAIL_WITHIN_S with one "database error"
    line, every warehouse table is as committed when the database went away (no ledger row, no
    champion row), the version registered has all its artifacts, and @champion has not moved.
    With the database back, the same run promotes that version: one ledger entry, aliases agree."""
    client = lifecycle.mlflow_client(settings)

    # 1. Between two steps: when gate-candidate completes, before promote-candidate starts.
    def database_goes_away(*_args: Any) -> None:
        outage.begin()

    gate = steps.gate_candidate.with_options(on_completion=[database_goes_away])
    with monkeypatch.context() as between:
        between.setattr(steps, "gate_candidate", gate)
        line = _fails_fast(outage)
    assert "refused" in line, line  # the next step found no server to connect to
    assert outage.committed is not None and table_checksums(outage.watch) == outage.committed
    assert not ledger(outage.watch, MODEL)
    assert _registry(client) == [("1", ("challenger",))] and _artifacts_complete(client, "1")

    # 2. Inside the promotion's transaction: its ledger row written, the champion row next.
    outage.end()

    def after_ledger_insert(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        run = conn.engine.url.port == outage.relay.port
        if run and outage.started is None and statement.lstrip().startswith("INSERT INTO alias_ledger"):
            outage.begin()

    event.listen(Engine, "after_cursor_execute", after_ledger_insert)
    try:
        line = _fails_fast(outage)
    finally:
        event.remove(Engine, "after_cursor_execute", after_ledger_insert)
    assert outage.terminated >= 1  # the promotion's own connection, in its transaction
    assert outage.committed is not None and table_checksums(outage.watch) == outage.committed
    assert not ledger(outage.watch, MODEL)  # the ledger row died with its transaction
    assert _registry(client) == [("1", ("challenger",))] and _artifacts_complete(client, "1")

    # 3. The database back: the same run completes, nothing to repair by hand.
    outage.end()
    result = train_model(MODEL, as_of=AS_OF, build=False)
    assert (result.version, result.created, result.promoted, result.champion) == (1, False, True, 1)
    rows = ledger(outage.watch, MODEL)
    assert [(r["from_version"], r["to_version"], r["action"]) for r in rows] == [(None, 1, "promote")]
    assert _registry(client) == [("1", ("challenger", "champion"))]
