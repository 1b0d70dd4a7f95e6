"""Entity-key partitions of a scoring run: how one score set is scored in parts on a Dask cluster.

An entity's partition is the CRC-32 of its key (as text) modulo K. Unlike Python's ``hash`` it is
the same in every process, on every machine and in every library version, so every worker, the
flow and a rerun agree on it. All rows of one entity fall into one partition.

Only a model whose published rows are one row per scoring-frame row (no ``format_scores``) is
scored in parts (:func:`partitionable`): its predictions are row by row, so a partition's rows are
exactly the rows the whole frame gives for those entities. A model with its own format (forecasts,
recommendations, segments) may shape rows across entities (a segment profile is computed over
every scored user, a capacity plan spills load across regions) and is scored in one task.

K (:func:`partition_count`) is two partitions per worker, so a worker that finishes early takes
another and a lost worker's partition is small, but never fewer than ``MIN_PARTITION_ROWS``
entities a partition (each task pays a fixed cost: loading the champion, querying its features)
nor more than ``MAX_PARTITIONS``.

Each partition's rows go into the run's staged score set with :func:`write_partition`: one
transaction deletes the set's rows of the partition's entities, then inserts them, so a rerun (a
retry, or Dask running a lost worker's task again) replaces what an earlier attempt wrote. Once
every partition is in, :func:`finish_staged` records the set's row count as the partitions' total;
validate_score_set then reads the stored set back and refuses it unless it holds exactly that many
rows, so a leftover or a missing partition is never published.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, select, update

from tasks.db import write_tx
from tasks.models.spec import ModelSpec
from tasks.schema import score_sets, scores
from tasks.scoring.publish import STAGED, ScoreSetError, insert_score_rows, prepare_rows

MIN_PARTITION_ROWS = 100
PARTITIONS_PER_WORKER = 2
MAX_PARTITIONS = 64
_KEYS_PER_DELETE = 500  # bound parameters per statement (SQLite allows a few thousand at least)


def partitionable(spec: ModelSpec) -> bool:
    """Whether the model's scores may be computed per entity-key partition (see the module notes)."""
    return spec.format_scores is None


def partition_count(workers: int, entities: int) -> int:
    """K for a run with ``workers`` Dask workers and ``entities`` entities to score (at least 1)."""
    by_size = math.ceil(entities / MIN_PARTITION_ROWS)
    return max(1, min(PARTITIONS_PER_WORKER * max(workers, 1), by_size, MAX_PARTITIONS))


def partition_of(keys: pd.Series | np.ndarray, parts: int) -> np.ndarray:
    """The partition (0 … parts-1) of each entity key: CRC-32 of the key as UTF-8 text, mod parts."""
    values = pd.Series(keys).astype(str).to_numpy(dtype=object)
    return np.fromiter((zlib.crc32(k.encode()) % parts for k in values), dtype="int64", count=len(values))


def in_partition(frame: pd.DataFrame, key: str, part: int, parts: int) -> pd.DataFrame:
    """The rows of ``frame`` whose ``key`` column falls into partition ``part`` of ``parts``."""
    if parts == 1:
        return frame.reset_index(drop=True)
    return frame[partition_of(frame[key], parts) == part].reset_index(drop=True)


def write_partition(engine: Engine, score_set_id: str, frame: pd.DataFrame) -> int:
    """Replace the staged set's rows of the frame's entities with the frame's rows (one
    transaction); returns the rows written. A set no longer staged is refused: a late attempt
    never touches a validated or published set."""
    keys, items = prepare_rows(frame)
    with write_tx(engine) as conn:
        header = conn.execute(select(score_sets).where(score_sets.c.score_set_id == score_set_id)).first()
        if header is None:
            raise ScoreSetError(f"score set {score_set_id} does not exist: stage it first")
        if header.status != STAGED:
            raise ScoreSetError(
                f"{header.model_name}: score set {score_set_id} is {header.status}, no longer staged"
            )
        unique = sorted(set(keys.tolist()))
        for start in range(0, len(unique), _KEYS_PER_DELETE):
            conn.execute(
                delete(scores).where(
                    scores.c.score_set_id == score_set_id,
                    scores.c.entity_key.in_(unique[start : start + _KEYS_PER_DELETE]),
                )
            )
        insert_score_rows(conn, header, frame, keys, items)
    return len(frame)


def finish_staged(engine: Engine, score_set_id: str, rows: int) -> None:
    """Record the staged set's row count once every partition is written (validation checks it)."""
    with write_tx(engine) as conn:
        conn.execute(
            update(score_sets)
            .where(score_sets.c.score_set_id == score_set_id, score_sets.c.status == STAGED)
            .values(rows=int(rows))
        )
