"""tasks.ops.servers without servers: where each store goes, pid bookkeeping, stop, the CLI around it."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main
from tasks.ops import servers
from tasks.settings import Settings, get_settings

PG = "postgresql+psycopg://liveyield:s3cret@db.example:5432/warehouse?options=-csearch_path%3Dx"


def _settings(home: Path, db_url: str | None = None) -> Settings:
    env = {"LIVEYIELD_HOME": str(home)} | ({"LIVEYIELD_DB_URL": db_url} if db_url else {})
    return get_settings(env)


def test_sqlite_default_keeps_every_store_under_home(tmp_path: Path) -> None:
    plan = servers.plan_stack(_settings(tmp_path), {}, prefect_port=0, mlflow_port=0)
    assert plan.prefect_db_url == f"sqlite+aiosqlite:///{tmp_path / 'prefect' / 'prefect.db'}"
    assert plan.mlflow_backend_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"  # the embedded default's store
    assert plan.create_databases == ()
    assert plan.prefect_port != plan.mlflow_port and plan.prefect_port > 0
    assert plan.prefect_api_url == f"http://127.0.0.1:{plan.prefect_port}/api"


def test_postgresql_warehouse_gives_each_server_its_own_database(tmp_path: Path) -> None:
    plan = servers.plan_stack(_settings(tmp_path, PG), {}, prefect_port=4300, mlflow_port=5300)
    assert plan.prefect_db_url == "postgresql+asyncpg://liveyield:s3cret@db.example:5432/warehouse_prefect"
    assert plan.mlflow_backend_uri == "postgresql+psycopg://liveyield:s3cret@db.example:5432/warehouse_mlflow"
    assert set(plan.create_databases) == {plan.prefect_db_url, plan.mlflow_backend_uri}
    assert (plan.prefect_port, plan.mlflow_port) == (4300, 5300)
    # The worker's flows get the warehouse and both servers; the server database URL stays out.
    env = servers.flow_env(plan)
    assert env["LIVEYIELD_DB_URL"] == PG and env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5300"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4300/api"
    assert not any("DATABASE_CONNECTION_URL" in key for key in env)


def test_overrides_from_the_environment(tmp_path: Path) -> None:
    env = {
        "LIVEYIELD_PREFECT_DB_URL": "postgresql+asyncpg://p@h/prefect",
        "LIVEYIELD_MLFLOW_DB_URL": "postgresql+psycopg://p@h/mlflow",
        "LIVEYIELD_PREFECT_PORT": "4444",
        "LIVEYIELD_MLFLOW_PORT": "5555",
        "LIVEYIELD_WORK_POOL": "pool-b",
    }
    plan = servers.plan_stack(_settings(tmp_path, PG), env)
    assert plan.prefect_db_url == env["LIVEYIELD_PREFECT_DB_URL"]
    assert plan.mlflow_backend_uri == env["LIVEYIELD_MLFLOW_DB_URL"]
    assert (plan.prefect_port, plan.mlflow_port, plan.work_pool) == (4444, 5555, "pool-b")
    assert plan.create_databases == ()  # given databases are the operator's to create


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        plan = servers.plan_stack(_settings(tmp_path), {}, prefect_port=port, mlflow_port=0)
        with pytest.raises(servers.StackError, match=f"port {port} .* in use.*--prefect-port"):
            servers.start_stack(plan)
    assert servers.read_state(tmp_path) is None


# A parent that starts a child and both sleep: a stand-in for a server and its workers.
TREE = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); time.sleep(300)"
)


def test_stop_ends_the_recorded_processes_and_their_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path))
    plan = servers.plan_stack(get_settings(), {}, prefect_port=0, mlflow_port=0)
    record = servers._spawn("prefect-server", [sys.executable, "-c", TREE], {}, plan)
    state = {"prefect_api_url": plan.prefect_api_url, "processes": {"prefect-server": record}}
    servers._write_state(tmp_path, state)
    deadline = time.monotonic() + 30
    while not servers.descendants(record["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = [record["pid"], *servers.descendants(record["pid"])]
    assert len(tree) == 2
    # A recorded, live server is what `retrain` talks to when PREFECT_API_URL is unset.
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert servers.prefect_api_url(get_settings()) == plan.prefect_api_url
    assert main(["serve"]) == 1 and "already running" in capsys.readouterr().err

    assert main(["stop"]) == 0
    assert "stopped prefect-server" in capsys.readouterr().out
    assert not any(servers.alive(pid) for pid in tree)
    assert servers.read_state(tmp_path) is None and servers.prefect_api_url(get_settings()) is None
    assert main(["stop"]) == 0 and "nothing to stop" in capsys.readouterr().out


def test_a_reused_pid_is_not_stopped(tmp_path: Path) -> None:
    """A stale state file must not kill whatever process got the pid since."""
    me = {"pid": os.getpid(), "start_ticks": -1, "log": ""}
    servers._write_state(tmp_path, {"processes": {"worker": me}})
    assert servers.stop_stack(tmp_path) == []


def test_an_unreachable_database_fails_without_showing_its_password(tmp_path: Path) -> None:
    unreachable = "postgresql+psycopg://liveyield:s3cret@127.0.0.1:1/warehouse?connect_timeout=2"
    plan = servers.plan_stack(_settings(tmp_path, unreachable), {}, prefect_port=0, mlflow_port=0)
    with pytest.raises(servers.StackError, match="cannot create database 'warehouse_prefect'") as failed:
        servers.start_stack(plan, timeout_s=5)
    assert "s3cret" not in str(failed.value) and "***" in str(failed.value)
    assert servers.read_state(tmp_path) is None


@pytest.mark.parametrize("args", [["serve"], ["stop"], ["retrain"]], ids=lambda a: a[0])
def test_new_commands_have_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_retrain_rejects_an_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["retrain", "no_such_model"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and "unknown model" in err


# --- who gets in: bind address and credentials ------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_binds_need_no_flag(host: str) -> None:
    assert servers.bind_warning(host, allow_remote=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "build-box.example"])
def test_a_wider_bind_needs_the_flag_and_warns(host: str) -> None:
    with pytest.raises(servers.StackError, match="--allow-remote"):
        servers.bind_warning(host, allow_remote=False)
    warning = servers.bind_warning(host, allow_remote=True)
    assert warning is not None and warning.startswith("warning:") and host in warning


def test_serve_refuses_a_wide_bind_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path))
    assert main(["serve", "--host", "0.0.0.0", "--prefect-port", "0", "--mlflow-port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert servers.read_state(tmp_path) is None and not servers.credentials_path(tmp_path).exists()


def test_credentials_are_made_once_owner_only_and_reused(tmp_path: Path) -> None:
    made, new = servers.ensure_credentials(tmp_path)
    path = servers.credentials_path(tmp_path)
    assert new and path.stat().st_mode & 0o777 == 0o600
    user, _, password = made.prefect_auth_string.partition(":")
    assert user and len(password) >= 32 and len(made.mlflow_password) >= 32
    assert password != made.mlflow_password  # one secret per server
    assert password not in repr(made) and made.mlflow_password not in repr(made)  # safe to log
    text = path.read_text()
    again, new = servers.ensure_credentials(tmp_path)
    assert not new and again == made and path.read_text() == text
    assert servers.read_credentials(tmp_path) == made
    # A file copied in with wider rights is tightened, not replaced.
    path.chmod(0o644)
    assert servers.ensure_credentials(tmp_path) == (made, False)
    assert path.stat().st_mode & 0o777 == 0o600
    # Another home gets its own.
    assert servers.ensure_credentials(tmp_path / "other")[0] != made


def test_workers_get_the_credentials_servers_only_their_own_environment(tmp_path: Path) -> None:
    key = "k3y-not-for-servers"
    env = {
        "LIVEYIELD_PSEUDONYM_KEY": key,
        "PATH": "/usr/bin",
        "PGPASSFILE": "/somewhere/.pgpass",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_API_URL": "http://elsewhere/api",
        "MLFLOW_TRACKING_URI": "http://elsewhere",
        "AWS_SECRET_ACCESS_KEY": "not-for-servers",
    }
    plan = servers.plan_stack(_settings(tmp_path, PG), env, prefect_port=4300, mlflow_port=5300)
    credentials, _ = servers.ensure_credentials(tmp_path)
    worker = servers.flow_env(plan, credentials)
    assert worker["PREFECT_API_AUTH_STRING"] == credentials.prefect_auth_string
    assert worker["MLFLOW_TRACKING_PASSWORD"] == credentials.mlflow_password
    assert worker["LIVEYIELD_PSEUDONYM_KEY"] == key  # flows pseudonymise
    for library in ("PREFECT_", "MLFLOW_"):
        server = servers.server_env(plan, library, {})
        assert set(server) >= {"PATH", "PGPASSFILE"}
        assert not {"LIVEYIELD_DB_URL", "LIVEYIELD_PSEUDONYM_KEY", "AWS_SECRET_ACCESS_KEY"} & set(server)
        assert not {"PREFECT_API_URL", "MLFLOW_TRACKING_URI", *servers.CREDENTIAL_VARS} & set(server)
        assert all(key not in value and PG not in value for value in server.values())
    assert "PREFECT_LOGGING_LEVEL" in servers.server_env(plan, "PREFECT_", {})
    assert "PREFECT_LOGGING_LEVEL" not in servers.server_env(plan, "MLFLOW_", {})


def test_clients_use_the_credentials_of_the_stack_they_talk_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line sends the running stack's credentials to that stack, and to no other server."""
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", *servers.CREDENTIAL_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path))
    plan = servers.plan_stack(get_settings(), {}, prefect_port=0, mlflow_port=0)
    credentials, _ = servers.ensure_credentials(tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]  # stands in for the server
    record = servers._spawn("prefect-server", sleeper, {}, plan)
    state = {"prefect_api_url": plan.prefect_api_url, "mlflow_url": plan.mlflow_url}
    servers._write_state(tmp_path, {**state, "processes": {"prefect-server": record}})
    try:
        assert servers.prefect_auth_string(plan.prefect_api_url) == credentials.prefect_auth_string
        assert servers.prefect_auth_string("http://127.0.0.1:1/api") is None  # another server
        monkeypatch.setenv("MLFLOW_TRACKING_URI", plan.mlflow_url)
        assert sorted(servers.use_stack_credentials()) == sorted(servers.CREDENTIAL_VARS)
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == credentials.mlflow_password
        assert servers.use_stack_credentials() == []  # set ones are left alone
        monkeypatch.setenv("PREFECT_API_AUTH_STRING", "someone:else")  # the operator's own wins
        assert servers.prefect_auth_string(plan.prefect_api_url) == "someone:else"
    finally:
        for name in servers.CREDENTIAL_VARS:
            monkeypatch.delenv(name, raising=False)
        servers.stop_stack(tmp_path)
    assert servers.prefect_auth_string(plan.prefect_api_url) is None  # nothing runs: nothing to send
