"""Ingestion: landed batches → data-quality gate → raw warehouse tables, quarantine and run records.

One (table, partition) batch is one database transaction: its good rows, its quarantined
rows, its validation run and the partition's status are written together or not at all,
so a crash mid-way leaves the batch pending and a rerun redoes it. A batch is recognised
by its fingerprint; a batch already recorded (a replay, a rerun after a crash, a second
process racing on the same files) is skipped, never loaded twice.

Nothing read is lost: every row of a batch is loaded, quarantined with the rule it broke,
dropped as a duplicate of an equal non-null event id, or skipped as already recorded, and
the counts say which. A row without an event id is a bad row, never a duplicate. A landed
file that cannot be read is set aside with its reason and recorded as a failed run.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from tasks import landing, quality
from tasks.db import insert_frame, write_tx
from tasks.quality.bounds import MAX_MESSAGE_CHARS, bounded, clip
from tasks.quality.coerce import blank
from tasks.schema import partition_status, quarantine, validation_runs
from tasks.warehouse import partition_row_count, raw_table

MAX_GROUP_ROWS = 2_000_000  # rows validated together: bounds memory at any platform scale
BATCH_REJECTED = "batch_rejected"
UNREADABLE_TS = "event_ts_readable"
UNREADABLE_FILE = "landed_file_readable"
MAX_PAYLOAD_COLUMNS = 100  # columns kept of one quarantined row's payload


@dataclass(frozen=True)
class PartitionResult:
    """What happened to one (table, partition) batch."""

    table: str
    partition: str
    run_id: str | None
    accepted: bool
    skipped: bool
    rows_total: int
    rows_loaded: int
    rows_quarantined: int
    rows_duplicate: int
    message: str
    rows_skipped: int = 0  # rows already recorded: a replayed batch, or event ids already loaded

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


@dataclass
class _Batch:
    key: str
    files: list[Path]
    frame: pd.DataFrame
    fingerprint: str


def ingest_table(
    engine: Engine,
    landing_root: Path,
    table: str,
    *,
    max_ts: int,
    min_ts: int | None = None,
    partition: dt.date | None = None,
    flow_run_id: str | None = None,
    max_bad_share: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[PartitionResult]:
    """Validate and load every pending landed batch of one raw table.

    ``max_bad_share`` overrides the suite's limit (see ``validate_partitions``); ``min_ts`` is
    the source's lower event-time bound (default: its setting, ``tasks.settings.min_event_ts``).
    """
    from tasks.settings import min_event_ts

    raw_table(table)  # refuse an undeclared name before touching files or SQL
    bounds = {"max_ts": max_ts, "min_ts": min_event_ts(table) if min_ts is None else min_ts}
    groups = landing.pending(landing_root, table, partition).get(table, {})
    results: list[PartitionResult] = []
    group: list[_Batch] = []
    group_rows = 0
    done = 0
    for key, paths in groups.items():
        files, frames = [], []
        for path in paths:
            try:
                frames.append(landing.read_verified(path))
                files.append(path)
            except landing.CorruptFile as exc:
                if not path.exists():
                    continue  # another process took this file meanwhile
                results.append(_set_aside(engine, landing_root, table, key, path, str(exc), flow_run_id))
        if not files:
            continue
        frame = pd.concat(frames, ignore_index=True)
        group.append(_Batch(key, files, frame, landing.batch_fingerprint(files)))
        group_rows += len(frame)
        if group_rows >= MAX_GROUP_ROWS:
            results += _ingest_group(
                engine, table, group, **bounds, flow_run_id=flow_run_id, max_bad_share=max_bad_share
            )
            done += len(group)
            group, group_rows = [], 0
            if on_progress:
                on_progress(done, len(groups))
    if group:
        results += _ingest_group(
            engine, table, group, **bounds, flow_run_id=flow_run_id, max_bad_share=max_bad_share
        )
        if on_progress:
            on_progress(len(groups), len(groups))
    return results


def _ingest_group(
    engine: Engine,
    table: str,
    batches: list[_Batch],
    *,
    max_ts: int,
    min_ts: int,
    flow_run_id: str | None,
    max_bad_share: float | None,
) -> list[PartitionResult]:
    """Validate several partitions' batches in one pass, then commit each on its own."""
    results: list[PartitionResult] = []
    dated = [b for b in batches if b.key != landing.UNKNOWN]
    for batch in batches:
        if batch.key == landing.UNKNOWN:
            results.append(_commit_unreadable(engine, table, batch, flow_run_id=flow_run_id))

    frames, dupes = [], {}
    for batch in dated:
        frame = batch.frame.copy()
        frame["event_date"] = dt.date.fromisoformat(batch.key)  # the partition it was landed in
        # Only equal non-null ids are duplicates; blank ids stay, and the gate quarantines them.
        dup = (
            frame["event_id"].duplicated(keep="first") & ~blank(frame["event_id"])
            if "event_id" in frame
            else pd.Series(False, index=frame.index)
        )
        dupes[batch.key] = int(dup.sum())
        frames.append(frame[~dup.to_numpy()])
    if not frames:
        return results
    combined = pd.concat(frames, ignore_index=True)
    typed, cast_bad = quality.coerce_frame(table, combined)
    verdicts = (
        quality.validate_partitions(
            table, typed, max_ts=max_ts, min_ts=min_ts, cast_failures=cast_bad, max_bad_share=max_bad_share
        )
        if len(typed)
        else {}
    )
    # Batches were concatenated in order, so each partition is one contiguous slice.
    start = 0
    for batch, frame in zip(dated, frames, strict=True):
        day = dt.date.fromisoformat(batch.key)
        verdict = verdicts.get(day) or quality.validate_empty(table, day, max_ts=max_ts, min_ts=min_ts)
        stop = start + len(frame)
        results.append(
            _commit_partition(
                engine,
                table,
                batch,
                verdict,
                typed.iloc[start:stop],
                combined.iloc[start:stop],
                dupes[batch.key],
                offset=start,
                flow_run_id=flow_run_id,
            )
        )
        start = stop
    return results


