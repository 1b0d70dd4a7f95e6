"""Run the platform's servers on this machine: Prefect server, work pool and worker, MLflow server.

``start_stack`` starts, as background processes of their own session:

- a Prefect server (its database: ``<warehouse db>_prefect`` on the warehouse's PostgreSQL
  server when ``LIVEYIELD_DB_URL`` is PostgreSQL, else SQLite under ``.liveyield/prefect/``);
- an MLflow tracking server (backend store ``<warehouse db>_mlflow`` on PostgreSQL, else the
  embedded default ``.liveyield/mlflow.db``; artifacts under ``.liveyield/mlartifacts``);
- the process work pool, every deployment of ``infra/prefect.yaml``, and a worker whose flow
  runs see ``PREFECT_API_URL`` and ``MLFLOW_TRACKING_URI`` of those servers;
- with ``dask_workers`` N > 0, a Dask scheduler and N single-threaded workers on the loopback
  interface (tasks/ops/dask_serve.py), and the worker's flow runs fan out on them
  (``LIVEYIELD_DASK_ADDRESS``).

What it started is written to ``.liveyield/run/stack.json`` (pids, addresses, log files; no
credentials) and ``stop_stack`` stops exactly those processes and their children. Database
URLs travel in environment variables, never on a command line.

Nobody gets in without credentials: the servers bind to the loopback interface unless told
otherwise, the Prefect API wants its basic-auth string and MLflow runs its basic-auth app.
Both secrets are made once into ``.liveyield/stack-credentials.env`` (owner-only), handed to
the worker, the deploy commands and every client of the platform, and never written to the
state file, a log or a command line. Each server process gets only the environment it needs
(no warehouse URL or pseudonym key in either).
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.ops import dask_serve
from tasks.ops.automations import ensure_automations, heartbeat_s
from tasks.settings import (
    DASK_ADDRESS_VAR,
    DASK_WORKERS_VAR,
    NO_TELEMETRY,
    Settings,
    get_settings,
    redact_url,
)

ROOT = Path(__file__).resolve().parents[2]
PREFECT_FILE = ROOT / "infra" / "prefect.yaml"
SIMULATE_FILE = ROOT / "infra" / "prefect-simulate.yaml"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
START_TIMEOUT_S = 240.0  # two loaded cores can take minutes to import and migrate a server


class StackError(RuntimeError):
    """A server could not be started or stopped; the message says which and where its log is."""


# --- bind address ---------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def bind_warning(host: str, *, allow_remote: bool) -> str | None:
    """Refuse a bind beyond loopback unless allowed; the warning to print when it is (else None)."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise StackError(
            f"--host {host} would let other machines reach the servers: "
            "pass --allow-remote as well if that is meant (the default, 127.0.0.1, is local only)"
        )
    return (
        f"warning: the servers listen on {host}, reachable from other machines; they ask for the "
        "credentials in the credentials file, but the traffic is plain HTTP (put TLS in front)"
    )


# --- credentials ------------------------------------------------------------------------------

CREDENTIALS_FILE = "stack-credentials.env"
STACK_USER = "liveyield"
CREDENTIAL_VARS = ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@dataclass(frozen=True)
class StackCredentials:
    """The secrets of the stack's two servers (never printed, logged or put in the state file)."""

    prefect_auth_string: str = field(repr=False)  # "user:password", Prefect's basic auth
    mlflow_username: str
    mlflow_password: str = field(repr=False)

    def env(self) -> dict[str, str]:
        """The client variables Prefect and MLflow read them from."""
        values = (self.prefect_auth_string, self.mlflow_username, self.mlflow_password)
        return dict(zip(CREDENTIAL_VARS, values, strict=True))


def credentials_path(home: Path) -> Path:
    """The credentials file: KEY=VALUE lines, so a shell can load it with `set -a; . FILE`."""
    return home / CREDENTIALS_FILE


def read_credentials(home: Path) -> StackCredentials | None:
    """The stack's credentials, or None when none were made (or the file is unreadable)."""
    try:
        lines = credentials_path(home).read_text().splitlines()
    except OSError:
        return None
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    if not all(values.get(name) for name in CREDENTIAL_VARS):
        return None
    return StackCredentials(*(values[name] for name in CREDENTIAL_VARS))


