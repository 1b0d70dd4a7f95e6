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
