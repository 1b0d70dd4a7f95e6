"""The Dask cluster of `liveyield serve --dask-workers N` without the servers: its plan, the
environments of its processes, and a real scheduler whose workers do not all come.

The whole stack with a cluster, a fanned-out deployment run and `liveyield stop` is
tests/ops/test_servers_dask.py (slow).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from flows.cli import main
from tasks.ops import dask_serve, servers
from tasks.settings import DASK_ADDRESS_VAR, DASK_WORKERS_VAR, get_settings

PG = "postgresql+psycopg://liveyield:s3cret@db.example:5432/warehouse"


def _plan(home: Path, env: dict[str, str], **kwargs: object) -> servers.StackPlan:
    settings = get_settings({"LIVEYIELD_HOME": str(home), "LIVEYIELD_DB_URL": PG})
    return servers.plan_stack(settings, env, prefect_port=0, mlflow_port=0, **kwargs)  # type: ignore[arg-type]


def test_no_cluster_unless_asked(tmp_path: Path) -> None:
    """`make serve` stays as it was: no Dask processes, flow runs keep the environment's settings."""
    plan = _plan(tmp_path, {DASK_WORKERS_VAR: "3"})
    assert plan.dask_workers == 0 and plan.dask_address is None and plan.dask_http_url is None
    assert servers.flow_env(plan)[DASK_WORKERS_VAR] == "3"  # the per-run local cluster, as before


def test_the_cluster_binds_to_loopback_on_free_ports_whatever_the_host(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {dask_serve.SERVE_WORKERS_VAR: "3"}, host="0.0.0.0")
    assert plan.dask_workers == 3
    assert len({plan.prefect_port, plan.mlflow_port, plan.dask_port, plan.dask_dashboard_port}) == 4
    assert plan.dask_address == f"tcp://127.0.0.1:{plan.dask_port}"
    assert (
        _plan(tmp_path, {dask_serve.SERVE_WORKERS_VAR: "3"}, dask_workers=1).dask_workers == 1
    )  # option wins
    argv = dask_serve.worker_argv("python", plan.dask_port, 3, tmp_path)
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--nthreads") + 1] == "1"
    assert argv[argv.index("--nworkers") + 1] == "3" and argv[argv.index("--memory-limit") + 1] == "0.3333"
    scheduler = dask_serve.scheduler_argv("python", plan.dask_port, plan.dask_dashboard_port)
    assert scheduler[scheduler.index("--host") + 1] == "127.0.0.1"
    assert scheduler[scheduler.index("--dashboard-address") + 1] == f"127.0.0.1:{plan.dask_dashboard_port}"


@pytest.mark.parametrize(("value", "message"), [("two", "expected a whole number"), ("-1", "0 or more")])
def test_a_bad_worker_count_is_refused_naming_the_variable(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"{dask_serve.SERVE_WORKERS_VAR}.*{message}"):
        _plan(tmp_path, {dask_serve.SERVE_WORKERS_VAR: value})


def test_serve_refuses_a_negative_worker_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path))
    assert main(["serve", "--dask-workers", "-2", "--prefect-port", "0", "--mlflow-port", "0"]) == 2
    assert servers.read_state(tmp_path) is None


def test_workers_get_the_flows_environment_and_the_prefect_worker_the_address(tmp_path: Path) -> None:
    env = {"LIVEYIELD_PSEUDONYM_KEY": "k", "PATH": "/usr/bin", DASK_ADDRESS_VAR: "tcp://elsewhere:8786"}
    plan = _plan(tmp_path, env, dask_workers=2)
    credentials, _ = servers.ensure_credentials(tmp_path)
    flows = servers.flow_env(plan, credentials)
    workers = dask_serve.worker_env(flows, tmp_path)
    assert workers["PYTHONPATH"].split(os.pathsep)[:2] == [str(tmp_path / "flows"), str(tmp_path)]
    assert workers["LIVEYIELD_DB_URL"] == PG and workers["LIVEYIELD_HOME"] == str(tmp_path)
    assert workers["PREFECT_API_URL"] == plan.prefect_api_url  # task runs report to the stack
    assert workers["PREFECT_API_AUTH_STRING"] == credentials.prefect_auth_string
    assert not {DASK_ADDRESS_VAR, DASK_WORKERS_VAR} & set(workers)
    assert plan.dask_address is not None
    prefect_worker = dask_serve.prefect_worker_env(flows, plan.dask_address)
    assert prefect_worker[DASK_ADDRESS_VAR] == plan.dask_address  # the stack's cluster wins
    scheduler = servers.server_env(plan, "DASK_", {})
    assert not {"LIVEYIELD_DB_URL", "LIVEYIELD_PSEUDONYM_KEY", *servers.CREDENTIAL_VARS} & set(scheduler)


def test_a_missing_worker_is_named_and_stop_ends_the_cluster(tmp_path: Path) -> None:
    """A real scheduler and one worker where two were asked for: the wait fails saying how many
    came; the workers' process killed: it fails naming them; `stop` ends what was recorded."""
    plan = _plan(tmp_path, {}, dask_workers=1)
    processes: dict[str, dict[str, object]] = {}
    servers._spawn_cluster(plan, servers.flow_env(plan), processes)
    servers._write_state(tmp_path, {"processes": processes})
    try:
        servers._wait_cluster(plan, processes, timeout_s=120)  # one worker: up
        two = dataclasses.replace(plan, dask_workers=2)
        with pytest.raises(servers.StackError, match="only 1 of 2 Dask workers registered"):
            servers._wait_cluster(two, processes, timeout_s=3)
        tree = [int(str(r["pid"])) for r in processes.values()]
        tree += [p for pid in list(tree) for p in servers.descendants(pid)]
        assert servers._terminate(processes["dask-workers"], grace_s=10)
        with pytest.raises(servers.StackError, match="the Dask workers exited during start-up"):
            servers._wait_cluster(plan, processes, timeout_s=30)
    finally:
        stopped = servers.stop_stack(tmp_path)
    assert stopped == ["dask-scheduler"]  # the workers were already gone
    assert not any(servers.alive(pid) for pid in tree)