def _commit_partition(
    engine: Engine,
    table: str,
    batch: _Batch,
    verdict: quality.Verdict,
    typed: pd.DataFrame,
    original: pd.DataFrame,
    duplicates: int,
    *,
    offset: int,
    flow_run_id: str | None,
) -> PartitionResult:
    """Write one partition's outcome in one transaction: rows, quarantine, run, status."""
    partition = dt.date.fromisoformat(batch.key)
    run_id = str(uuid.uuid4())
    # verdict.bad_rows positions index the whole group; rebase them onto this partition.
    bad = verdict.bad_rows.copy()
    bad["row"] = bad["row"].to_numpy(dtype="int64") - offset
    bad = bad[(bad["row"] >= 0) & (bad["row"] < len(typed))]
    is_bad = np.zeros(len(typed), dtype=bool)
    is_bad[bad["row"].to_numpy(dtype="int64")] = True

    quarantined = bad
    if not verdict.accepted:
        rest = np.flatnonzero(~is_bad)
        quarantined = pd.concat(
            [
                bad,
                pd.DataFrame(
                    {
                        "row": rest,
                        "rule": BATCH_REJECTED,
                        "column_name": None,
                        "reason": clip(f"batch rejected: {verdict.message()}", MAX_MESSAGE_CHARS),
                    }
                ),
            ],
            ignore_index=True,
        ).astype({"row": "int64"})
    good = typed.iloc[np.flatnonzero(~is_bad)] if verdict.accepted else typed.iloc[0:0]
    columns = [c.name for c in raw_table(table).columns]
    try:
        with write_tx(engine) as conn:
            # The run row goes first: a concurrent rerun of this batch blocks on its unique
            # key here and then fails, before it has written anything else.
            _record_run(
                conn,
                run_id=run_id,
                table=table,
                partition=partition,
                suite_name=verdict.suite_name,
                suite_hash=verdict.suite_hash,
                source=_source(batch.files),
                success=verdict.accepted,
                rows_total=len(batch.frame),
                rows_loaded=0,
                rows_quarantined=len(set(quarantined["row"])),
                rows_duplicate=duplicates,
                fingerprint=batch.fingerprint,
                report=verdict.report,
                flow_run_id=flow_run_id,
            )
            loaded = insert_frame(conn, raw_table(table), good[columns]) if len(good) else 0
            conn.execute(
                validation_runs.update().where(validation_runs.c.run_id == run_id).values(rows_loaded=loaded)
            )
            _quarantine_rows(conn, run_id, table, partition, original, quarantined)
            _set_status(conn, table, partition, run_id, "validated" if verdict.accepted else "rejected")
    except IntegrityError:
        if not _already_recorded(engine, table, batch.fingerprint, verdict.suite_hash):
            raise
        _remove(batch.files)
        return _skipped(table, batch.key, len(batch.frame))
    _remove(batch.files)
    return PartitionResult(
        table=table,
        partition=batch.key,
        run_id=run_id,
        accepted=verdict.accepted,
        skipped=False,
        rows_total=len(batch.frame),
        rows_loaded=loaded,
        rows_quarantined=len(set(quarantined["row"])),
        rows_duplicate=duplicates,
        message=clip(verdict.message(), MAX_MESSAGE_CHARS),
        rows_skipped=len(good) - loaded,  # event ids the table already holds
    )


