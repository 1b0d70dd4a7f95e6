"""Score sets: write staged, validate with the `scores` GX suite, publish by one pointer flip.

A batch-scoring run writes its whole output as one *staged* score set (one write transaction,
so a killed writer leaves nothing behind; a run fanned out over a cluster stages the set empty
and writes it per entity-key partition instead, tasks/scoring/partitions.py), validates it, then
publishes it by flipping the model's row of ``published_scores`` in one transaction. Consumers
read ``current_scores`` (the published set only), so they see the old complete set or the new
complete set, never a mix. Every scored row carries the model name, version, ``as_of`` and run id.

Statuses: ``staged`` → ``validated`` (validate_score_set) → ``published`` → ``superseded`` (when a
newer set is published); ``stale`` marks a published set whose model a rollback removed when the
restored champion had no set to republish (follow_rollback).

Publishing is compare-and-set (publish): a set goes out only if the version it was scored with
is still the champion and its ``as_of`` is not older than the published set's; otherwise it stays
``validated`` and the call's PublishResult says why. Publishing keeps the last ``KEEP_PUBLISHED``
published sets of the model, and every published set scored within ``keep_days`` of its newest one
(a model judged on realised performance needs the set scored one label horizon ago), and deletes
older ones and unpublished sets abandoned before them (and ABANDONED_AFTER_S before the newest).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, column, delete, func, select, table, update
from sqlalchemy.dialects import postgresql, sqlite

from tasks.dates import DAY_S
from tasks.db import CHUNK_ROWS, advisory_xact_lock, bounded_lock_wait, insert_frame, write_tx
from tasks.schema import model_champions, published_scores, score_sets, scores

KEEP_PUBLISHED = 3
ABANDONED_AFTER_S = DAY_S  # an unpublished set this much older than the newest published one is pruned
SUITE = "scores"
STAGED, VALIDATED, PUBLISHED, SUPERSEDED = "staged", "validated", "published", "superseded"
STALE = "stale"  # the published set after a rollback left no set of the restored champion
REQUIRED = ("entity_key", "score")
OPTIONAL = ("item", "rank", "lower", "upper", "label", "detail")
_NAMESPACE = uuid.UUID("5b7c2a0e-3f3d-4c59-9a43-6f1d3c1e7a10")

current_scores = table(
    "current_scores",
    *(column(c.name, c.type) for c in scores.columns),
)


class ScoreSetError(RuntimeError):
    """A score set that cannot be written or published as asked."""


class ScoreValidationError(ScoreSetError):
    """A staged score set broke a rule of the `scores` suite; the message names the rule."""


def score_set_id_for(model: str, version: int, as_of: int, run_id: str) -> str:
    """The deterministic id of a run's score set: a retry of the same run rewrites the same set."""
    return str(uuid.uuid5(_NAMESPACE, f"{model}\x1f{int(version)}\x1f{int(as_of)}\x1f{run_id}"))


def _items(frame: pd.DataFrame) -> np.ndarray:
    """The item column as strings ("" where absent: one score per entity)."""
    if "item" not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    return frame["item"].astype(object).where(frame["item"].notna(), "").astype(str).to_numpy(dtype=object)


