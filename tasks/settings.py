"""One settings object read from the environment; nothing happens at import time."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


@dataclass(frozen=True)
class Settings:
    """Where the platform keeps its data, its models and its orchestration state."""

    home: Path
    db_url: str
    mlflow_tracking_uri: str
    prefect_api_url: str | None

    @property
    def landing_dir(self) -> Path:
        """Folder where raw batches wait, one Parquet file per (table, partition, batch)."""
        return self.home / "landing"

    @property
    def data_docs_dir(self) -> Path:
        """Folder of the locally built Great Expectations Data Docs."""
        return self.home / "data_docs"


def get_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (or the mapping given), with the embedded defaults."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("LIVEYIELD_HOME", ".liveyield")).resolve()
    return Settings(
        home=home,
        db_url=env.get("LIVEYIELD_DB_URL") or f"sqlite:///{home / 'warehouse.db'}",
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
        prefect_api_url=env.get("PREFECT_API_URL") or None,
    )


DEFAULT_MIN_EVENT_DATE = dt.date(2000, 1, 1)  # earlier event times are a broken clock (1970) by default
MIN_EVENT_DATE_VAR = "LIVEYIELD_MIN_EVENT_DATE"


def min_event_ts(table: str, env: dict[str, str] | None = None) -> int:
    """The earliest plausible event time (epoch seconds) of one source (raw table).

    ``LIVEYIELD_MIN_EVENT_DATE_<TABLE>`` (e.g. ``LIVEYIELD_MIN_EVENT_DATE_RAW_TRAFFIC=1990-01-01``)
    sets it for one source, ``LIVEYIELD_MIN_EVENT_DATE`` for every source; the default is
    2000-01-01. Imported history may be older than the platform's own clock can be; rows before
    the bound are quarantined with their batch, never landed in a partition of their own.
    """
    env = dict(os.environ) if env is None else env
    text = env.get(f"{MIN_EVENT_DATE_VAR}_{table.upper()}") or env.get(MIN_EVENT_DATE_VAR)
    try:
        day = dt.date.fromisoformat(text) if text else DEFAULT_MIN_EVENT_DATE
    except ValueError:
        raise ValueError(f"{MIN_EVENT_DATE_VAR} for {table}: expected YYYY-MM-DD, got {text!r}") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


# The most rows a model is fitted on. Beyond it a training split is cut by its spec's declared
# Sampling rule (tasks/models/sampling.py), never silently; a spec without a rule is fitted whole.
# 5,000,000 leaves every platform the repository simulates unsampled (ad_ctr, the largest
# training set, has about 53,000 examples at 2,000 users and 500,000 impressions at 16,000 users
# over 28 days), so results at those scales do not depend on the setting.
DEFAULT_MAX_TRAIN_ROWS = 5_000_000
MAX_TRAIN_ROWS_VAR = "LIVEYIELD_MAX_TRAIN_ROWS"


def whole_number(env: Mapping[str, str], var: str, *, minimum: int, unit: str = "") -> int | None:
    """A setting that counts something: ``var`` of ``env`` as a whole number of at least
    ``minimum`` (``_`` allowed as a digit separator), None when unset or blank; a ValueError naming
    the variable, the ``unit`` and the value otherwise."""
    text = env.get(var, "").strip()
    if not text:
        return None
    what = f" {unit}" if unit else ""
    try:
        value = int(text)
    except ValueError:
        of = f" of{what}" if unit else ""
        raise ValueError(f"{var}: expected a whole number{of}, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{var}: expected {minimum} or more{what}, got {text!r}")
    return value


def max_train_rows(env: Mapping[str, str] | None = None) -> int:
    """The training-row cap: ``LIVEYIELD_MAX_TRAIN_ROWS`` (a whole number, 1 or more), else 5,000,000."""
    value = whole_number(os.environ if env is None else env, MAX_TRAIN_ROWS_VAR, minimum=1, unit="rows")
    return DEFAULT_MAX_TRAIN_ROWS if value is None else value


@dataclass(frozen=True)
class PgTimeouts:
    """Bounds on PostgreSQL waits, so stuck work fails with a clear error instead of hanging.

    ``connect_s``: seconds to establish a connection (``LIVEYIELD_PG_CONNECT_TIMEOUT_S``, default 10);
    ``statement_ms``: longest statement (``LIVEYIELD_PG_STATEMENT_TIMEOUT_MS``, default 600000, 10 min);
    ``lock_ms``: longest wait for a row, table or advisory lock (``LIVEYIELD_PG_LOCK_TIMEOUT_MS``,
    default 60000, the same bound as SQLite's busy timeout). 0 turns a bound off.
    """

    connect_s: int = 10
    statement_ms: int = 600_000
    lock_ms: int = 60_000


PG_TIMEOUT_VARS = {
    "connect_s": "LIVEYIELD_PG_CONNECT_TIMEOUT_S",
    "statement_ms": "LIVEYIELD_PG_STATEMENT_TIMEOUT_MS",
    "lock_ms": "LIVEYIELD_PG_LOCK_TIMEOUT_MS",
}


def pg_timeouts(env: dict[str, str] | None = None) -> PgTimeouts:
    """The PostgreSQL timeouts from the environment (or the mapping given), else the defaults."""
    env = dict(os.environ) if env is None else env
    values: dict[str, int] = {}
    for field, var in PG_TIMEOUT_VARS.items():
        value = whole_number(env, var, minimum=0)  # 0: no bound
        if value is not None:
            values[field] = value
    return PgTimeouts(**values)


DASK_ADDRESS_VAR = "LIVEYIELD_DASK_ADDRESS"
DASK_WORKERS_VAR = "LIVEYIELD_DASK_WORKERS"
# A scheduler address: tcp:// or tls://, a host name, IPv4 address or [IPv6] address, and a port.
_DASK_ADDRESS = re.compile(
    r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$"
)


@dataclass(frozen=True)
class DaskSettings:
    """Where the flows' fanned-out tasks run (tasks/ops/cluster.py); neither set: in this process.

    ``address``: an existing Dask scheduler (``LIVEYIELD_DASK_ADDRESS=tcp://host:port``);
    ``workers``: a local cluster of that many single-threaded worker processes started for each
    flow run and closed after it (``LIVEYIELD_DASK_WORKERS=N``). At most one of them is set.
    """

    address: str | None = None
    workers: int | None = None

    @property
    def distributed(self) -> bool:
        """Whether the flows fan out over Dask."""
        return self.address is not None or self.workers is not None


def dask_settings(env: dict[str, str] | None = None) -> DaskSettings:
    """The Dask settings from the environment (or the mapping given); a bad value is a ValueError
    naming the variable, the value and what is expected."""
    env = dict(os.environ) if env is None else env
    address = env.get(DASK_ADDRESS_VAR, "").strip() or None
    workers_text = env.get(DASK_WORKERS_VAR, "").strip()
    if address is not None and workers_text:
        raise ValueError(
            f"{DASK_ADDRESS_VAR} and {DASK_WORKERS_VAR} are both set: set the address of an existing "
            "scheduler or a number of local workers, not both"
        )
    if address is not None:
        match = _DASK_ADDRESS.match(address)
        if match is None or not 1 <= int(match.group(4)) <= 65535:
            raise ValueError(
                f"{DASK_ADDRESS_VAR}: expected a scheduler address tcp://HOST:PORT (or tls://), "
                f"got {address!r}"
            )
        return DaskSettings(address=address)
    workers = whole_number(env, DASK_WORKERS_VAR, minimum=1, unit="workers")
    return DaskSettings() if workers is None else DaskSettings(workers=workers)


# This platform runs on machines without outbound network: the libraries' telemetry must not try
# to phone home (each would otherwise time out on first use).
NO_TELEMETRY = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
}


# Without a server, every command starts Prefect's API as a subprocess and waits 20 s for it by
# default; a busy 2-core machine exceeds that (measured: two demos beside a test run failed with
# "Timed out while attempting to connect to ephemeral Prefect API server"). 120 s absorbs the
# load and still reports a server that never starts.
EPHEMERAL_SERVER = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}


def apply_process_defaults() -> None:
    """Telemetry off and a patient ephemeral Prefect start for this process, unless the
    environment already decides.

    Called by the entry points (the command line, the test session) before the libraries load;
    flows run by a worker get the telemetry settings from the environment `liveyield serve`
    starts it with.
    """
    for name, value in {**NO_TELEMETRY, **EPHEMERAL_SERVER}.items():
        os.environ.setdefault(name, value)


KEY_FILE = "pseudonym.key"
_DERIVED_NOTE = "# derived from simulation seed "  # first line of a key file made from a seed


def pseudonym_key(settings: Settings, env: dict[str, str] | None = None, *, seed: int | None = None) -> bytes:
    """The HMAC key for user pseudonyms: LIVEYIELD_PSEUDONYM_KEY, else the key file under home.

    A missing key file is made once: from ``seed`` when one is given (a simulated platform, whose
    users have nothing secret, so the same seed gives the same pseudonyms and models everywhere),
    else from a random secret. The file of a derived key says so on its first line (a comment).
    """
    env = dict(os.environ) if env is None else env
    if value := env.get("LIVEYIELD_PSEUDONYM_KEY"):
        return value.encode()
    path = settings.home / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if seed is None:
            text = secrets.token_hex(32) + "\n"
        else:
            text = f"{_DERIVED_NOTE}{seed}\n{derived_key(seed).decode()}\n"
        # Created with 0600 so the key never becomes world-readable on a shared machine.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    lines = [line.strip() for line in path.read_text().splitlines()]
    return next(line for line in lines if line and not line.startswith("#")).encode()


def derived_key(seed: int) -> bytes:
    """The pseudonym key a simulated platform derives from its seed (not a secret)."""
    return hashlib.sha256(f"liveyield-simulated-platform:{seed}".encode()).hexdigest().encode()


def pseudonym_key_origin(settings: Settings, env: dict[str, str] | None = None) -> str:
    """Where the pseudonym key comes from, in words: the variable, a derived key file, a key file, none."""
    env = dict(os.environ) if env is None else env
    if env.get("LIVEYIELD_PSEUDONYM_KEY"):
        return "LIVEYIELD_PSEUDONYM_KEY"
    path = settings.home / KEY_FILE
    if not path.exists():
        return "none yet"
    first = path.read_text().splitlines()[0:1]
    if first and first[0].startswith(_DERIVED_NOTE):
        return f"derived from simulation seed {first[0][len(_DERIVED_NOTE) :].strip()}"
    return f"the key file {path.name}"


# Query parameters that carry a secret: libpq takes the password (and the client key's
# passphrase) from the URL's query as well as from its user part.
SECRET_URL_PARAMETERS = frozenset({"password", "sslpassword"})


def redact_url(url: str | URL) -> str:
    """A database URL with its password replaced, safe to print or log.

    Both places a password can be written are masked: ``user:password@`` and a
    ``password=`` (or ``sslpassword=``) query parameter.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # an unparsable URL is shown only by its scheme
        return str(url).split(":", 1)[0] + "://…"
    hidden = {name: "***" for name in parsed.query if name.lower() in SECRET_URL_PARAMETERS}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***")


def code_version() -> str:
    """The code's version for lineage tags: the git commit when run from a checkout, else the package's."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return version("liveyield")
    except PackageNotFoundError:
        return "unknown"