def _commit_unreadable(
    engine: Engine, table: str, batch: _Batch, *, flow_run_id: str | None
) -> PartitionResult:
    """Rows whose event time could not be read belong to no partition: quarantine them all."""
    run_id = str(uuid.uuid4())
    message = f"{table}: {len(batch.frame)} rows without a readable event_ts quarantined"
    rows = pd.DataFrame(
        {
            "row": range(len(batch.frame)),
            "rule": UNREADABLE_TS,
            "column_name": "event_ts",
            "reason": "event_ts is missing or not a timestamp",
        }
    )
    try:
        with write_tx(engine) as conn:
            _record_run(
                conn,
                run_id=run_id,
                table=table,
                partition=None,
                suite_name=table,
                suite_hash="-",
                source=_source(batch.files),
                success=False,
                rows_total=len(batch.frame),
                rows_loaded=0,
                rows_quarantined=len(batch.frame),
                rows_duplicate=0,
                fingerprint=batch.fingerprint,
                report={"rule": UNREADABLE_TS, "unexpected_count": len(batch.frame)},
                flow_run_id=flow_run_id,
            )
            _quarantine_rows(conn, run_id, table, None, batch.frame, rows)
    except IntegrityError:
        if not _already_recorded(engine, table, batch.fingerprint, "-"):
            raise
        _remove(batch.files)
        return _skipped(table, batch.key, len(batch.frame))
    _remove(batch.files)
    return PartitionResult(
        table, batch.key, run_id, False, False, len(batch.frame), 0, len(batch.frame), 0, message
    )


def _record_run(
    conn: Connection, *, partition: dt.date | None, report: dict[str, Any], table: str, **values: Any
) -> None:
    conn.execute(
        validation_runs.insert().values(
            table_name=table,
            partition_date=partition,
            bad_share=(values["rows_quarantined"] / values["rows_total"]) if values["rows_total"] else 1.0,
            report=json.dumps(bounded(report), default=str),
            finished_ts=int(time.time()),
            **values,
        )
    )


def _quarantine_rows(
    conn: Connection,
    run_id: str,
    table: str,
    partition: dt.date | None,
    original: pd.DataFrame,
    rows: pd.DataFrame,
) -> None:
    """Keep each rejected row with the rule it broke; the payload is the row as delivered."""
    if rows.empty:
        return
    source = original.reset_index(drop=True)
    payloads = {int(i): _payload(source.iloc[int(i)]) for i in set(rows["row"])}
    ids = source["event_id"] if "event_id" in source else pd.Series([None] * len(source))
    frame = pd.DataFrame(
        {
            "run_id": run_id,
            "table_name": table,
            "partition_date": partition,
            "event_id": [
                None if pd.isna(ids.iloc[int(i)]) else str(ids.iloc[int(i)])[:256] for i in rows["row"]
            ],
            "rule": rows["rule"].astype(str).str.slice(0, 64).to_numpy(),
            "column_name": rows["column_name"].to_numpy(),
            "reason": rows["reason"].astype(str).map(lambda r: clip(r, MAX_MESSAGE_CHARS)).to_numpy(),
            "payload": [payloads[int(i)] for i in rows["row"]],
        }
    )
    insert_frame(conn, quarantine, frame, ignore_existing=False)