def _precheck(frame: pd.DataFrame) -> np.ndarray:
    """Reject what the scores table cannot hold, naming the suite rule it breaks; returns the keys."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    extra = [c for c in frame.columns if c not in REQUIRED + OPTIONAL]
    if missing or extra:
        raise ScoreSetError(
            f"score frame: expect_table_columns_to_match_set failed: missing {missing}, unexpected {extra} "
            f"(need {list(REQUIRED)}, optional {list(OPTIONAL)})"
        )
    for name in REQUIRED:
        nulls = int(frame[name].isna().sum())
        if nulls:
            raise ScoreSetError(
                f"score frame: expect_column_values_to_not_be_null failed on {name}: {nulls} nulls"
            )
    keys = frame["entity_key"].astype(str).to_numpy(dtype=object)
    row_keys = pd.MultiIndex.from_arrays([keys, _items(frame)])
    if not row_keys.is_unique:
        duplicated = row_keys.duplicated()
        raise ScoreSetError(
            f"score frame: expect_compound_columns_to_be_unique failed on (entity_key, item): "
            f"{int(duplicated.sum())} duplicate keys, e.g. {row_keys[duplicated][:3].tolist()}"
        )
    return keys


def write_score_set(
    engine: Engine,
    *,
    model: str,
    version: int,
    as_of: int,
    run_id: str,
    frame: pd.DataFrame,
    created_ts: int,
) -> str:
    """Write a complete *staged* score set in one transaction; returns its id.

    ``frame`` has entity_key and score (optionally item, rank, lower, upper, label, detail;
    (entity_key, item) is unique, item "" when absent). Re-running the same run
    (same model, version, as_of, run_id) replaces its staged set; a published one is refused.
    """
    keys, items = prepare_rows(frame)
    set_id = score_set_id_for(model, version, as_of, run_id)
    with write_tx(engine) as conn:
        status = conn.execute(select(score_sets.c.status).where(score_sets.c.score_set_id == set_id)).scalar()
        if status in (PUBLISHED, SUPERSEDED, STALE):
            raise ScoreSetError(f"{model}: score set {set_id} of run {run_id} was already published")
        if status is not None:
            _delete_sets(conn, [set_id])
        conn.execute(
            score_sets.insert().values(
                score_set_id=set_id,
                model_name=model,
                model_version=int(version),
                as_of=int(as_of),
                run_id=run_id,
                rows=len(frame),
                status=STAGED,
                created_ts=int(created_ts),
            )
        )
        header = conn.execute(select(score_sets).where(score_sets.c.score_set_id == set_id)).one()
        insert_score_rows(conn, header, frame, keys, items)
    return set_id


def prepare_rows(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A score frame's entity keys and items (as stored), after the checks the table needs."""
    return _precheck(frame), _items(frame)


def insert_score_rows(
    conn: Connection, header: Any, frame: pd.DataFrame, keys: np.ndarray, items: np.ndarray
) -> None:
    """Insert a score frame's rows into the set ``header`` (its score_sets row) describes, in chunks."""
    for start in range(0, len(frame), CHUNK_ROWS):
        chunk = frame.iloc[start : start + CHUNK_ROWS]
        rows: dict[str, Any] = {
            "score_set_id": header.score_set_id,
            "entity_key": keys[start : start + CHUNK_ROWS],
            "item": items[start : start + CHUNK_ROWS],
            "model_name": header.model_name,
            "model_version": int(header.model_version),
            "as_of": int(header.as_of),
            "run_id": header.run_id,
            "score": chunk["score"].to_numpy(dtype="float64"),
        }
        for name in OPTIONAL:
            if name in chunk.columns and name != "item":
                rows[name] = chunk[name].astype(object).where(chunk[name].notna(), None).to_numpy()
        insert_frame(conn, scores, pd.DataFrame(rows), ignore_existing=False)


