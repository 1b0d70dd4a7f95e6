"""The Dask cluster `liveyield serve --dask-workers N` runs beside the Prefect worker.

A ``dask scheduler`` and one ``dask worker --nworkers N`` process (N single-threaded worker
processes under their nannies) start as background processes of the stack (tasks/ops/servers.py
spawns, records and stops them); the Prefect worker then hands its flow runs
``LIVEYIELD_DASK_ADDRESS`` of that scheduler, so deployment runs fan out on a cluster that
outlives them instead of starting one per run (tasks/ops/cluster.py).

Both listen on 127.0.0.1 only, whatever ``--host`` the servers bind: a Dask scheduler runs any
code a client sends it and asks for no credentials, so it must not be reachable from other
machines. A cluster spanning machines is one the operator runs (with TLS) and names with
``LIVEYIELD_DASK_ADDRESS``.

The workers get the flow runs' own environment (warehouse URL, home, Prefect API and its
credentials): a fanned-out task checks that it writes to the flow's warehouse
(:func:`tasks.ops.cluster.check_warehouse`), and reports its state to the flow's Prefect API.
The scheduler gets only the basics (it unpickles task graphs, so it needs the code on its
path, but no database URL or secret). Each worker is given an equal share of the machine's
memory, so N of them together never claim more than it has.

Both get the flows' folder on their path, ahead of the repository root: a deployment run loads
its entrypoint file (``flows/ingest_validate.py``) as a top-level module named after the file, so
what it submits refers to ``ingest_validate``, not ``flows.ingest_validate``; a scheduler or worker
without that folder on its path cannot unpickle it ("Error during deserialization of the task
graph"). An existing cluster needs the same (README, Running on Dask).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tasks.settings import DASK_ADDRESS_VAR, DASK_WORKERS_VAR, whole_number

DASK_HOST = "127.0.0.1"  # never beyond loopback (see the module note)
SERVE_WORKERS_VAR = "LIVEYIELD_SERVE_DASK_WORKERS"


def serve_workers(given: int | None, env: Mapping[str, str]) -> int:
    """How many Dask workers `serve` starts: ``--dask-workers``, else LIVEYIELD_SERVE_DASK_WORKERS,
    else 0 (none: flow runs keep the Dask settings of the environment, in-process by default)."""
    value = given if given is not None else whole_number(env, SERVE_WORKERS_VAR, minimum=0) or 0
    if value < 0:
        raise ValueError(f"--dask-workers / {SERVE_WORKERS_VAR}: expected 0 or more workers, got {value}")
    return value


def scheduler_address(port: int) -> str:
    """The scheduler's address, as LIVEYIELD_DASK_ADDRESS takes it."""
    return f"tcp://{DASK_HOST}:{port}"


def http_url(dashboard_port: int) -> str:
    """The scheduler's HTTP endpoints (health, JSON counts; the dashboard pages where bokeh is installed)."""
    return f"http://{DASK_HOST}:{dashboard_port}"


def scheduler_argv(python: str, port: int, dashboard_port: int) -> list[str]:
    """The ``dask scheduler`` command line (no secret in it)."""
    return [
        python,
        "-m",
        "dask",
        "scheduler",
        "--host",
        DASK_HOST,
        "--port",
        str(port),
        "--dashboard-address",
        f"{DASK_HOST}:{dashboard_port}",
    ]


def worker_argv(python: str, port: int, workers: int, local_directory: Path) -> list[str]:
    """``dask worker``'s command line: ``workers`` processes of one thread, equal shares of memory."""
    return [
        python,
        "-m",
        "dask",
        "worker",
        scheduler_address(port),
        "--nworkers",
        str(workers),
        "--nthreads",
        "1",
        "--memory-limit",
        f"{1 / workers:.4f}",  # a fraction of the machine's memory (Dask reads a value <= 1 so)
        "--host",
        DASK_HOST,
        "--no-dashboard",
        "--local-directory",
        str(local_directory),
    ]


def code_path(root: Path, inherited: str | None) -> str:
    """PYTHONPATH for the scheduler and the workers: the flows' folder and the repository root
    (see the module note), then what the environment had."""
    return os.pathsep.join([str(root / "flows"), str(root), *([inherited] if inherited else [])])


def worker_env(flow_env: Mapping[str, str], root: Path) -> dict[str, str]:
    """The workers' environment: the flow runs' own, less the Dask settings (a task on a worker
    never starts or joins another cluster), with the code on the path."""
    env = {k: v for k, v in flow_env.items() if k not in (DASK_ADDRESS_VAR, DASK_WORKERS_VAR)}
    return {**env, "PYTHONPATH": code_path(root, flow_env.get("PYTHONPATH"))}


def prefect_worker_env(flow_env: Mapping[str, str], address: str) -> dict[str, str]:
    """The Prefect worker's environment when the stack runs a cluster: its flow runs fan out on it."""
    env = {k: v for k, v in flow_env.items() if k != DASK_WORKERS_VAR}
    return {**env, DASK_ADDRESS_VAR: address}


def registered_workers(url: str) -> int | None:
    """Workers the scheduler at ``url`` (its HTTP endpoints) knows; None when it does not answer."""
    import httpx

    try:
        response = httpx.get(f"{url}/json/counts.json", timeout=5)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return int(response.json()["workers"])
    return None


def wait_for_cluster(
    url: str,
    workers: int,
    processes: Mapping[str, Mapping[str, Any]],
    *,
    running: Callable[[Mapping[str, Any]], bool],
    tail: Callable[[str], str],
    timeout_s: float,
    error: Callable[[str], Exception],
) -> None:
    """Wait until the scheduler answers at ``url`` with ``workers`` workers registered.

    ``processes`` maps "dask-scheduler" and "dask-workers" to their records; a process that
    exits fails the wait at once with its log's tail. ``error`` makes the exception to raise.
    """
    deadline = time.monotonic() + timeout_s
    seen: int | None = None
    while time.monotonic() < deadline:
        for name, record in processes.items():
            if not running(record):
                what = "the Dask scheduler" if name == "dask-scheduler" else "the Dask workers"
                raise error(f"{what} exited during start-up; see {record['log']}:\n{tail(record['log'])}")
        seen = registered_workers(url)
        if seen is not None and seen >= workers:
            return
        time.sleep(1)
    if seen is None:
        log = processes["dask-scheduler"]["log"]
        raise error(f"the Dask scheduler did not answer {url} within {timeout_s:.0f} s; see {log}")
    log = processes["dask-workers"]["log"]
    raise error(
        f"only {seen} of {workers} Dask workers registered with the scheduler within {timeout_s:.0f} s; "
        f"see {log}"
    )