def _payload(row: pd.Series) -> str:
    """The row as delivered, as JSON, with huge values and very wide rows cut (see bounds)."""
    values = {str(k): (None if _is_missing(v) else _plain(v)) for k, v in row.items()}
    values = {k: (clip(v) if isinstance(v, str) else v) for k, v in values.items()}
    return json.dumps(bounded(values, items=MAX_PAYLOAD_COLUMNS), default=str, ensure_ascii=False)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON writes as a number (not as its text)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _set_status(conn: Connection, table: str, partition: dt.date, run_id: str, status: str) -> None:
    values = {
        "table_name": table,
        "partition_date": partition,
        "status": status,
        "last_run_id": run_id,
        "row_count": partition_row_count(conn, table, partition),
        "updated_ts": int(time.time()),
    }
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(partition_status)
    keys = ["table_name", "partition_date"]
    conn.execute(
        insert.values(**values).on_conflict_do_update(
            index_elements=keys, set_={k: v for k, v in values.items() if k not in keys}
        )
    )


def _already_recorded(engine: Engine, table: str, fingerprint: str, suite_hash: str) -> bool:
    with engine.connect() as conn:
        query = select(validation_runs.c.run_id).where(
            validation_runs.c.table_name == table,
            validation_runs.c.fingerprint == fingerprint,
            validation_runs.c.suite_hash == suite_hash,
        )
        return conn.execute(query).first() is not None


def _skipped(table: str, key: str, rows: int) -> PartitionResult:
    """A batch already recorded: its rows are counted as skipped, so the counts still add up."""
    message = f"{table} {key}: batch already ingested"
    return PartitionResult(table, key, None, True, True, rows, 0, 0, 0, message, rows_skipped=rows)


def _source(files: list[Path]) -> str:
    """The batch's file names, cut to the run record's column size."""
    return clip(", ".join(p.name for p in files), 400)


def _set_aside(
    engine: Engine,
    root: Path,
    table: str,
    key: str,
    path: Path,
    reason: str,
    flow_run_id: str | None,
) -> PartitionResult:
    """Set an unreadable landed file aside and record it as a failed run an operator sees.

    The file leaves the landing zone (so later runs do not fail on it again) for
    ``_corrupt/`` next to a ``.reason`` file; the run record names file, reason and place.
    """
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    target = landing.set_aside(root, path, reason)
    partition = None if key == landing.UNKNOWN else dt.date.fromisoformat(key)
    message = f"{table} {key}: landed file {path.name} set aside — {reason}; moved to {target}"
    report = {"rule": UNREADABLE_FILE, "file": path.name, "reason": reason, "moved_to": str(target)}
    run_id: str | None = str(uuid.uuid4())
    try:
        with write_tx(engine) as conn:
            _record_run(
                conn,
                run_id=run_id,
                table=table,
                partition=partition,
                suite_name=table,
                suite_hash="-",
                source=_source([path]),
                success=False,
                rows_total=0,
                rows_loaded=0,
                rows_quarantined=0,
                rows_duplicate=0,
                fingerprint=digest,
                report=report,
                flow_run_id=flow_run_id,
            )
    except IntegrityError:
        if not _already_recorded(engine, table, digest, "-"):
            raise
        run_id = None  # the same damaged file was recorded before
    return PartitionResult(table, key, run_id, False, False, 0, 0, 0, 0, clip(message, MAX_MESSAGE_CHARS))


def _remove(files: list[Path]) -> None:
    for path in files:
        path.unlink(missing_ok=True)