def validate_score_set(
    engine: Engine, score_set_id: str, score_range: tuple[float, float], frame: pd.DataFrame | None = None
) -> None:
    """Run the `scores` GX suite on a stored set; raise ScoreValidationError naming the broken rule.

    ``frame`` is the score frame the caller just wrote with write_score_set: the
    suite then runs on it instead of reading the set back (a second full read costs as much as
    the write), and the stored set is checked to hold exactly its rows. Without it the stored
    rows are read and checked.
    """
    from tasks.quality.engine import run_suite
    from tasks.quality.suites import load_suite

    with engine.connect() as conn:
        header = _header(conn, score_set_id)
        where_set = scores.c.score_set_id == score_set_id
        if frame is None:
            frame = pd.read_sql(
                select(scores.c.entity_key, scores.c.item, scores.c.score).where(where_set), conn
            )
            stored = len(frame)
        else:
            frame = pd.DataFrame(
                {"entity_key": frame["entity_key"], "item": _items(frame), "score": frame["score"]}
            )
            stored = int(conn.execute(select(func.count()).select_from(scores).where(where_set)).scalar_one())
    where = f"{header['model_name']} score set {score_set_id}"
    if stored != int(header["rows"]) or len(frame) != stored:
        raise ScoreValidationError(
            f"{where}: holds {stored} rows but {header['rows']} were written ({len(frame)} checked)"
        )
    frame["entity_key"] = frame["entity_key"].astype(object)
    frame["item"] = frame["item"].astype(object)
    frame["score"] = frame["score"].astype("float64")
    low, high = float(score_range[0]), float(score_range[1])
    loaded = load_suite(SUITE)
    result = run_suite(SUITE, frame, loaded.suite, {"score_min": low, "score_max": high})
    failed = [item for item in result.results if not item.success]
    if failed:
        raise ScoreValidationError(f"{where}: " + "; ".join(_failure(item) for item in failed))
    with write_tx(engine) as conn:
        conn.execute(
            update(score_sets)
            .where(score_sets.c.score_set_id == score_set_id, score_sets.c.status == STAGED)
            .values(status=VALIDATED)
        )


@dataclass(frozen=True)
class PublishResult:
    """What a publish call did: published, or refused with the reason (the set is kept, validated)."""

    model: str
    score_set_id: str
    published: bool
    current: str | None  # the model's published set after the call
    reason: str = ""  # why the set was not published ("" when it was)


def publish(
    engine: Engine, model: str, score_set_id: str, *, published_ts: int, keep_days: int = 0
) -> PublishResult:
    """Make a validated score set the model's current one by compare-and-set (one transaction).

    The set is published only if the version it was scored with is still the model's champion
    (a model with no champion recorded is not checked on this) and its ``as_of`` is not older
    than the published set's. Otherwise nothing moves: the set stays ``validated`` and the result
    says why. Publishes of one model are serialised (an advisory lock on PostgreSQL, BEGIN
    IMMEDIATE on SQLite) and hold the champion row against a concurrent promotion. After a publish,
    old sets are pruned: all but the last KEEP_PUBLISHED, and those scored more than ``keep_days``
    before the newest. A set that does not exist, belongs to another model or was never validated
    raises ScoreSetError (a caller's mistake, not a race).
    """
    with write_tx(engine) as conn:
        lock_publication(conn, model)
        row = conn.execute(select(score_sets).where(score_sets.c.score_set_id == score_set_id)).first()
        if row is None:
            raise ScoreSetError(f"{model}: score set {score_set_id} does not exist")
        if row.model_name != model:
            raise ScoreSetError(f"{model}: score set {score_set_id} belongs to {row.model_name}")
        if row.status == STAGED:
            raise ScoreSetError(
                f"{model}: score set {score_set_id} was not validated; run validate_score_set first"
            )
        champion = _hold_champion(conn, model)
        previous = _published(conn, model)
        refused = _refusal(row, champion, previous)
        if refused:
            current = None if previous is None else previous.score_set_id
            return PublishResult(model, score_set_id, published=False, current=current, reason=refused)
        _point(conn, model, score_set_id, published_ts, None if previous is None else previous.score_set_id)
        _prune(conn, model, score_set_id, keep_days)
    return PublishResult(model, score_set_id, published=True, current=score_set_id)


def lock_publication(conn: Connection, model: str) -> None:
    """Serialise the publishers of one model (and a rollback) until commit; bounded wait.

    Taken before the champion row by every caller (publish, rollback), so they never deadlock.
    """
    advisory_xact_lock(conn, f"the score publication lock of {model}", "publish-scores", model)


