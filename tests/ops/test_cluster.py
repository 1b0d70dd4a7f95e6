"""The flows on a real Dask cluster (distributed.LocalCluster, 2 workers × 1 thread, loopback) give
the same tables as in-process, on SQLite and PostgreSQL, and the Dask settings' bad values.

A run on the cluster and a run in-process go to two databases of the same backend, each fed by
the same seeded simulation into a landing zone of its own; then every table of the two is
compared by checksum (tests/checksums.py). Left out: the columns ``CROSS_DATABASE`` names — the
identities each run mints (validation run ids, the flow run id), the wall-clock times of the
writes (``created_ts``, ``updated_ts``, ``finished_ts``, ``registered_ts``), sequence ids, and
``fs_materializations.data_version``, a hash of the validation run ids behind a partition — and,
inside ``validation_runs.report``, ``gx_run``: the name under which the validating process kept
its GX result for the Data Docs, numbered per process (tasks/quality/docs.py), so it differs
between any two processes, and between two runs in one process too. The reports are compared
without it. Each of these differs between any two runs, on a cluster or not; every other
column is equal.

The default run has a quicker case (R5 on one database): a view's partitions rebuilt on the
cluster equal the in-process build they replace.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from flows.build_features import build_features
from flows.ingest_validate import ingest_validate
from tasks import ingest
from tasks.db import make_engine
from tasks.featurestore.views import FEATURE_VIEWS
from tasks.ops import cluster
from tasks.schema import validation_runs
from tasks.settings import (
    DASK_ADDRESS_VAR,
    DASK_WORKERS_VAR,
    DaskSettings,
    Settings,
    dask_settings,
    pseudonym_key,
)
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation
from tasks.warehouse import upgrade_schema
from tests.checksums import CROSS_DATABASE, differences, table_checksums
from tests.conftest import _database_url

pytestmark = pytest.mark.usefixtures("prefect_harness")

START = dt.date(2026, 1, 5)
SMALL = SimConfig(users=120, streamers=10, days=3, seed=21, start=START)
AS_OF = dt.datetime.combine(START + dt.timedelta(days=SMALL.days), dt.time(), dt.UTC)
END = START + dt.timedelta(days=SMALL.days - 1)
WORKERS = 2


@dataclasses.dataclass
class Home:
    """One platform home: its environment and its warehouse."""

    env: dict[str, str]
    engine: Engine


@pytest.fixture(params=["sqlite", "postgresql"])
def two_homes(request: pytest.FixtureRequest, tmp_path: Path, pg_available: bool) -> Iterator[list[Home]]:
    """Two homes on two empty databases of one backend, each with the same simulated platform landed."""
    from tasks.settings import get_settings

    homes: list[Home] = []
    with ExitStack() as stack:
        for name in ("local", "dask"):
            (tmp_path / name).mkdir()
            url = stack.enter_context(
                contextmanager(_database_url)(request.param, tmp_path / name, pg_available)
            )
            env = {
                "LIVEYIELD_HOME": str(tmp_path / name / "home"),
                "LIVEYIELD_DB_URL": url,
                "LIVEYIELD_PSEUDONYM_KEY": "test-key",
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / name / 'mlflow.db'}",
            }
            engine = make_engine(url)
            stack.callback(engine.dispose)
            upgrade_schema(engine)
            homes.append(Home(env, engine))
            with pytest.MonkeyPatch.context() as patch:
                for key, value in env.items():
                    patch.setenv(key, value)
                settings = get_settings()
                config = dataclasses.replace(SMALL, pseudonym_key=pseudonym_key(settings))
                run_simulation(settings, engine, config)
        yield homes


def _run_flows(home: Home, monkeypatch: pytest.MonkeyPatch, workers: int | None) -> tuple[float, dict, dict]:
    for key, value in home.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(DASK_ADDRESS_VAR, raising=False)
    if workers is None:
        monkeypatch.delenv(DASK_WORKERS_VAR, raising=False)
    else:
        monkeypatch.setenv(DASK_WORKERS_VAR, str(workers))
    started = time.perf_counter()
    summary = ingest_validate(as_of=AS_OF)
    build = build_features(start=START, end=END, validate_first=False)
    elapsed = time.perf_counter() - started
    return elapsed, summary.workers, build.workers


@pytest.mark.slow
def test_flows_on_a_local_cluster_give_the_same_tables_as_in_process(
    two_homes: list[Home], monkeypatch: pytest.MonkeyPatch
) -> None:
    """R5 (same checksums), R7 (two writers at once, no "database is locked"): ingest-validate per
    table and build-features per (view, partition) on 2 worker processes store what in-process does."""
    local, on_dask = two_homes
    local_s, local_ingest, local_build = _run_flows(local, monkeypatch, None)
    dask_s, dask_ingest, dask_build = _run_flows(on_dask, monkeypatch, WORKERS)
    print(f"wall: in-process {local_s:.1f} s, {WORKERS}-worker cluster {dask_s:.1f} s")

    assert local_ingest == {} and local_build == {}  # in-process: no worker ran anything
    for ran in (dask_ingest, dask_build):
        pids = {int(label.rsplit(" pid ", 1)[1]) for label in ran}
        assert len(pids) == WORKERS, ran  # both worker processes took tasks ...
        assert os.getpid() not in pids  # ... and none ran in the flow's process
        assert all(label.startswith("tcp://127.0.0.1:") for label in ran)
    assert sum(dask_ingest.values()) > WORKERS and sum(dask_build.values()) > WORKERS

    left = table_checksums(local.engine, volatile=CROSS_DATABASE | {"report"})
    right = table_checksums(on_dask.engine, volatile=CROSS_DATABASE | {"report"})
    feature_tables = [name for name in left if name.startswith("fs_") and "__" in name]
    assert len(feature_tables) > len(FEATURE_VIEWS) // 2  # views with a validated primary day
    assert differences(left, right) == {}
    assert _reports(local.engine) == _reports(on_dask.engine)


def _reports(engine: Engine) -> Counter[str]:
    """The validation reports without ``gx_run`` (see the module docstring), as a multiset."""
    with engine.connect() as conn:
        reports = [json.loads(text) for text in conn.execute(select(validation_runs.c.report)).scalars()]
    assert reports and all("gx_run" in report for report in reports)
    return Counter(json.dumps({k: v for k, v in r.items() if k != "gx_run"}, sort_keys=True) for r in reports)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({DASK_WORKERS_VAR: "two"}, "expected a whole number of workers, got 'two'"),
        ({DASK_WORKERS_VAR: "1.5"}, "expected a whole number of workers, got '1.5'"),
        ({DASK_WORKERS_VAR: "0"}, "expected 1 or more workers, got '0'"),
        ({DASK_WORKERS_VAR: "-2"}, "expected 1 or more workers, got '-2'"),
        ({DASK_ADDRESS_VAR: "127.0.0.1:8786"}, "expected a scheduler address tcp://HOST:PORT"),
        ({DASK_ADDRESS_VAR: "tcp://127.0.0.1"}, "expected a scheduler address tcp://HOST:PORT"),
        ({DASK_ADDRESS_VAR: "tcp://127.0.0.1:99999"}, "expected a scheduler address tcp://HOST:PORT"),
        ({DASK_ADDRESS_VAR: "http://scheduler:8786"}, "expected a scheduler address tcp://HOST:PORT"),
        ({DASK_ADDRESS_VAR: "tcp://sched uler:8786"}, "expected a scheduler address tcp://HOST:PORT"),
        ({DASK_ADDRESS_VAR: "tcp://a:1", DASK_WORKERS_VAR: "2"}, "both set"),
    ],
)
def test_bad_dask_settings_are_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="LIVEYIELD_DASK") as caught:
        dask_settings(env)
    assert message in str(caught.value)


def test_dask_settings_read_their_values() -> None:
    assert dask_settings({}) == DaskSettings() and not DaskSettings().distributed
    assert dask_settings({DASK_WORKERS_VAR: " 3 "}) == DaskSettings(workers=3)
    for address in ("tcp://127.0.0.1:8786", "tcp://dask-scheduler.internal:8786", "tls://[::1]:8786"):
        assert dask_settings({DASK_ADDRESS_VAR: address}) == DaskSettings(address=address)


def test_a_flow_with_a_bad_setting_fails_before_any_task_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow run itself fails with the setting's message; nothing is submitted anywhere."""
    monkeypatch.setenv(DASK_WORKERS_VAR, "zero")
    with pytest.raises(cluster.ClusterSettingError, match="LIVEYIELD_DASK_WORKERS: expected a whole number"):
        ingest_validate(as_of=AS_OF)


