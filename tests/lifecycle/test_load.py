"""Load: concurrent consumers never see a partial score set or an error while sets are published.

On SQLite and PostgreSQL, 8 reader processes (tests/lifecycle/load.py) read one entity and the
whole published set of a model from ``current_scores`` and load its approved model, while this
process writes, validates and publishes several 20,000-row score sets of different sizes. Every
set read must be one whole published set; no read may fail. The 1,000,000-row version with a
retrain running alongside, and its latencies, is the benchmark tests/benchmarks/bench_load.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine

from tasks.scoring import publish, published_score_set, validate_score_set, write_score_set
from tests.lifecycle.conftest import Store
from tests.lifecycle.helpers import promote_passing, versions
from tests.lifecycle.load import ReaderConfig, Window, readers
from tests.lifecycle.score_writer import frame

ROWS = 20_000
READERS = 8
SETS = 3  # published while the readers read, after the first one


def _ship(engine: Engine, model: str, version: int, rows: int, as_of: int) -> str:
    """Write, validate and publish one set as a scoring run does; returns its id."""
    set_id = write_score_set(
        engine,
        model=model,
        version=version,
        as_of=as_of,
        run_id=f"load-{as_of}",
        frame=frame(rows, seed=as_of),
        created_ts=as_of,
    )
    validate_score_set(engine, set_id, (0.0, 1.0))
    assert publish(engine, model, set_id, published_ts=as_of).published
    return set_id


@pytest.mark.slow  # about a minute per backend on a busy 2-core machine: in `make test-slow`
def test_readers_see_only_whole_sets_and_no_errors_while_sets_are_published(
    engine: Engine, db_url: str, client: MlflowClient, mlflow_store: Store, model_name: str, tmp_path: Path
) -> None:
    """L1: readers of current_scores and load_approved while score sets are written and published."""
    (v1,) = versions(client, mlflow_store, model_name, 1)
    promote_passing(engine, client, model_name, v1, None, created_ts=1)
    # Distinct sizes: a set cut short, or two sets mixed, is never the size of a published one.
    sizes = tuple(ROWS - i for i in range(SETS + 1))
    first = _ship(engine, model_name, v1, sizes[0], as_of=100)
    config = ReaderConfig(
        db_url=db_url,
        tracking_uri=mlflow_store.uri,
        model=model_name,
        entity="u00000042",
        sizes=sizes,
        champion=v1,
        pause_s=0.02,
        out=str(tmp_path / "readers"),
    )
    writing: list[Window] = []
    shipped = [first]
    with readers(config, READERS) as readings:
        for i in range(1, SETS + 1):
            start = time.monotonic()
            shipped.append(_ship(engine, model_name, v1, sizes[i], as_of=100 + i))
            writing.append((start, time.monotonic()))
    assert readings.problems == []
    assert readings.count("error") == 0 and readings.count("partial") == 0
    # The readers read while the sets were written and published, and saw more than one set whole.
    assert readings.count("ok", writing) >= READERS
    assert len(readings.seen) >= 2 and readings.seen <= set(shipped)
    assert published_score_set(engine, model_name) == shipped[-1]