def follow_rollback(conn: Connection, model: str, *, restored: int, removed: int, ts: int) -> str:
    """After a rollback (inside its transaction): republish the restored version's latest set.

    The restored champion's newest kept set (published before, superseded, or validated but
    refused) is published again, whatever its ``as_of``: the rollback is an operator's decision
    and these were the scores of the model now back in charge. When the restored version has no
    set left, the published set (scored by the removed version) stays readable but is marked
    ``stale``, so consumers that check score_sets.status (or publication()) know. Returns a
    sentence saying which happened; the caller holds lock_publication.
    """
    latest = conn.execute(
        select(score_sets.c.score_set_id, score_sets.c.as_of)
        .where(
            score_sets.c.model_name == model,
            score_sets.c.model_version == int(restored),
            score_sets.c.status.in_([VALIDATED, PUBLISHED, SUPERSEDED, STALE]),
        )
        .order_by(score_sets.c.as_of.desc(), score_sets.c.created_ts.desc(), score_sets.c.score_set_id.desc())
        .limit(1)
    ).first()
    previous = _published(conn, model)
    current = None if previous is None else previous.score_set_id
    if latest is not None:
        if latest.score_set_id != current:
            _point(conn, model, latest.score_set_id, ts, current)
        return f"republished v{restored}'s score set {latest.score_set_id} (as_of {latest.as_of})"
    if previous is None:
        return f"no published scores; v{restored} has no score set to republish"
    conn.execute(update(score_sets).where(score_sets.c.score_set_id == current).values(status=STALE))
    return (
        f"v{restored} has no score set to republish: published set {current} "
        f"(scored by v{previous.model_version}, rolled back from v{removed}) is marked stale"
    )


def publication(engine: Engine, model: str) -> dict[str, Any] | None:
    """The model's published set: id, version, as_of, status ('published' or 'stale'), or None."""
    with engine.connect() as conn:
        row = _published(conn, model)
    return None if row is None else dict(row._mapping)


