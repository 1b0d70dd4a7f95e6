"""Compare-and-set publishing of score sets, and what a rollback does to the published scores.

On SQLite and PostgreSQL: a set scored by a champion that moved meanwhile is not published; a set
older (as_of) than the published one is not published; a rollback republishes the restored
champion's latest set, or marks the published set stale when it has none; two processes publishing
at once leave exactly one winner and a consistent pointer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient
from sqlalchemy import Engine, select

from tasks.gates import current_champion, rollback
from tasks.schema import score_sets
from tasks.scoring import (
    PublishResult,
    publication,
    publish,
    published_score_set,
    read_current_scores,
    score_set_status,
    validate_score_set,
    write_score_set,
)
from tests.lifecycle.conftest import Store
from tests.lifecycle.helpers import promote_passing, versions
from tests.lifecycle.score_writer import frame

ROOT = Path(__file__).resolve().parents[2]


def _scored(engine: Engine, model: str, version: int, as_of: int, rows: int = 6) -> str:
    """A validated set as a scoring run of ``version`` at ``as_of`` leaves it, ready to publish."""
    set_id = write_score_set(
        engine,
        model=model,
        version=version,
        as_of=as_of,
        run_id=f"run-v{version}-{as_of}",
        frame=frame(rows, seed=as_of),
        created_ts=as_of,
    )
    validate_score_set(engine, set_id, (0.0, 1.0))
    return set_id


def _versions_read(engine: Engine, model: str) -> set[int]:
    return set(read_current_scores(engine, model)["model_version"])


def test_set_of_a_champion_that_moved_is_not_published(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    """M4: a set scored with v1 while v2 was promoted is kept but not published; v2's set is."""
    v1, v2 = versions(client, mlflow_store, model_name, 2)
    promote_passing(engine, client, model_name, v1, None, created_ts=1)
    first = _scored(engine, model_name, v1, 100)
    assert publish(engine, model_name, first, published_ts=101).published
    late = _scored(engine, model_name, v1, 200)  # scoring with v1 ...
    promote_passing(engine, client, model_name, v2, v1, created_ts=1)  # ... while v2 is promoted
    result = publish(engine, model_name, late, published_ts=201)
    assert isinstance(result, PublishResult) and not result.published
    assert f"scored with v{v1}" in result.reason and f"champion is now v{v2}" in result.reason
    assert result.current == first == published_score_set(engine, model_name)
    assert score_set_status(engine, late) == "validated"  # kept, not lost
    assert _versions_read(engine, model_name) == {v1}
    # The current champion's set goes out.
    fresh = _scored(engine, model_name, v2, 200)
    assert publish(engine, model_name, fresh, published_ts=202).published
    assert _versions_read(engine, model_name) == {v2}


