"""Score sets: staged write, `scores` suite, atomic publish, pruning, and R4 (SIGKILL before publish)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from tasks.dates import DAY_S
from tasks.models.catalog import get_spec
from tasks.monitoring.run import RETENTION_MARGIN_DAYS, retention_days
from tasks.schema import score_sets, scores
from tasks.scoring import (
    ScoreSetError,
    ScoreValidationError,
    publish,
    published_score_set,
    read_current_scores,
    score_set_status,
    validate_score_set,
    write_score_set,
)
from tests.lifecycle.score_writer import frame

ROOT = Path(__file__).resolve().parents[2]
MODEL = "churn"


def stage(engine: Engine, run_id: str, data: pd.DataFrame, *, version: int = 1, ts: int = 100) -> str:
    return write_score_set(
        engine, model=MODEL, version=version, as_of=ts, run_id=run_id, frame=data, created_ts=ts
    )


def ship(engine: Engine, run_id: str, data: pd.DataFrame, *, version: int = 1, ts: int = 100) -> str:
    set_id = stage(engine, run_id, data, version=version, ts=ts)
    validate_score_set(engine, set_id, (0.0, 1.0))
    publish(engine, MODEL, set_id, published_ts=ts + 1)
    return set_id


def checksum(engine: Engine) -> str:
    current = read_current_scores(engine, MODEL)
    text = current[["score_set_id", "entity_key", "model_version", "score"]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_write_validate_publish_read(engine: Engine) -> None:
    data = frame(50, seed=1).assign(label=pd.Series(["a", None] * 25, dtype=object), detail='{"k": 1}')
    set_id = stage(engine, "run-1", data, version=4)
    assert score_set_status(engine, set_id) == "staged"
    assert read_current_scores(engine, MODEL).empty  # staged is invisible to consumers
    with pytest.raises(ScoreSetError, match="not validated"):
        publish(engine, MODEL, set_id, published_ts=1)
    validate_score_set(engine, set_id, (0.0, 1.0))
    publish(engine, MODEL, set_id, published_ts=101)
    current = read_current_scores(engine, MODEL)
    assert len(current) == 50 and published_score_set(engine, MODEL) == set_id
    assert set(current["model_version"]) == {4} and set(current["run_id"]) == {"run-1"}
    assert set(current["as_of"]) == {100} and set(current["model_name"]) == {MODEL}
    assert np.allclose(current["score"].to_numpy(), data["score"].to_numpy())
    assert current["label"].isna().sum() == 25
    # Re-running the same run rewrites the same staged set; a published set is never rewritten.
    with pytest.raises(ScoreSetError, match="already published"):
        stage(engine, "run-1", data, version=4)


def test_rerun_of_a_staged_set_replaces_it(engine: Engine) -> None:
    first = stage(engine, "run-2", frame(30, seed=1))
    again = stage(engine, "run-2", frame(20, seed=2))
    assert first == again
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(scores)).scalar_one() == 20


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (frame(0, seed=1), "expect_table_row_count_to_be_between"),
        (frame(10, seed=1).assign(score=1.5), "expect_column_values_to_be_between"),
        (frame(10, seed=1).assign(score=-np.inf), "expect_column_values_to_be_between"),
        (frame(10, seed=1).assign(entity_key=""), "expect_column_value_lengths_to_be_between"),
    ],
)
def test_scores_suite_rejects_naming_the_rule(engine: Engine, data: pd.DataFrame, rule: str) -> None:
    if rule.endswith("lengths_to_be_between"):
        data = data.iloc[:1]  # one empty key (more would be duplicates)
    set_id = stage(engine, "bad", data)
    with pytest.raises(ScoreValidationError, match=rule):
        validate_score_set(engine, set_id, (0.0, 1.0))
    assert score_set_status(engine, set_id) == "staged"
    with pytest.raises(ScoreSetError, match="not validated"):
        publish(engine, MODEL, set_id, published_ts=1)


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (frame(3, seed=1).assign(entity_key=["a", "a", "b"]), "expect_compound_columns_to_be_unique"),
        (frame(3, seed=1).assign(score=[0.1, np.nan, 0.2]), "expect_column_values_to_not_be_null"),
        (frame(3, seed=1).drop(columns="score"), "expect_table_columns_to_match_set"),
        (frame(3, seed=1).assign(extra=1), "expect_table_columns_to_match_set"),
    ],
)
def test_frames_the_table_cannot_hold_are_refused_before_writing(
    engine: Engine, data: pd.DataFrame, rule: str
) -> None:
    with pytest.raises(ScoreSetError, match=rule):
        stage(engine, "bad", data)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(score_sets)).scalar_one() == 0


def test_score_range_comes_from_the_caller(engine: Engine) -> None:
    set_id = stage(engine, "gift", frame(10, seed=1).assign(score=250.0))
    validate_score_set(engine, set_id, (0.0, 1e6))  # e.g. a revenue regression's range
    assert score_set_status(engine, set_id) == "validated"


def test_publish_prunes_all_but_the_last_three(engine: Engine) -> None:
    abandoned = stage(engine, "crashed", frame(5, seed=9), ts=100 - DAY_S)  # a day before the newest
    ids = [ship(engine, f"run-{i}", frame(5, seed=i), ts=100 + 10 * i) for i in range(5)]
    with engine.connect() as conn:
        left = dict(conn.execute(select(score_sets.c.score_set_id, score_sets.c.status)).all())
        rows = conn.execute(select(func.count()).select_from(scores)).scalar_one()
    assert left == {ids[2]: "superseded", ids[3]: "superseded", ids[4]: "published"}
    assert abandoned not in left and rows == 15
    # Re-publishing a kept older set is refused (its as_of is older); a model rollback republishes.
    refused = publish(engine, MODEL, ids[3], published_ts=999)
    assert not refused.published and "older than the published set" in refused.reason
    assert set(read_current_scores(engine, MODEL)["score_set_id"]) == {ids[4]}


def test_publish_keeps_the_sets_realised_performance_will_judge(engine: Engine) -> None:
    """A daily model with a 3-day label horizon: each day's run still finds the set scored three
    days before it, although that is older than the last three."""
    spec = dataclasses.replace(get_spec(MODEL), horizon_days=3)
    keep = retention_days(spec)
    assert keep == 3 + RETENTION_MARGIN_DAYS
    day0 = 1_800_000_000 - 1_800_000_000 % DAY_S
    ids: list[str] = []
    for day in range(8):
        ts = day0 + day * DAY_S
        set_id = stage(engine, f"day-{day}", frame(5, seed=day), ts=ts)
        validate_score_set(engine, set_id, (0.0, 1.0))
        publish(engine, MODEL, set_id, published_ts=ts + 60, keep_days=keep)
        ids.append(set_id)
        if day >= 3:
            assert score_set_status(engine, ids[day - 3]) == "superseded", f"day {day}"
    with engine.connect() as conn:
        left = set(conn.execute(select(score_sets.c.score_set_id)).scalars())
    assert left == set(ids[8 - 1 - keep :])  # scored within the horizon and margin of the newest
    # Without a horizon only the last three are kept: the set three days back would be gone.
    ship(engine, "no-horizon", frame(5, seed=99), ts=day0 + 8 * DAY_S)
    with engine.connect() as conn:
        assert len(conn.execute(select(score_sets.c.score_set_id)).all()) == 3


def _writer(db_url: str, rows: int, run_id: str, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.lifecycle.score_writer", db_url, MODEL, str(rows), run_id, mode],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen[str], word: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(word), f"writer said {line!r} (exit {proc.poll()})"
    return line


def test_r4_sigkill_before_publish_and_mid_write(engine: Engine, db_url: str) -> None:
    old = ship(engine, "old", frame(1000, seed=3), ts=100)
    before = checksum(engine)
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(checksum(engine))
            time.sleep(0.005)

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        # 1. A run writes a large staged set and is killed before it publishes.
        staged_proc = _writer(db_url, 100_000, "killed-before-publish", "stage")
        staged_id = _wait_for(staged_proc, "STAGED").split()[1]
        staged_proc.send_signal(signal.SIGKILL)
        staged_proc.wait()
        # 2. Another run is killed while writing: after its first chunk, inside the transaction.
        mid_proc = _writer(db_url, 300_000, "killed-mid-write", "write")
        _wait_for(mid_proc, "CHUNK")
        mid_proc.send_signal(signal.SIGKILL)
        mid_proc.wait()
        after_kills = checksum(engine)
        # 3. A rerun publishes a new complete set while readers keep reading.
        new = ship(engine, "rerun", frame(5000, seed=4), version=2, ts=300)
    finally:
        stop.set()
        watcher.join()
    after = checksum(engine)
    assert before == after_kills and published_score_set(engine, MODEL) == new != old
    assert seen <= {before, after} and before in seen
    assert len(read_current_scores(engine, MODEL)) == 5000
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(score_sets.c.score_set_id, score_sets.c.status)).all())
        staged_rows = conn.execute(
            select(func.count()).where(scores.c.score_set_id == staged_id)
        ).scalar_one()
    # The killed-before-publish set is complete but was never published; the mid-write one left nothing.
    assert statuses[staged_id] == "staged" and staged_rows == 100_000
    assert len(statuses) == 3


def test_validating_the_written_frame_checks_rows_and_range(engine: Engine) -> None:
    """The in-memory path: the suite runs on the frame just written, the stored count must match."""
    from tasks.scoring import ScoreValidationError

    written = pd.DataFrame({"entity_key": ["a", "b", "c"], "score": [0.1, 0.5, 0.9]})
    set_id = write_score_set(engine, model="m", version=1, as_of=10, run_id="r", frame=written, created_ts=11)
    with pytest.raises(ScoreValidationError, match="holds 3 rows"):
        validate_score_set(engine, set_id, (0.0, 1.0), frame=pd.concat([written, written.iloc[:1]]))
    with pytest.raises(ScoreValidationError):
        validate_score_set(engine, set_id, (0.0, 1.0), frame=written.assign(score=[0.1, 0.5, 1.5]))
    validate_score_set(engine, set_id, (0.0, 1.0), frame=written)