def read_current_scores(engine: Engine, model: str) -> pd.DataFrame:
    """The model's published scores (from the current_scores view), ordered by entity_key and item."""
    query = (
        select(current_scores)
        .where(current_scores.c.model_name == model)
        .order_by(current_scores.c.entity_key, current_scores.c.item)
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def published_score_set(engine: Engine, model: str) -> str | None:
    """The id of the model's published score set, or None."""
    with engine.connect() as conn:
        return conn.execute(
            select(published_scores.c.score_set_id).where(published_scores.c.model_name == model)
        ).scalar()


def score_set_status(engine: Engine, score_set_id: str) -> str | None:
    """A score set's status, or None when it does not exist."""
    with engine.connect() as conn:
        return conn.execute(
            select(score_sets.c.status).where(score_sets.c.score_set_id == score_set_id)
        ).scalar()


# --- internals -------------------------------------------------------------------------


def _hold_champion(conn: Connection, model: str) -> int | None:
    """The model's champion, its row held (FOR SHARE) so no promotion moves it before commit."""
    query = select(model_champions.c.version).where(model_champions.c.model_name == model)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    with bounded_lock_wait(conn, f"the champion row of {model}"):
        version = conn.execute(query).scalar()
    return None if version is None else int(version)


def _published(conn: Connection, model: str) -> Any:
    """The published set's row (id, version, as_of, status, published_ts), or None."""
    return conn.execute(
        select(
            published_scores.c.score_set_id,
            score_sets.c.model_version,
            score_sets.c.as_of,
            score_sets.c.status,
            published_scores.c.published_ts,
        )
        .select_from(
            published_scores.join(score_sets, score_sets.c.score_set_id == published_scores.c.score_set_id)
        )
        .where(published_scores.c.model_name == model)
    ).first()


def _refusal(row: Any, champion: int | None, previous: Any) -> str:
    """Why a set must not be published now ("" when it may be)."""
    if previous is not None and previous.score_set_id == row.score_set_id and previous.status == PUBLISHED:
        return ""  # already the published set: publishing again is a no-op
    if champion is not None and int(row.model_version) != champion:
        return (
            f"scored with v{row.model_version}, but the champion is now v{champion}: "
            "score again with the current champion"
        )
    # A stale set (its model was rolled back) does not hold back the restored champion's scores.
    if previous is not None and previous.status != STALE and int(row.as_of) < int(previous.as_of):
        return (
            f"its as_of {row.as_of} is older than the published set {previous.score_set_id}'s "
            f"as_of {previous.as_of}"
        )
    return ""


def _point(conn: Connection, model: str, score_set_id: str, published_ts: int, previous: str | None) -> None:
    """Flip the model's pointer to the set; the set becomes published, the previous one superseded."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(published_scores).values(
        model_name=model, score_set_id=score_set_id, published_ts=int(published_ts)
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["model_name"],
            set_={"score_set_id": stmt.excluded.score_set_id, "published_ts": stmt.excluded.published_ts},
        )
    )
    conn.execute(update(score_sets).where(score_sets.c.score_set_id == score_set_id).values(status=PUBLISHED))
    if previous is not None and previous != score_set_id:
        conn.execute(
            update(score_sets).where(score_sets.c.score_set_id == previous).values(status=SUPERSEDED)
        )


def _header(conn: Connection, score_set_id: str) -> dict[str, Any]:
    row = conn.execute(select(score_sets).where(score_sets.c.score_set_id == score_set_id)).first()
    if row is None:
        raise ScoreSetError(f"score set {score_set_id} does not exist")
    return dict(row._mapping)


def _failure(item: Any) -> str:
    config = item.expectation_config
    kind = config.type if config is not None else "?"
    column_name = config.kwargs.get("column") if config is not None else None
    result = item.result or {}
    observed = result.get("observed_value")
    if observed is None and "unexpected_count" in result:
        sample = (result.get("partial_unexpected_list") or [])[:3]
        observed = f"{result['unexpected_count']} rows, e.g. {sample}"
    where = f" on {column_name}" if column_name else ""
    note = f" ({config.notes})" if config is not None and config.notes else ""
    return f"{kind} failed{where}: observed {observed}{note}"


def _delete_sets(conn: Connection, ids: list[str]) -> None:
    if ids:
        conn.execute(delete(scores).where(scores.c.score_set_id.in_(ids)))
        conn.execute(delete(score_sets).where(score_sets.c.score_set_id.in_(ids)))


def _prune(conn: Connection, model: str, current: str, keep_days: int) -> None:
    """Keep the current set, the last KEEP_PUBLISHED published sets and every published set scored
    within ``keep_days`` of the newest one (by as_of); drop the others."""
    history = conn.execute(
        select(score_sets.c.score_set_id, score_sets.c.created_ts, score_sets.c.as_of)
        .where(score_sets.c.model_name == model, score_sets.c.status.in_([PUBLISHED, SUPERSEDED]))
        .order_by(score_sets.c.created_ts.desc(), score_sets.c.score_set_id.desc())
    ).all()
    kept = [r for r in history if r.score_set_id == current]
    kept += [r for r in history if r.score_set_id != current][: KEEP_PUBLISHED - 1]
    if keep_days > 0 and history:
        since = max(int(r.as_of) for r in history) - keep_days * DAY_S
        kept += [r for r in history if int(r.as_of) >= since]
    keep_ids = {r.score_set_id for r in kept}
    drop = [r.score_set_id for r in history if r.score_set_id not in keep_ids]
    if kept:
        # Staged or validated sets older than every kept published set, and a day older than the
        # newest, were abandoned (a crashed run, or a set compare-and-set refused). The day spares
        # a slower run still on its way to publish, so its publish reports instead of finding nothing.
        oldest = min(min(r.created_ts for r in kept), max(r.created_ts for r in kept) - ABANDONED_AFTER_S)
        drop += list(
            conn.execute(
                select(score_sets.c.score_set_id).where(
                    score_sets.c.model_name == model,
                    score_sets.c.status.in_([STAGED, VALIDATED]),
                    score_sets.c.created_ts < oldest,
                )
            ).scalars()
        )
    _delete_sets(conn, drop)