def test_local_cluster_binds_to_loopback_with_single_threaded_processes() -> None:
    kwargs = cluster.local_cluster_kwargs(2, "http://127.0.0.1:4200/api")
    assert kwargs["n_workers"] == 2 and kwargs["threads_per_worker"] == 1 and kwargs["processes"]
    assert kwargs["host"] == "127.0.0.1" and kwargs["dashboard_address"].startswith("127.0.0.1:")
    runner = cluster.task_runner(DaskSettings())
    assert runner.name == "threadpool"  # unset: Prefect's default in-process runner, as before


QUICK_VIEWS = ["ad_activity", "user_watch"]  # each reads one raw table, with rows on every day
QUICK_TABLES = ["raw_ad_impressions", "raw_watch_sessions"]


def _rebuild_on_cluster(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> dict[str, int]:
    """QUICK_VIEWS built in-process, then rebuilt (``full``) with the Dask ``variable`` set; checks
    that every table is unchanged and every partition ran on a worker; returns where they ran."""
    config = dataclasses.replace(SMALL, pseudonym_key=pseudonym_key(settings))
    run_simulation(settings, engine, config)
    for table in QUICK_TABLES:
        ingest.ingest_table(engine, settings.landing_dir, table, max_ts=int(AS_OF.timestamp()))
    monkeypatch.delenv(DASK_ADDRESS_VAR, raising=False)
    monkeypatch.delenv(DASK_WORKERS_VAR, raising=False)
    local = build_features(start=START, end=END, views=QUICK_VIEWS, full=True, validate_first=False)
    before = table_checksums(engine)

    monkeypatch.setenv(variable, value)
    on_dask = build_features(start=START, end=END, views=QUICK_VIEWS, full=True, validate_first=False)

    assert on_dask.built == local.built and local.partitions == len(QUICK_VIEWS) * SMALL.days
    assert local.workers == {}
    pids = {int(label.rsplit(" pid ", 1)[1]) for label in on_dask.workers}
    assert len(pids) == WORKERS and os.getpid() not in pids, on_dask.workers
    assert sum(on_dask.workers.values()) == on_dask.partitions
    assert differences(before, table_checksums(engine)) == {}
    return on_dask.workers


def test_partitions_rebuilt_on_a_local_cluster_equal_the_in_process_build(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R5: two views built in-process, then rebuilt per (view, partition) on a 2-worker local
    cluster the flow starts: every table's checksum is unchanged, and the builds ran on the workers."""
    ran = _rebuild_on_cluster(settings, engine, monkeypatch, DASK_WORKERS_VAR, str(WORKERS))
    assert all(label.startswith("tcp://127.0.0.1:") for label in ran)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_partitions_rebuilt_on_an_existing_scheduler_equal_the_in_process_build(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R5 with LIVEYIELD_DASK_ADDRESS: the flow uses a scheduler it did not start, and leaves it
    running (its workers started after the settings, so they see the same warehouse)."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as existing:
        with Client(existing) as client:
            addresses = set(client.scheduler_info()["workers"])
        ran = _rebuild_on_cluster(settings, engine, monkeypatch, DASK_ADDRESS_VAR, existing.scheduler_address)
        assert {label.split(" pid ")[0] for label in ran} == addresses
        assert existing.status.name == "running"  # not closed by the flow


def test_an_existing_scheduler_needs_a_prefect_server() -> None:
    """The ephemeral Prefect API lives in the flow's process: remote workers could not report to it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(cluster.ClusterSettingError, match="set PREFECT_API_URL"),
    ):
        cluster.task_runner(DaskSettings(address="tcp://127.0.0.1:8786"))