def test_set_older_than_the_published_one_is_not_published(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    (v1,) = versions(client, mlflow_store, model_name, 1)
    promote_passing(engine, client, model_name, v1, None, created_ts=1)
    newer = _scored(engine, model_name, v1, 300)
    older = _scored(engine, model_name, v1, 200)
    assert publish(engine, model_name, newer, published_ts=301).published
    result = publish(engine, model_name, older, published_ts=302)
    assert not result.published and "as_of 200 is older" in result.reason and "as_of 300" in result.reason
    assert published_score_set(engine, model_name) == newer and score_set_status(engine, older) == "validated"
    assert set(read_current_scores(engine, model_name)["as_of"]) == {300}
    # The same as_of scored again (a rerun) may replace it; publishing the current set again is a no-op.
    again = write_score_set(
        engine,
        model=model_name,
        version=v1,
        as_of=300,
        run_id="rerun",
        frame=frame(4, seed=7),
        created_ts=305,
    )
    validate_score_set(engine, again, (0.0, 1.0))
    assert publish(engine, model_name, again, published_ts=306).published
    assert publish(engine, model_name, again, published_ts=307).published
    assert score_set_status(engine, newer) == "superseded"


def test_rollback_republishes_the_restored_champions_latest_set(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    """M5: a v2 scoring run still under way when v2 is rolled back finishes after the rollback: its
    set is not published over the restored champion's republished one, which consumers read.
    (Through lifecycle.score on a trained platform: tests/lifecycle/test_platform_gate.py.)"""
    v1, v2 = versions(client, mlflow_store, model_name, 2)
    promote_passing(engine, client, model_name, v1, None, created_ts=1)
    assert publish(engine, model_name, _scored(engine, model_name, v1, 100), published_ts=101).published
    latest_v1 = _scored(engine, model_name, v1, 200)
    assert publish(engine, model_name, latest_v1, published_ts=201).published
    promote_passing(engine, client, model_name, v2, v1, created_ts=1)
    by_v2 = _scored(engine, model_name, v2, 300)
    assert publish(engine, model_name, by_v2, published_ts=301).published
    in_flight = _scored(engine, model_name, v2, 400)  # a v2 run still scoring during the rollback

    assert rollback(engine, client, model_name, actor="oncall", reason="v2 is wrong") == v1
    assert current_champion(engine, model_name) == v1
    assert published_score_set(engine, model_name) == latest_v1
    assert (
        score_set_status(engine, latest_v1) == "published" and score_set_status(engine, by_v2) == "superseded"
    )
    assert _versions_read(engine, model_name) == {v1}
    assert set(read_current_scores(engine, model_name)["as_of"]) == {200}
    state = publication(engine, model_name)
    assert state is not None and (state["status"], state["model_version"]) == ("published", v1)
    # The rolled-back model's late set cannot come back, though its as_of is the newest.
    result = publish(engine, model_name, in_flight, published_ts=401)
    assert not result.published and f"champion is now v{v1}" in result.reason
    assert published_score_set(engine, model_name) == latest_v1


def test_rollback_without_a_set_to_republish_marks_the_scores_stale(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, v2 = versions(client, mlflow_store, model_name, 2)
    promote_passing(engine, client, model_name, v1, None, created_ts=1)  # never scored
    promote_passing(engine, client, model_name, v2, v1, created_ts=1)
    by_v2 = _scored(engine, model_name, v2, 300)
    assert publish(engine, model_name, by_v2, published_ts=301).published

    assert rollback(engine, client, model_name, actor="oncall", reason="v2 is wrong") == v1
    state = publication(engine, model_name)
    assert state is not None and state["score_set_id"] == by_v2
    assert (state["status"], state["model_version"]) == ("stale", v2)
    assert _versions_read(engine, model_name) == {v2}  # still readable, but marked
    # The restored champion's first set replaces the stale one, although it is older.
    backfill = _scored(engine, model_name, v1, 250)
    assert publish(engine, model_name, backfill, published_ts=302).published
    assert score_set_status(engine, by_v2) == "superseded"
    state = publication(engine, model_name)
    assert state is not None and (state["status"], state["score_set_id"]) == ("published", backfill)


_PUBLISHER = """
import sys, time
from pathlib import Path
from tasks.db import make_engine
from tasks.scoring import publish
url, model, set_id, go = sys.argv[1:5]
engine = make_engine(url)
engine.connect().close()
print("READY", flush=True)
while not Path(go).exists():
    time.sleep(0.005)
result = publish(engine, model, set_id, published_ts=int(time.time()))
print("RESULT", result.published, result.reason, flush=True)
"""


def test_two_publishing_processes_leave_one_winner_and_a_consistent_pointer(
    engine: Engine, db_url: str, client: MlflowClient, mlflow_store: Store, model_name: str, tmp_path: Path
) -> None:
    (v1,) = versions(client, mlflow_store, model_name, 1)
    promote_passing(engine, client, model_name, v1, None, created_ts=1)
    newer = _scored(engine, model_name, v1, 300, rows=40)
    older = _scored(engine, model_name, v1, 200, rows=30)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {
        set_id: subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, db_url, model_name, set_id, str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for set_id in (older, newer)
    }
    for proc in procs.values():  # both have imported, connected and wait on the go file
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    go.touch()
    said: dict[str, str] = {}
    for set_id, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        said[set_id] = out.strip()
    # Whatever the order, the newer set is the one consumers read, and the pointer agrees with it.
    assert said[newer].startswith("RESULT True")
    assert published_score_set(engine, model_name) == newer
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(score_sets.c.score_set_id, score_sets.c.status).where(
                    score_sets.c.model_name == model_name
                )
            ).all()
        )
    assert list(statuses.values()).count("published") == 1 and statuses[newer] == "published"
    if said[older].startswith("RESULT True"):  # it went first and was then replaced
        assert statuses[older] == "superseded"
    else:  # it came second and was refused on as_of
        assert "as_of 200 is older" in said[older] and statuses[older] == "validated"
    current = read_current_scores(engine, model_name)
    assert set(current["score_set_id"]) == {newer} and len(current) == 40
