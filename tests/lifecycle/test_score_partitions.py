"""Entity-key partitions of a score set (tasks/scoring/partitions.py): the rule, and the staged
writes a fanned-out scoring run makes (R5: a rerun replaces a partition's rows, never doubles them)."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from tasks.models.catalog import get_spec
from tasks.scoring import (
    ScoreSetError,
    ScoreValidationError,
    publish,
    read_current_scores,
    validate_score_set,
    write_score_set,
)
from tasks.scoring.partitions import (
    finish_staged,
    in_partition,
    partition_count,
    partition_of,
    partitionable,
    write_partition,
)
from tests.lifecycle.score_writer import frame

MODEL = "churn"
PARTS = 3


def test_the_rule_is_crc32_of_the_key_text_and_keeps_every_entity_once() -> None:
    keys = pd.Series(["u00000001", "u00000002", 17, "ü-key"], dtype=object)
    expected = [zlib.crc32(str(k).encode()) % 5 for k in keys]
    assert partition_of(keys, 5).tolist() == expected
    data = frame(500, seed=3)
    cut = [in_partition(data, "entity_key", part, PARTS) for part in range(PARTS)]
    assert sum(map(len, cut)) == len(data) and all(len(c) for c in cut)
    assert sorted(pd.concat(cut)["entity_key"]) == sorted(data["entity_key"])


@pytest.mark.parametrize(
    ("workers", "entities", "parts"),
    [(2, 154, 2), (2, 10_000, 4), (8, 250, 3), (1, 0, 1), (100, 10**7, 64)],
)
def test_partition_count(workers: int, entities: int, parts: int) -> None:
    assert partition_count(workers, entities) == parts


def test_only_models_without_a_score_format_are_partitioned() -> None:
    assert partitionable(get_spec("ad_ctr")) and partitionable(get_spec("churn"))
    assert not partitionable(get_spec("user_segments")) and not partitionable(get_spec("capacity_plan"))


def _staged(engine: Engine) -> str:
    empty = pd.DataFrame({"entity_key": pd.Series([], dtype=object), "score": pd.Series([], dtype=float)})
    return write_score_set(engine, model=MODEL, version=1, as_of=100, run_id="r", frame=empty, created_ts=100)


def test_partitions_written_twice_publish_exactly_the_whole_set(engine: Engine) -> None:
    """Every partition written, one of them again with other scores (a rerun): the set holds each
    entity once, the rerun's scores, and validates and publishes as one set."""
    data = frame(300, seed=4)
    set_id = _staged(engine)
    parts = [in_partition(data, "entity_key", part, PARTS) for part in range(PARTS)]
    for part in parts:
        write_partition(engine, set_id, part)
    rerun = parts[1].assign(score=np.round(parts[1]["score"] / 2, 6))
    assert write_partition(engine, set_id, rerun) == len(rerun)
    finish_staged(engine, set_id, len(data))
    validate_score_set(engine, set_id, (0.0, 1.0))
    assert publish(engine, MODEL, set_id, published_ts=101).published
    current = read_current_scores(engine, MODEL).set_index("entity_key")["score"]
    assert len(current) == len(data)
    assert np.allclose(current.loc[rerun["entity_key"]].to_numpy(), rerun["score"].to_numpy())
    with pytest.raises(ScoreSetError, match="no longer staged"):
        write_partition(engine, set_id, parts[0])  # a late attempt never touches a published set


def test_a_set_short_of_the_partitions_total_fails_validation(engine: Engine) -> None:
    data = frame(300, seed=5)
    set_id = _staged(engine)
    written = sum(write_partition(engine, set_id, in_partition(data, "entity_key", p, PARTS)) for p in (0, 2))
    finish_staged(engine, set_id, written + 1)
    with pytest.raises(ScoreValidationError, match="holds"):
        validate_score_set(engine, set_id, (0.0, 1.0))