def ensure_credentials(home: Path) -> tuple[StackCredentials, bool]:
    """The stack's credentials, made on first use (owner-only file); and whether they are new."""
    found = read_credentials(home)
    if found is not None:
        os.chmod(credentials_path(home), 0o600)  # tighten a file copied in with looser rights
        return found, False
    made = StackCredentials(
        prefect_auth_string=f"{STACK_USER}:{secrets.token_hex(24)}",
        mlflow_username=STACK_USER,
        mlflow_password=secrets.token_hex(24),
    )
    path = credentials_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # Created with 0600: the file never exists with wider rights, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "# credentials of the servers `liveyield serve` starts; load with: set -a; . THIS_FILE\n"
        )
        handle.writelines(f"{name}={value}\n" for name, value in made.env().items())
    tmp.replace(path)
    return made, True


@dataclass(frozen=True)
class StackPlan:
    """What `start_stack` will start, where, and on which stores."""

    home: Path
    root: Path
    host: str
    prefect_port: int
    mlflow_port: int
    prefect_db_url: str  # may hold a password: only ever in an environment variable
    mlflow_backend_uri: str  # likewise
    work_pool: str
    base_env: Mapping[str, str] = field(repr=False, default_factory=dict)
    dask_workers: int = 0  # 0: no cluster of the stack's own
    dask_port: int = 0
    dask_dashboard_port: int = 0
    create_databases: tuple[str, ...] = field(repr=False, default=())  # derived ones, made if missing

    @property
    def prefect_ui_url(self) -> str:
        """The Prefect UI."""
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        """The Prefect API (what PREFECT_API_URL is set to)."""
        return f"{self.prefect_ui_url}/api"

    @property
    def mlflow_url(self) -> str:
        """The MLflow UI and tracking API (what MLFLOW_TRACKING_URI is set to)."""
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def dask_address(self) -> str | None:
        """The stack's Dask scheduler (what LIVEYIELD_DASK_ADDRESS is set to), None without one."""
        return dask_serve.scheduler_address(self.dask_port) if self.dask_workers else None

    @property
    def dask_http_url(self) -> str | None:
        """The scheduler's HTTP endpoints and dashboard, None without a cluster."""
        return dask_serve.http_url(self.dask_dashboard_port) if self.dask_workers else None

    @property
    def run_dir(self) -> Path:
        """Pid and state files."""
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per server process."""
        return self.home / "logs"

    @property
    def artifact_root(self) -> Path:
        """Where MLflow keeps artifacts (the embedded default's folder too)."""
        return self.home / "mlartifacts"

    @property
    def mlflow_auth_db(self) -> Path:
        """The MLflow auth app's user store (password hashes only)."""
        return self.run_dir / "mlflow-auth.db"

    @property
    def mlflow_auth_config(self) -> Path:
        """The MLflow auth app's configuration (no secret in it: the password travels in the environment)."""
        return self.run_dir / "mlflow-auth.ini"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port (so a server can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def derived_database_url(db_url: str, suffix: str, driver: str) -> str | None:
    """``<database>_<suffix>`` on the same PostgreSQL server as ``db_url`` (None unless PostgreSQL)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        return None
    derived = url.set(drivername=f"postgresql+{driver}", database=f"{url.database}_{suffix}", query={})
    return derived.render_as_string(hide_password=False)


def plan_stack(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    prefect_port: int | None = None,
    mlflow_port: int | None = None,
    dask_workers: int | None = None,
    root: Path = ROOT,
) -> StackPlan:
    """The stack for these settings; a port of 0 means any free port.

    Overrides: LIVEYIELD_PREFECT_PORT, LIVEYIELD_MLFLOW_PORT, LIVEYIELD_PREFECT_DB_URL (an async
    SQLAlchemy URL: ``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``), LIVEYIELD_MLFLOW_DB_URL,
    LIVEYIELD_WORK_POOL, LIVEYIELD_SERVE_DASK_WORKERS (the scheduler and its HTTP endpoints take
    free loopback ports).
    """
    from tasks.ops.deployments import WORK_POOL

    env = dict(os.environ) if env is None else dict(env)

    def port(given: int | None, name: str, default: int) -> int:
        value = given if given is not None else int(env.get(name) or default)
        return value or free_port(host)

    derived_prefect = derived_database_url(settings.db_url, "prefect", "asyncpg")
    derived_mlflow = derived_database_url(settings.db_url, "mlflow", "psycopg")
    prefect_db = (
        env.get("LIVEYIELD_PREFECT_DB_URL")
        or derived_prefect
        or f"sqlite+aiosqlite:///{settings.home / 'prefect' / 'prefect.db'}"
    )
    tracking = env.get("MLFLOW_TRACKING_URI", "")
    mlflow_db = (
        env.get("LIVEYIELD_MLFLOW_DB_URL")
        or derived_mlflow
        or (tracking if tracking.startswith(("sqlite:", "postgresql")) else "")
        or f"sqlite:///{settings.home / 'mlflow.db'}"
    )
    workers = dask_serve.serve_workers(dask_workers, env)
    return StackPlan(
        home=settings.home,
        root=root,
        host=host,
        prefect_port=port(prefect_port, "LIVEYIELD_PREFECT_PORT", DEFAULT_PREFECT_PORT),
        mlflow_port=port(mlflow_port, "LIVEYIELD_MLFLOW_PORT", DEFAULT_MLFLOW_PORT),
        prefect_db_url=prefect_db,
        mlflow_backend_uri=mlflow_db,
        work_pool=env.get("LIVEYIELD_WORK_POOL") or WORK_POOL,
        base_env={**env, "LIVEYIELD_HOME": str(settings.home), "LIVEYIELD_DB_URL": settings.db_url},
        dask_workers=workers,
        dask_port=free_port(dask_serve.DASK_HOST) if workers else 0,
        dask_dashboard_port=free_port(dask_serve.DASK_HOST) if workers else 0,
        create_databases=tuple(u for u in (prefect_db, mlflow_db) if u in (derived_prefect, derived_mlflow)),
    )


def flow_env(plan: StackPlan, credentials: StackCredentials | None = None) -> dict[str, str]:
    """The environment of the worker and so of every flow run: the platform's settings, both
    servers and their credentials; none of the server-side secrets (server database, auth string)."""
    env = {
        k: v
        for k, v in plan.base_env.items()
        if not k.startswith(("PREFECT_SERVER_", "MLFLOW_AUTH_")) and k not in CREDENTIAL_VARS
    }
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    env.update(_quiet_env())
    env.update(
        {
            "PREFECT_API_URL": plan.prefect_api_url,
            "PREFECT_HOME": str(plan.home / "prefect"),
            "MLFLOW_TRACKING_URI": plan.mlflow_url,
            # Heartbeats let the zombie-run automation (tasks/ops/automations.py) crash orphans.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_s(plan.base_env)),
        }
    )
    if credentials is not None:
        env.update(credentials.env())
    return env


# What a server process keeps of the environment it is started from: the basics of running
# Python and reaching PostgreSQL, and its own library's settings. Not the warehouse URL, the
# pseudonym key or anything else the platform's flows need.
_SERVER_ENV_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"}
)
_SERVER_ENV_PREFIXES = ("LC_", "PG", "SSL_CERT_", "REQUESTS_CA_BUNDLE")


def server_env(plan: StackPlan, library: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a server process: the basics, ``library``'s own variables
    (``PREFECT_`` or ``MLFLOW_``, less its client ones), quiet defaults, then ``extra``."""
    client_vars = {"PREFECT_API_URL", "PREFECT_API_KEY", "MLFLOW_TRACKING_URI", *CREDENTIAL_VARS}
    env = {
        k: v
        for k, v in plan.base_env.items()
        if (k in _SERVER_ENV_NAMES or k.startswith((*_SERVER_ENV_PREFIXES, library))) and k not in client_vars
    }
    return {**env, **_quiet_env(), **extra}


def _quiet_env() -> dict[str, str]:
    # No telemetry (these machines may have no outbound network), and logs written as they come.
    return {**NO_TELEMETRY, "PYTHONUNBUFFERED": "1"}


# --- state: what was started ------------------------------------------------------------


def state_path(home: Path) -> Path:
    """The state file of the running stack."""
    return home / "run" / "stack.json"


def read_state(home: Path) -> dict[str, Any] | None:
    """The recorded stack, or None when nothing was started (or the file is unreadable)."""
    path = state_path(home)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _write_state(home: Path, state: dict[str, Any]) -> None:
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


def running_stack(home: Path) -> dict[str, Any] | None:
    """The recorded stack if its Prefect server process is still alive."""
    state = read_state(home)
    if state is None:
        return None
    server = state.get("processes", {}).get("prefect-server")
    return state if server and _is_ours(server) else None


def prefect_api_url(settings: Settings) -> str | None:
    """The Prefect API to use: PREFECT_API_URL, else the API of a stack `liveyield serve` started."""
    if settings.prefect_api_url:
        return settings.prefect_api_url
    state = running_stack(settings.home)
    return None if state is None else str(state["prefect_api_url"])


def _stack_credentials_for(url: str, key: str, settings: Settings) -> StackCredentials | None:
    """The credentials of the running stack when ``url`` is its ``key`` address (else None: they
    are never sent to another server)."""
    state = running_stack(settings.home)
    if state is None or str(state.get(key, "")).rstrip("/") != url.rstrip("/"):
        return None
    return read_credentials(settings.home)


def prefect_auth_string(api_url: str, settings: Settings | None = None) -> str | None:
    """The auth string to call ``api_url`` with: PREFECT_API_AUTH_STRING, else the running stack's
    when ``api_url`` is its API, else None."""
    if value := os.environ.get("PREFECT_API_AUTH_STRING"):
        return value
    found = _stack_credentials_for(api_url, "prefect_api_url", settings or get_settings())
    return None if found is None else found.prefect_auth_string


def prefect_client_settings(api_url: str, settings: Settings | None = None) -> dict[Any, Any]:
    """``temporary_settings`` updates for a Prefect client of ``api_url``: the URL, and the auth
    string when one is known (a client made inside a process that loaded its settings earlier
    would not see a variable set later)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    updates: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if auth := prefect_auth_string(api_url, settings):
        updates[PREFECT_API_AUTH_STRING] = auth
    return updates


def use_stack_credentials(settings: Settings | None = None) -> list[str]:
    """Let this process's clients into the running stack: sets the credential variables (those
    not already set) when the Prefect API or MLflow tracking URI in use is the stack's; returns
    the names set. Called by the command line before any client is made."""
    settings = settings or get_settings()
    wanted: dict[str, str] = {}
    api = prefect_api_url(settings)
    if api and (found := _stack_credentials_for(api, "prefect_api_url", settings)):
        wanted["PREFECT_API_AUTH_STRING"] = found.prefect_auth_string
    uri = settings.mlflow_tracking_uri
    if found := _stack_credentials_for(uri, "mlflow_url", settings):
        wanted |= {k: v for k, v in found.env().items() if k.startswith("MLFLOW_")}
    set_now = [name for name in wanted if not os.environ.get(name)]
    for name in set_now:
        os.environ[name] = wanted[name]
    return set_now


# --- processes ----------------------------------------------------------------------------


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (tells a live process from a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _is_ours(record: Mapping[str, Any]) -> bool:
    pid = int(record["pid"])
    if not alive(pid):
        return False
    ticks = record.get("start_ticks")
    return ticks is None or _start_ticks(pid) in (None, ticks)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren…), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _spawn(name: str, argv: list[str], env: Mapping[str, str], plan: StackPlan) -> dict[str, Any]:
    """Start a background process in a session of its own, logging to logs/<name>.log."""
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    log = plan.log_dir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=plan.root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the command that started it; stopped by pid
        )
    return {"pid": proc.pid, "start_ticks": _start_ticks(proc.pid), "log": str(log)}


def _tail(path: str | Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _write_mlflow_auth_config(plan: StackPlan) -> None:
    """The MLflow auth app's settings: users in a SQLite store under run/, no default access
    for anyone but the admin (whose name and password come from the environment).

    A checked credential is cached for a minute: the app otherwise runs its PBKDF2 password hash
    on every request, which made the served MLflow server one of the busiest processes of a
    training run. The stack has one server worker and one user whose password only `liveyield
    serve` sets, so the cache can never accept a credential that is no longer valid."""
    plan.mlflow_auth_config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{plan.mlflow_auth_db}\n"
        f"admin_username = {STACK_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )


def _wait_http(url: str, record: Mapping[str, Any], name: str, timeout_s: float) -> None:
    """Wait until ``url`` answers 200, failing early (with the log's tail) if the process died."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_ours(record):
            raise StackError(f"{name} exited during start-up; see {record['log']}:\n{_tail(record['log'])}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(1)
    raise StackError(f"{name} did not answer {url} within {timeout_s:.0f} s; see {record['log']}")


def _run(argv: list[str], env: Mapping[str, str], cwd: Path, what: str, timeout_s: float) -> str:
    try:
        out = subprocess.run(
            argv, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"{what} took longer than {timeout_s:.0f} s") from None
    if out.returncode != 0:
        text = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise StackError(f"{what} failed:\n" + "\n".join(text))
    return out.stdout


def ensure_postgres_database(url: str, admin_url: str) -> bool:
    """Create the database of ``url`` on its server (connecting with ``admin_url``) if missing."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name or not name.replace("_", "").isalnum():
        raise StackError(f"unusable database name {name!r} (letters, digits and _ only)")
    admin = make_url(admin_url).set(drivername="postgresql+psycopg")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
                return True
    except Exception as exc:
        raise StackError(
            f"cannot create database {name!r} on {redact_url(admin_url)} ({type(exc).__name__}); "
            "create it yourself or set LIVEYIELD_PREFECT_DB_URL / LIVEYIELD_MLFLOW_DB_URL"
        ) from None
    finally:
        engine.dispose()
    return False


def _work_pool_has_worker(plan: StackPlan, credentials: StackCredentials) -> bool:
    import httpx

    user, _, password = credentials.prefect_auth_string.partition(":")
    try:
        response = httpx.post(
            f"{plan.prefect_api_url}/work_pools/{plan.work_pool}/workers/filter",
            json={},
            auth=(user, password),
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and any(w.get("status") == "ONLINE" for w in response.json())


def start_stack(
    plan: StackPlan,
    *,
    deploy: bool = True,
    simulate: bool = False,
    say: Callable[[str], None] = lambda _msg: None,
    timeout_s: float = START_TIMEOUT_S,
) -> dict[str, Any]:
    """Start the servers, the work pool, the deployments and a worker; returns the recorded state.

    ``simulate`` also deploys simulate-daily (infra/prefect-simulate.yaml), which keeps the
    simulated platform of the home receiving data; refused when the home holds none."""
    if simulate and deploy:
        from tasks.simulate.platform import STATE_FILE

        if not (plan.home / STATE_FILE).exists():
            raise StackError(
                f"--simulate: no simulated platform under {plan.home}; run `liveyield simulate` or "
                "`liveyield demo` first"
            )
    if running_stack(plan.home) is not None:
        raise StackError(f"a stack is already running from {plan.home} (run `liveyield stop` first)")
    for port, option in ((plan.prefect_port, "--prefect-port"), (plan.mlflow_port, "--mlflow-port")):
        if not port_is_free(plan.host, port):
            raise StackError(
                f"port {port} on {plan.host} is in use: pass another {option} (0: any free port)"
            )
    for port in (plan.dask_port, plan.dask_dashboard_port) if plan.dask_workers else ():
        if not port_is_free(dask_serve.DASK_HOST, port):
            raise StackError(f"port {port} on {dask_serve.DASK_HOST} (for Dask) was taken meanwhile: retry")
    for directory in (plan.run_dir, plan.log_dir, plan.home / "prefect", plan.artifact_root):
        directory.mkdir(parents=True, exist_ok=True)
    credentials, made = ensure_credentials(plan.home)
    if made:  # a user store from earlier credentials would keep the old admin password
        plan.mlflow_auth_db.unlink(missing_ok=True)
    _write_mlflow_auth_config(plan)
    for url in plan.create_databases:
        if ensure_postgres_database(url, plan.base_env["LIVEYIELD_DB_URL"]):
            say(f"created database {redact_url(url)}")
    if importlib.util.find_spec("flask_wtf") is None:
        raise StackError("MLflow's basic-auth app needs Flask-WTF: pip install 'mlflow[auth]'")
    state: dict[str, Any] = {
        "home": str(plan.home),
        "prefect_ui_url": plan.prefect_ui_url,
        "prefect_api_url": plan.prefect_api_url,
        "mlflow_url": plan.mlflow_url,
        "prefect_database": redact_url(plan.prefect_db_url),
        "mlflow_backend_store": redact_url(plan.mlflow_backend_uri),
        "work_pool": plan.work_pool,
        "credentials_file": str(credentials_path(plan.home)),
        "processes": {},
    }
    if plan.dask_workers:
        state |= {
            "dask_scheduler_address": plan.dask_address,
            "dask_dashboard_url": f"{plan.dask_http_url}/status",
            "dask_workers": plan.dask_workers,
        }
    processes: dict[str, Any] = state["processes"]
    python = sys.executable
    try:
        prefect_env = server_env(
            plan,
            "PREFECT_",
            {
                "PREFECT_HOME": str(plan.home / "prefect"),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": plan.prefect_db_url,
                "PREFECT_SERVER_API_AUTH_STRING": credentials.prefect_auth_string,
                "PREFECT_UI_API_URL": plan.prefect_api_url,
            },
        )
        processes["prefect-server"] = _spawn(
            "prefect-server",
            [
                python,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                plan.host,
                "--port",
                str(plan.prefect_port),
            ],
            prefect_env,
            plan,
        )
        _write_state(plan.home, state)
        mlflow_env = server_env(
            plan,
            "MLFLOW_",
            {
                "MLFLOW_BACKEND_STORE_URI": plan.mlflow_backend_uri,
                # No GenAI job runner (a pool of consumer processes this platform does not use).
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "MLFLOW_AUTH_CONFIG_PATH": str(plan.mlflow_auth_config),
                "MLFLOW_AUTH_ADMIN_USERNAME": credentials.mlflow_username,
                "MLFLOW_AUTH_ADMIN_PASSWORD": credentials.mlflow_password,
                # Signs the UI's CSRF tokens; one server, so a fresh one per start will do.
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
            },
        )
        processes["mlflow-server"] = _spawn(
            "mlflow-server",
            [
                python,
                "-m",
                "mlflow",
                "server",
                "--host",
                plan.host,
                "--port",
                str(plan.mlflow_port),
                "--app-name",
                "basic-auth",
                "--workers",
                "1",
                "--artifacts-destination",
                str(plan.artifact_root),
            ],
            mlflow_env,
            plan,
        )
        _write_state(plan.home, state)
        env = flow_env(plan, credentials)
        if plan.dask_workers:
            for name in (DASK_ADDRESS_VAR, DASK_WORKERS_VAR):
                if plan.base_env.get(name):
                    say(f"{name} is set: the worker's flow runs use the stack's Dask cluster instead")
            _spawn_cluster(plan, env, processes)
            _write_state(plan.home, state)
        say(f"starting Prefect server on {plan.prefect_ui_url} and MLflow server on {plan.mlflow_url}")
        _wait_http(f"{plan.prefect_api_url}/health", processes["prefect-server"], "Prefect server", timeout_s)
        _wait_http(f"{plan.mlflow_url}/health", processes["mlflow-server"], "MLflow server", timeout_s)
        if plan.dask_workers:
            say(f"waiting for the Dask scheduler at {plan.dask_address} and {plan.dask_workers} workers")
            _wait_cluster(plan, processes, timeout_s)
        _run(
            [
                python,
                "-m",
                "prefect",
                "work-pool",
                "create",
                plan.work_pool,
                "--type",
                "process",
                "--overwrite",
            ],
            env,
            plan.root,
            f"creating work pool {plan.work_pool}",
            timeout_s,
        )
        ensure_automations(
            plan.prefect_api_url,
            heartbeat=heartbeat_s(plan.base_env),
            auth_string=credentials.prefect_auth_string,
            say=say,
        )
        for project_file in ([PREFECT_FILE, SIMULATE_FILE] if simulate else [PREFECT_FILE]) if deploy else []:
            say(f"deploying {project_file.relative_to(ROOT)}")
            _run(
                [
                    python,
                    "-m",
                    "prefect",
                    "--no-prompt",
                    "deploy",
                    "--prefect-file",
                    str(project_file.relative_to(ROOT)),
                    "--all",
                ],
                env,
                plan.root,
                "prefect deploy",
                timeout_s * 2,
            )
        processes["worker"] = _spawn(
            "worker",
            [
                python,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                plan.work_pool,
                "--type",
                "process",
                "--name",
                f"liveyield-{socket.gethostname()}",
            ],
            dask_serve.prefect_worker_env(env, plan.dask_address) if plan.dask_address else env,
            plan,
        )
        _write_state(plan.home, state)
        deadline = time.monotonic() + timeout_s
        while not _work_pool_has_worker(plan, credentials):
            if not _is_ours(processes["worker"]):
                log = processes["worker"]["log"]
                raise StackError(f"the worker exited during start-up; see {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise StackError(f"the worker did not come online; see {processes['worker']['log']}")
            time.sleep(1)
    except BaseException:
        stop_stack(plan.home)
        raise
    return state


def _spawn_cluster(plan: StackPlan, env: Mapping[str, str], processes: dict[str, Any]) -> None:
    """Start the Dask scheduler and workers (recorded in ``processes``); the workers retry
    until the scheduler listens, so both start at once, beside the servers."""
    python = sys.executable
    scheduler_env = server_env(
        plan, "DASK_", {"PYTHONPATH": dask_serve.code_path(plan.root, plan.base_env.get("PYTHONPATH"))}
    )
    processes["dask-scheduler"] = _spawn(
        "dask-scheduler",
        dask_serve.scheduler_argv(python, plan.dask_port, plan.dask_dashboard_port),
        scheduler_env,
        plan,
    )
    scratch = plan.home / "dask"
    scratch.mkdir(parents=True, exist_ok=True)
    processes["dask-workers"] = _spawn(
        "dask-workers",
        dask_serve.worker_argv(python, plan.dask_port, plan.dask_workers, scratch),
        dask_serve.worker_env(env, plan.root),
        plan,
    )


def _wait_cluster(plan: StackPlan, processes: Mapping[str, Any], timeout_s: float) -> None:
    """Wait for the scheduler to answer with every worker registered (else a StackError naming which)."""
    assert plan.dask_http_url is not None
    dask_serve.wait_for_cluster(
        plan.dask_http_url,
        plan.dask_workers,
        {name: processes[name] for name in ("dask-scheduler", "dask-workers")},
        running=_is_ours,
        tail=_tail,
        timeout_s=timeout_s,
        error=StackError,
    )


def _terminate(record: Mapping[str, Any], grace_s: float) -> bool:
    """SIGTERM a recorded process and everything below it, SIGKILL what outlives ``grace_s``."""
    if not _is_ours(record):
        return False
    pid = int(record["pid"])
    tree = [pid, *descendants(pid)]
    for target in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.2)
    # Children started meanwhile (a flow run) and survivors get SIGKILL.
    for target in [*tree, *descendants(pid)]:
        if alive(target):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it when this process is its parent (tests)
    return True


def stop_stack(home: Path, grace_s: float = 20.0) -> list[str]:
    """Stop the processes `start_stack` recorded (worker first); returns the names stopped."""
    state = read_state(home)
    if state is None:
        return []
    stopped = []
    processes = state.get("processes", {})
    for name in ("worker", "dask-workers", "dask-scheduler", "mlflow-server", "prefect-server"):
        record = processes.get(name)
        if record and _terminate(record, grace_s):
            stopped.append(name)
    state_path(home).unlink(missing_ok=True)
    return stopped


def stack_pids(state: Mapping[str, Any]) -> list[int]:
    """The pids a state file records (for checks that nothing is left behind)."""
    return [int(p["pid"]) for p in state.get("processes", {}).values()]
