"""A Dask worker SIGKILLed in the middle of a feature build (test plan R3, R9: the Dask half).

Two homes on one backend, fed the same simulated platform (tests/ops/test_cluster.py's fixture):
one built in-process, the clean run; the other built on a 2-worker local cluster of the test's
own, one of whose worker processes is killed with SIGKILL while it runs a partition's build. That
run may recover (Dask hands the lost task to the other worker, and the nanny restarts the dead
one) or fail naming the view; either way an in-process rerun must leave every table equal to the
clean run's (checksums, less the per-run columns the other module names), with no partition
missing and none twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from flows.build_features import FeatureBuildError, build_features
from flows.ingest_validate import ingest_validate
from tasks.settings import DASK_ADDRESS_VAR, DASK_WORKERS_VAR
from tests.checksums import CROSS_DATABASE, differences, table_checksums
from tests.ops import test_cluster
from tests.ops.test_cluster import AS_OF, END, START, WORKERS, Home, _reports

two_homes = test_cluster.two_homes  # the fixture: two homes, one simulated platform

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

KILL_WITHIN_S = 120.0


class Killer(threading.Thread):
    """Waits until a worker is running a materialize-partition task, then SIGKILLs that worker."""

    def __init__(self, scheduler: str) -> None:
        super().__init__(daemon=True)
        self.scheduler = scheduler
        self.killed: tuple[str, int, str] | None = None  # worker address, pid, the task it ran
        self.stop = threading.Event()

    def run(self) -> None:
        from distributed import Client

        with Client(self.scheduler, timeout=30) as client:
            pids: dict[str, int] = client.run(os.getpid)
            deadline = time.monotonic() + KILL_WITHIN_S
            while not self.stop.is_set() and time.monotonic() < deadline:
                for address, keys in client.processing().items():
                    running = [str(k) for k in keys]  # this build submits partition builds only
                    if running and address in pids:
                        os.kill(pids[address], signal.SIGKILL)
                        self.killed = (address, pids[address], running[0])
                        return
                time.sleep(0.01)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_killed_mid_build_then_a_rerun_equals_a_clean_build(
    two_homes: list[Home], monkeypatch: pytest.MonkeyPatch
) -> None:
    """R3, R9: SIGKILL of a Dask worker while it materialises a partition; the run recovers or fails,
    and a rerun's checksums equal a clean in-process build's."""
    from distributed import LocalCluster

    clean, killed = two_homes
    monkeypatch.delenv(DASK_WORKERS_VAR, raising=False)
    monkeypatch.delenv(DASK_ADDRESS_VAR, raising=False)
    for home in two_homes:  # raw tables in-process: the fault is in the feature build only
        for key, value in home.env.items():
            monkeypatch.setenv(key, value)
        ingest_validate(as_of=AS_OF)
    for key, value in clean.env.items():
        monkeypatch.setenv(key, value)
    reference = build_features(start=START, end=END, validate_first=False)

    for key, value in killed.env.items():
        monkeypatch.setenv(key, value)
    outcome: Any
    with LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster:  # workers started after the settings: they see the killed home's warehouse
        killer = Killer(cluster.scheduler_address)
        killer.start()
        monkeypatch.setenv(DASK_ADDRESS_VAR, cluster.scheduler_address)
        try:
            outcome = build_features(start=START, end=END, validate_first=False)
        except FeatureBuildError as exc:  # a view whose partition was lost may fail, named
            outcome = exc
        finally:
            killer.stop.set()
            killer.join(timeout=30)
        monkeypatch.delenv(DASK_ADDRESS_VAR)
    assert killer.killed is not None, "no worker was seen running a partition's build"
    address, pid, task = killer.killed
    assert _gone(pid), f"worker {address} (pid {pid}) still alive"
    if isinstance(outcome, FeatureBuildError):
        assert any(view in str(outcome) for view in reference.built), str(outcome)

    rerun = build_features(start=START, end=END, validate_first=False)  # in-process, incremental
    assert set(rerun.built) <= set(reference.built)
    volatile = CROSS_DATABASE | {"report"}
    assert (
        differences(
            table_checksums(clean.engine, volatile=volatile),
            table_checksums(killed.engine, volatile=volatile),
        )
        == {}
    ), task
    assert _reports(clean.engine) == _reports(killed.engine)
