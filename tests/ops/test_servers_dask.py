"""`liveyield serve --dask-workers 2` on real processes: a Dask scheduler and two workers beside the
Prefect worker, a deployment run fanned out on them, and `liveyield stop` ending them.

One small simulated platform (60 users, one day, landed but not loaded) in a temporary home,
served on free loopback ports (warehouse on PostgreSQL when usable, else SQLite; see
tests/ops/test_servers.py's ``served_stack``). The ingest-validate deployment run goes through
the Prefect API, as a schedule would start it; the Dask workers' own counters say which of them
ran its tasks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tasks import landing
from tasks.db import make_engine
from tasks.ops import remote
from tasks.ops.servers import alive, descendants, read_state
from tasks.schema import validation_runs
from tasks.settings import DASK_ADDRESS_VAR, get_settings
from tests.ops.test_servers import _cli, served_stack

pytestmark = pytest.mark.slow

WORKERS = 2
PLATFORM = ["--users", "60", "--streamers", "6", "--days", "1", "--seed", "11", "--no-ingest"]


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)


def test_serve_runs_a_dask_cluster_that_deployment_runs_fan_out_on(tmp_path: Path) -> None:
    from distributed import Client

    def _executed(dask_worker: Any) -> int:
        """Tasks this Dask worker has run (through ``Client.run``; defined here, it travels by value)."""
        return int(dask_worker.state.executed_count)

    home = tmp_path / "home"
    with served_stack(
        home, "ly_dask", simulate=PLATFORM, serve_args=["--dask-workers", str(WORKERS)]
    ) as stack:
        state, out = stack.state, stack.outputs[0][1]
        address, dashboard = state["dask_scheduler_address"], state["dask_dashboard_url"]
        assert address.startswith("tcp://127.0.0.1:") and dashboard.startswith("http://127.0.0.1:")
        assert address in out and dashboard in out.replace("\n", "")
        processes = state["processes"]
        workers_tree = descendants(processes["dask-workers"]["pid"])

        with Client(address, timeout=30) as client:
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == WORKERS
            pids = client.run(os.getpid)
            assert set(pids.values()) <= set(workers_tree)  # the workers are those serve started
            before = client.run(_executed)

            # The workers see the flows' warehouse and home; the scheduler sees neither.
            for pid in pids.values():
                environ = _environ(pid)
                assert environ["LIVEYIELD_DB_URL"] == stack.warehouse_url
                assert environ["LIVEYIELD_HOME"] == str(home.resolve())
                assert DASK_ADDRESS_VAR not in environ
            scheduler = _environ(processes["dask-scheduler"]["pid"])
            assert not scheduler.keys() & {
                "LIVEYIELD_DB_URL",
                "LIVEYIELD_PSEUDONYM_KEY",
                "PREFECT_API_AUTH_STRING",
            }
            assert _environ(processes["worker"]["pid"])[DASK_ADDRESS_VAR] == address

            tables = sorted(landing.pending(get_settings(stack.env).landing_dir, None, None))
            assert len(tables) >= WORKERS
            run_id, _ = remote.trigger(stack.api, "ingest-validate/ingest-validate-daily", {})
            assert remote.follow(stack.api, run_id, timeout_s=600) == "Completed"
            after = client.run(_executed)

        # One task per table with landed batches, every one of them run on the served workers.
        assert set(after) == set(before)
        assert sum(after.values()) - sum(before.values()) == len(tables), (before, after)
        engine = make_engine(stack.warehouse_url)
        try:
            with engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(validation_runs)).scalar_one() > 0
        finally:
            engine.dispose()

        cluster = [
            pid
            for name in ("dask-scheduler", "dask-workers")
            for pid in (processes[name]["pid"], *descendants(processes[name]["pid"]))
        ]
        assert len(cluster) >= 2 + WORKERS  # scheduler, the workers' parent, a nanny and a worker each
        stopped = _cli(stack.env, "stop", timeout=180)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "dask-workers" in stopped.stdout and "dask-scheduler" in stopped.stdout
        assert [pid for pid in cluster if alive(pid)] == []
        assert read_state(home) is None
