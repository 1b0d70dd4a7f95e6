"""Reruns converge, checked on every warehouse table, on SQLite and PostgreSQL (testplan R5, R9).

Each test starts from a small simulated platform whose deliveries are landed but not yet loaded,
and runs the real ``pipeline`` flow for ad_ctr (validate, build every feature view, train, gate,
promote, score) under the shared Prefect harness. The tables are compared with
tests/checksums.py: every table and view of the warehouse, rows as a multiset, without the
columns that name a run or the moment of a write.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine, func, inspect, select

from flows.build_features import build_features
from flows.models import pipeline
from tasks import lifecycle
from tasks.db import make_engine
from tasks.featurestore.registry import fs_materializations
from tasks.models import catalog
from tasks.schema import score_sets
from tasks.settings import Settings, pseudonym_key
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation
from tasks.warehouse import upgrade_schema
from tests.checksums import CROSS_DATABASE, differences, table_checksums, table_rows
from tests.integration.train_racer import LENIENT
from tests.models.warehouse import START, fresh_warehouse

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = "ad_ctr"
PLATFORM = SimConfig(users=250, streamers=20, days=10, seed=5, start=START)
AS_OF = dt.datetime.combine(START + dt.timedelta(days=PLATFORM.days), dt.time(), dt.UTC)
LAST_DAY = AS_OF.date() - dt.timedelta(days=1)
ROOT = Path(__file__).resolve().parents[2]  # the checkout under test, for child processes


def _simulate(settings: Settings, engine: Engine) -> None:
    """Land the platform's deliveries (the pipeline's own validate step loads them)."""
    run_simulation(settings, engine, dataclasses.replace(PLATFORM, pseudonym_key=pseudonym_key(settings)))


@pytest.fixture
def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A migrated warehouse with ten simulated days landed; ad_ctr under the lenient policy (the
    flow's mechanics are under test, not a tiny platform's model quality)."""
    engine = make_engine(settings.db_url)
    upgrade_schema(engine)
    _simulate(settings, engine)
    monkeypatch.setitem(catalog.MODELS, MODEL, dataclasses.replace(catalog.MODELS[MODEL], policy=LENIENT))
    yield engine
    engine.dispose()


def _registry(client: MlflowClient) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every registered version of the model: (version, MLflow run, aliases)."""
    found = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    versions = (client.get_model_version(MODEL, str(n)) for n in found)  # these report aliases
    return [(str(v.version), str(v.run_id), tuple(sorted(v.aliases))) for v in versions]


def _build_stamps(engine: Engine, views: list[str]) -> set[int]:
    """The build times (created_ts) of the views' partitions START..LAST_DAY."""
    m = fs_materializations
    query = select(m.c.created_ts).where(m.c.view.in_(views), m.c.partition_date.between(START, LAST_DAY))
    with engine.connect() as conn:
        return {int(ts) for ts in conn.execute(query.distinct()).scalars()}


@pytest.mark.slow
def test_r5_the_same_partitions_run_twice_give_the_same_tables(platform: Engine, settings: Settings) -> None:
    """R5: the pipeline run, then the same partitions again with the model's feature views rebuilt
    in full and the pipeline rerun. Every table equals its state after the first run (features,
    build log, validation records, raw tables, champion and alias ledger), but for the history a
    rescoring appends by design: the second score set holds exactly the first set's rows (the
    first is kept, superseded), monitoring recorded the same statistics again, and consumers'
    ``current_scores`` is unchanged. Training the same data and params again registers no
    second version and moves no alias."""
    first = pipeline(models=[MODEL], as_of=AS_OF).models[MODEL]
    assert first.train is not None and first.score is not None
    assert first.train.version == 1 and first.train.promoted and first.score.published
    client = lifecycle.mlflow_client(settings)
    registry = _registry(client)
    assert registry == [("1", first.train.run_id, ("challenger", "champion"))]
    before = table_checksums(platform)
    scores, checks = table_rows(platform, "scores"), table_rows(platform, "monitoring_checks")
    assert scores.total() == first.score.rows > 0 and checks.total() > 0

    # The same partitions again: the model's views rewritten, partition by partition.
    views = sorted({ref.split(":")[0] for ref in catalog.get_spec(MODEL).feature_refs})
    first_build = _build_stamps(platform, views)
    rebuilt = build_features(start=START, end=LAST_DAY, full=True, views=views, validate_first=False)
    days = [(START + dt.timedelta(days=i)).isoformat() for i in range(PLATFORM.days)]
    assert rebuilt.built == {view: days for view in views}
    stamps = _build_stamps(platform, views)
    assert len(stamps) == 1 and not stamps & first_build  # every partition really rewritten
    second = pipeline(models=[MODEL], as_of=AS_OF).models[MODEL]
    assert second.train is not None and second.score is not None

    assert (second.train.version, second.train.created, second.train.promoted) == (1, False, False)
    assert second.train.champion == 1 and second.train.metrics == first.train.metrics
    assert _registry(client) == registry  # no second version, no alias moved
    after = table_checksums(platform)
    history = {"scores", "score_sets", "monitoring_checks"}
    assert {name: d for name, d in differences(before, after).items() if name not in history} == {}
    assert after["current_scores"] == before["current_scores"]
    assert table_rows(platform, "scores") == scores + scores  # the same rows, once per score set
    assert table_rows(platform, "monitoring_checks") == checks + checks
    with platform.connect() as conn:
        sets = conn.execute(
            select(
                score_sets.c.model_version, score_sets.c.as_of, score_sets.c.rows, score_sets.c.status
            ).order_by(score_sets.c.created_ts, score_sets.c.status.desc())
        ).all()
    as_of = int(AS_OF.timestamp())
    rows = first.score.rows
    assert [tuple(s) for s in sets] == [(1, as_of, rows, "superseded"), (1, as_of, rows, "published")]
    assert second.score.rows == rows and second.score.published


