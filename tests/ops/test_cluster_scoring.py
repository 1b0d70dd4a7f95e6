"""score-model on a real Dask cluster (distributed.LocalCluster, 2 workers × 1 thread, loopback):
entity-key partitions scored on the workers publish what in-process scoring does, and a worker
SIGKILLed mid-partition never publishes half a set (test plan R3, R5, R9), on SQLite and PostgreSQL.

Two homes per backend, built the same way (the same seeded simulation, features and a lenient
ad_ctr champion trained in-process): "local" scores in-process, "dask" on the cluster. Compared by
checksum (tests/checksums.py, less ``CROSS_DATABASE``): the score tables (``scores``,
``score_sets``, ``published_scores``, the ``current_scores`` view) and the monitoring statistics
the run recorded, which the flow still computes on the whole frame.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import Engine, select

from flows.models import ScoringError, score_model, train_model
from tasks.models import catalog
from tasks.schema import score_sets
from tasks.settings import DASK_ADDRESS_VAR, DASK_WORKERS_VAR
from tests.checksums import CROSS_DATABASE, differences, table_checksums, table_rows
from tests.conftest import BACKENDS
from tests.integration.train_racer import LENIENT
from tests.models.warehouse import START, Backend, build_warehouse, fresh_warehouse
from tests.ops.test_cluster_faults import Killer, _gone

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

MODEL = "ad_ctr"
DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
WORKERS = 2
SCORE_TABLES = ("scores", "score_sets", "published_scores", "current_scores", "monitoring_checks")


@pytest.fixture(scope="module", params=BACKENDS)
def homes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Iterator[list[Backend]]:
    """Two homes of one backend with the same warehouse and the same ad_ctr champion."""
    built: list[Backend] = []
    with ExitStack() as stack, pytest.MonkeyPatch.context() as patch:
        lenient = dataclasses.replace(catalog.MODELS[MODEL], policy=LENIENT)  # scoring never reads it
        patch.setitem(catalog.MODELS, MODEL, lenient)
        for name in ("local", "dask"):
            home = stack.enter_context(fresh_warehouse(request.param, tmp_path_factory.mktemp(name)))
            _use(home, patch, None)
            build_warehouse(home.settings, home.engine, users=250, streamers=20, days=DAYS, seed=5)
            assert train_model(MODEL, as_of=AS_OF, build=False).champion == 1
            built.append(home)
        yield built


def _use(home: Backend, monkeypatch: pytest.MonkeyPatch, workers: int | None) -> None:
    """Point the settings at ``home``; a local cluster of ``workers`` (None: in-process)."""
    for key, value in home.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(DASK_ADDRESS_VAR, raising=False)
    if workers is None:
        monkeypatch.delenv(DASK_WORKERS_VAR, raising=False)
    else:
        monkeypatch.setenv(DASK_WORKERS_VAR, str(workers))


def _score_tables(engine: Engine) -> dict[str, str]:
    checksums = table_checksums(engine, volatile=CROSS_DATABASE)
    return {name: checksums[name] for name in SCORE_TABLES}


def _published(engine: Engine) -> tuple[Any, ...]:
    """The published scores (rows less run ids) and their set's header (less ids and times)."""
    with engine.connect() as conn:
        header = conn.execute(
            select(score_sets.c.model_version, score_sets.c.as_of, score_sets.c.rows).where(
                score_sets.c.status == "published"
            )
        ).all()
    return table_rows(engine, "current_scores", volatile=CROSS_DATABASE), [tuple(h) for h in header]


def _pids(workers: dict[str, int]) -> set[int]:
    return {int(label.rsplit(" pid ", 1)[1]) for label in workers}


def test_scoring_on_a_local_cluster_publishes_what_in_process_does(
    homes: list[Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """R5: ad_ctr scored per entity-key partition on 2 worker processes publishes the same score
    set (and records the same monitoring statistics) as in-process scoring into a twin warehouse."""
    local, on_dask = homes
    _use(local, monkeypatch, None)
    started = time.perf_counter()
    reference = score_model(MODEL, as_of=AS_OF)
    local_s = time.perf_counter() - started
    _use(on_dask, monkeypatch, WORKERS)
    started = time.perf_counter()
    scored = score_model(MODEL, as_of=AS_OF)
    dask_s = time.perf_counter() - started
    print(f"score-model wall: in-process {local_s:.1f} s, {WORKERS}-worker cluster {dask_s:.1f} s")

    assert reference.workers == {} and reference.published and scored.published
    assert scored.rows == reference.rows > 0
    pids = _pids(scored.workers)
    assert len(pids) == WORKERS and os.getpid() not in pids, scored.workers  # every worker scored
    assert sum(scored.workers.values()) >= WORKERS  # a partition per task run
    assert differences(_score_tables(local.engine), _score_tables(on_dask.engine)) == {}


def test_a_worker_killed_mid_partition_never_publishes_half_a_set(
    homes: list[Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """R3, R9: SIGKILL of a Dask worker while it scores a partition. The run recovers (Dask hands
    the partition to the other worker) or fails naming the model; either way the published set is
    a complete one, and a rerun on the cluster publishes what a clean in-process run does."""
    from distributed import LocalCluster

    local, killed = homes
    _use(local, monkeypatch, None)
    score_model(MODEL, as_of=AS_OF)
    clean = _published(local.engine)
    _use(killed, monkeypatch, None)
    before = _published(killed.engine)  # the earlier test's set, or none when run alone

    outcome: Any
    with LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as existing:  # workers started after the settings: they see the killed home's warehouse
        killer = Killer(existing.scheduler_address)  # the cluster runs scoring partitions only
        killer.start()
        monkeypatch.setenv(DASK_ADDRESS_VAR, existing.scheduler_address)
        try:
            outcome = score_model(MODEL, as_of=AS_OF)
        except ScoringError as exc:
            outcome = exc
        finally:
            killer.stop.set()
            killer.join(timeout=30)
        assert killer.killed is not None, "no worker was seen scoring a partition"
        address, pid, _ = killer.killed
        assert _gone(pid), f"worker {address} (pid {pid}) still alive"
        published = _published(killed.engine)
        failed = isinstance(outcome, Exception)
        print(f"killed worker pid {pid}; the run " + (f"failed: {outcome}" if failed else "recovered"))
        if isinstance(outcome, ScoringError):
            assert MODEL in str(outcome), str(outcome)
            assert published == before, "a failed run changed the published set"
        else:
            assert outcome.published and outcome.rows == clean[1][0][2]
        if published[1]:
            assert published == clean  # whichever set is published is complete

        rerun = score_model(MODEL, as_of=AS_OF)  # on the same cluster, its dead worker replaced
        monkeypatch.delenv(DASK_ADDRESS_VAR)
    assert rerun.published and rerun.workers and pid not in _pids(rerun.workers)
    assert _published(killed.engine) == clean