def _pipeline_process(env: dict[str, str]) -> subprocess.Popen[str]:
    """The pipeline in a child process of its own session, on the platform ``env`` names."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **env,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "tests.integration.pipeline_runner", MODEL, AS_OF.isoformat()]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill takes anything it started
    )


def _partitions_built(engine: Engine) -> int:
    if not inspect(engine).has_table(fs_materializations.name):
        return 0
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(fs_materializations)).scalar_one())


@pytest.mark.slow
def test_r9_a_pipeline_killed_mid_run_and_rerun_equals_a_clean_run(
    platform: Engine, settings: Settings, tmp_path: Path
) -> None:
    """R9: the pipeline runs in a child process, SIGKILLed (its whole process group) as soon as
    its first feature partition is committed, in the middle of its feature build; the pipeline
    is then rerun here. Every table of the warehouse equals a clean run's, made in another child
    process on a fresh database of the same backend from the same simulated deliveries: no
    duplicate, no gap, no leftover of the killed run. That the killed run is marked Crashed is
    tests/ops/test_triggers.py (a real worker killed under a real server)."""
    backend = platform.dialect.name
    with fresh_warehouse(backend, tmp_path / "clean") as clean:
        _simulate(clean.settings, clean.engine)
        reference = _pipeline_process({**os.environ, **clean.env})
        victim = _pipeline_process(dict(os.environ))  # this test's settings are in its environment
        try:
            deadline = time.monotonic() + 300
            while _partitions_built(platform) == 0:
                assert victim.poll() is None, victim.communicate()[1][-5000:]
                assert time.monotonic() < deadline, "the pipeline built no feature partition in 300 s"
                time.sleep(0.05)
            os.killpg(victim.pid, signal.SIGKILL)
            assert victim.wait(timeout=30) == -signal.SIGKILL
            out, err = reference.communicate(timeout=600)
        finally:
            for child in (victim, reference):
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
        assert reference.returncode == 0, err[-5000:]
        clean_run = json.loads(out.strip().splitlines()[-1])["models"][MODEL]
        assert clean_run["train"]["promoted"] and clean_run["score"]["published"], clean_run
        clean_tables = table_checksums(clean.engine, volatile=CROSS_DATABASE)

        built_at_kill = _partitions_built(platform)
        assert 0 < built_at_kill < _partitions_built(clean.engine)  # killed in the middle of the build
        assert not table_rows(platform, "score_sets") and not table_rows(platform, "alias_ledger")
        started = time.monotonic()
        rerun = pipeline(models=[MODEL], as_of=AS_OF).models[MODEL]
        print(f"killed after {built_at_kill} partitions; the rerun took {time.monotonic() - started:.1f} s")
        assert rerun.train is not None and rerun.train.promoted and rerun.score is not None

        rerun_tables = table_checksums(platform, volatile=CROSS_DATABASE)
        assert differences(rerun_tables, clean_tables) == {}
        assert table_rows(platform, "scores").total() == rerun.score.rows > 0
