"""Ingestion: landed batches → data-quality gate → raw warehouse tables, quarantine and run records.

One (table, partition) batch is written atomically: its good rows, its quarantined rows, its
validation run and the partition's status are written together or not at all, so a crash
mid-way leaves the batch pending and a rerun redoes it. Small batches (a source with hundreds
of small days) share a transaction of about COMMIT_ROWS rows, written with one statement per
table for them all, or (when a batch or an event id was recorded before) each batch in a
savepoint of its own; their landed files leave only after the commit. A batch is recognised
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from tasks import landing, quality
from tasks.db import insert_frame, write_tx
from tasks.quality.bounds import MAX_MESSAGE_CHARS, MAX_VALUE_CHARS, bounded, clip
from tasks.quality.coerce import blank
from tasks.schema import partition_status, quarantine, validation_runs
from tasks.warehouse import partition_row_count, partition_row_counts, raw_table

MAX_GROUP_ROWS = 2_000_000  # rows validated together: bounds memory at any platform scale
# Rows written per transaction: small partitions (a source with hundreds of small days) share
# one commit, each in a savepoint of its own; a big partition still commits alone.
COMMIT_ROWS = 20_000
# Landed files (bytes on disk) read and checked together: one hashing pass for a window of
# small partition files instead of one per file, with memory still bounded.
READ_BYTES = 16 * 2**20
BATCH_REJECTED = "batch_rejected"
UNREADABLE_TS = "event_ts_readable"
UNREADABLE_FILE = "landed_file_readable"
MAX_PAYLOAD_COLUMNS = 100  # columns kept of one quarantined row's payload
_JSON = json.JSONEncoder(
    default=str, ensure_ascii=False
)  # as json.dumps(..., default=str, ensure_ascii=False)


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
    for key, paths, read in _read_landed(groups):
        files, frames = [], []
        for path, frame in zip(paths, read, strict=True):
            if not isinstance(frame, landing.CorruptFile):
                frames.append(frame)
                files.append(path)
            elif path.exists():  # else another process took this file meanwhile
                results.append(_set_aside(engine, landing_root, table, key, path, str(frame), flow_run_id))
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


def _read_landed(
    groups: dict[str, list[Path]],
) -> Iterator[tuple[str, list[Path], list[pd.DataFrame | landing.CorruptFile]]]:
    """Each partition's landed files, read and checked about READ_BYTES of files at a time."""
    window: list[str] = []
    size = 0
    for n, key in enumerate(groups, start=1):
        window.append(key)
        size += sum(_size(path) for path in groups[key])
        if size < READ_BYTES and n < len(groups):
            continue
        read = iter(landing.read_verified_many([path for k in window for path in groups[k]]))
        for k in window:
            yield k, groups[k], [next(read) for _ in groups[k]]
        window, size = [], 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # gone or unreadable: reading it says which


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
        dup = np.zeros(len(frame), dtype=bool)
        if "event_id" in frame:
            dup = frame["event_id"].duplicated(keep="first").to_numpy(dtype=bool, copy=True)
            if dup.any():  # blank() only where needed: it is slow, and repeats are rare
                repeated = np.flatnonzero(dup)
                dup[repeated] = ~blank(frame["event_id"].iloc[repeated])
        dupes[batch.key] = int(dup.sum())
        frames.append(frame[~dup])
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
    outcomes, start = [], 0
    for batch, frame in zip(dated, frames, strict=True):
        day = dt.date.fromisoformat(batch.key)
        verdict = verdicts.get(day) or quality.validate_empty(table, day, max_ts=max_ts, min_ts=min_ts)
        stop = start + len(frame)
        outcomes.append(
            _Outcome(
                batch, verdict, typed.iloc[start:stop], combined.iloc[start:stop], dupes[batch.key], start
            )
        )
        start = stop
    payloads = _group_payloads(combined, outcomes)
    for chunk in _commit_chunks(outcomes):
        results += _commit_partitions(engine, table, chunk, typed, payloads, flow_run_id=flow_run_id)
    return results


@dataclass
class _Outcome:
    """One partition of a validated group, ready to be written."""

    batch: _Batch
    verdict: quality.Verdict
    typed: pd.DataFrame  # the partition's slice of the group, typed
    original: pd.DataFrame  # the same rows as delivered (for quarantine payloads)
    duplicates: int
    offset: int  # where the slice starts in the group


def _commit_chunks(outcomes: list[_Outcome]) -> list[list[_Outcome]]:
    """Consecutive partitions of about COMMIT_ROWS rows together (a bigger one alone)."""
    chunks: list[list[_Outcome]] = []
    rows = 0
    for outcome in outcomes:
        if not chunks or rows + len(outcome.typed) > COMMIT_ROWS:
            chunks.append([])
            rows = 0
        chunks[-1].append(outcome)
        rows += len(outcome.typed)
    return chunks


def _group_payloads(combined: pd.DataFrame, outcomes: list[_Outcome]) -> np.ndarray:
    """The payload of every row the group will quarantine, at its position (None elsewhere).

    Built once for the whole group rather than per partition: a dirty source quarantines a
    few hundred rows on each of hundreds of days.
    """
    needed = np.zeros(len(combined), dtype=bool)
    for outcome in outcomes:
        start, stop = outcome.offset, outcome.offset + len(outcome.typed)
        rows = outcome.verdict.bad_rows["row"].to_numpy(dtype="int64")
        needed[rows[(rows >= start) & (rows < stop)]] = True
        if not outcome.verdict.accepted:
            needed[start:stop] = True  # every row of a rejected batch is quarantined
    out = np.full(len(combined), None, dtype=object)
    positions = np.flatnonzero(needed)
    out[positions] = _payloads(combined.iloc[positions])
    return out


def _commit_partitions(
    engine: Engine,
    table: str,
    outcomes: list[_Outcome],
    typed: pd.DataFrame,
    payloads: np.ndarray,
    *,
    flow_run_id: str | None,
) -> list[PartitionResult]:
    """Write partitions' outcomes in one transaction, each partition in a savepoint of its own.

    A partition's rows, quarantine, run and status are written together or not at all; a
    batch already recorded (a replay, a concurrent rerun) rolls back its savepoint alone and
    is skipped. Landed files leave only after the commit, so a crash redoes them all.

    The usual case, where no batch and no event id was recorded before, is written for all
    the partitions at once (one statement per table instead of several per partition); any
    conflict rolls that back and the partitions are written one by one as above. ``typed``
    and ``payloads`` are the whole group's typed rows and quarantine payloads.
    """
    plans = [_plan(table, outcome, flow_run_id) for outcome in outcomes]
    with write_tx(engine) as conn:
        results = _write_together(conn, table, plans, typed, payloads)
        if results is None:
            results = []
            for plan in plans:
                try:
                    with conn.begin_nested():
                        result = _write_partition(conn, table, plan, _payloads_of(plan.outcome, payloads))
                except IntegrityError:
                    batch, suite_hash = plan.outcome.batch, plan.outcome.verdict.suite_hash
                    if not _already_recorded(engine, table, batch.fingerprint, suite_hash):
                        raise
                    result = _skipped(table, batch.key, len(batch.frame))
                results.append(result)
    for outcome in outcomes:
        _remove(outcome.batch.files)
    return results


@dataclass
class _Plan:
    """What one partition's outcome writes: its run, loaded rows and quarantined rows."""

    outcome: _Outcome
    run_id: str
    partition: dt.date
    good_rows: np.ndarray  # positions in the partition of the rows to load (none if rejected)
    quarantined: pd.DataFrame  # row (position in the partition), rule, column_name, reason
    run: dict[str, Any]  # the validation run's values but rows_loaded

    @property
    def good(self) -> pd.DataFrame:
        """The typed rows to load, with the raw table's columns."""
        columns = [c.name for c in raw_table(self.outcome.verdict.table).columns]
        return self.outcome.typed.iloc[self.good_rows][columns]

    @property
    def status(self) -> str:
        return "validated" if self.outcome.verdict.accepted else "rejected"


def _plan(table: str, outcome: _Outcome, flow_run_id: str | None) -> _Plan:
    """Split one partition's outcome into the rows to load and the rows to quarantine."""
    batch, verdict, typed = outcome.batch, outcome.verdict, outcome.typed
    partition = dt.date.fromisoformat(batch.key)
    run_id = str(uuid.uuid4())
    # verdict.bad_rows positions index the whole group; rebase them onto this partition.
    bad = verdict.bad_rows.copy()
    bad["row"] = bad["row"].to_numpy(dtype="int64") - outcome.offset
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
    good = np.flatnonzero(~is_bad) if verdict.accepted else np.zeros(0, dtype=np.int64)
    run = _run_values(
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
        rows_duplicate=outcome.duplicates,
        fingerprint=batch.fingerprint,
        report=verdict.report,
        flow_run_id=flow_run_id,
    )
    return _Plan(outcome, run_id, partition, good, quarantined, run)


def _payloads_of(outcome: _Outcome, payloads: np.ndarray) -> np.ndarray:
    """The group's payloads (see ``_group_payloads``) at this partition's positions."""
    return payloads[outcome.offset : outcome.offset + len(outcome.typed)]


def _write_partition(conn: Connection, table: str, plan: _Plan, payloads: np.ndarray) -> PartitionResult:
    """Write one partition's outcome: rows, quarantine, run, status.

    ``payloads`` holds the quarantined rows' payloads at their positions in this partition.
    """
    # The run row goes first: a concurrent rerun of this batch blocks on its unique
    # key here and then fails, before it has written anything else.
    conn.execute(validation_runs.insert().values(**plan.run))
    loaded = insert_frame(conn, raw_table(table), plan.good) if len(plan.good_rows) else 0
    conn.execute(
        validation_runs.update().where(validation_runs.c.run_id == plan.run_id).values(rows_loaded=loaded)
    )
    _quarantine_rows(
        conn, plan.run_id, table, plan.partition, plan.outcome.original, plan.quarantined, payloads
    )
    _set_status(conn, table, plan.partition, plan.run_id, plan.status)
    return _result(table, plan, loaded)


def _write_together(
    conn: Connection, table: str, plans: list[_Plan], typed: pd.DataFrame, payloads: np.ndarray
) -> list[PartitionResult] | None:
    """Write several partitions' outcomes with one statement per table, in one savepoint.

    Exactly what ``_write_partition`` of each would write, in the same order, when none of
    their batches and event ids is recorded yet; otherwise (a unique key hit) nothing is
    written and the answer is None.
    """
    if len({plan.partition for plan in plans}) < len(plans):
        return None  # one status row per partition and statement
    target = raw_table(table)
    try:
        with conn.begin_nested():
            # Runs first, as one by one: a concurrent rerun blocks on their unique keys here.
            conn.execute(
                validation_runs.insert(), [{**p.run, "rows_loaded": len(p.good_rows)} for p in plans]
            )
            rows = np.concatenate([p.outcome.offset + p.good_rows for p in plans])
            if len(rows):  # one selection from the group, not one per partition
                columns = [c.name for c in target.columns]
                insert_frame(conn, target, typed.iloc[rows][columns], ignore_existing=False)
            entries = [
                (p.run_id, p.partition, p.outcome.original, p.quarantined, _payloads_of(p.outcome, payloads))
                for p in plans
                if not p.quarantined.empty
            ]
            if entries:
                insert_frame(conn, quarantine, _quarantine_entries(table, entries), ignore_existing=False)
            counts = partition_row_counts(conn, table, [p.partition for p in plans])
            _set_statuses(
                conn, table, [(p.partition, p.run_id, p.status, counts.get(p.partition, 0)) for p in plans]
            )
    except IntegrityError:
        return None
    return [_result(table, plan, len(plan.good_rows)) for plan in plans]


def _result(table: str, plan: _Plan, loaded: int) -> PartitionResult:
    outcome = plan.outcome
    return PartitionResult(
        table=table,
        partition=outcome.batch.key,
        run_id=plan.run_id,
        accepted=outcome.verdict.accepted,
        skipped=False,
        rows_total=len(outcome.batch.frame),
        rows_loaded=loaded,
        rows_quarantined=plan.run["rows_quarantined"],
        rows_duplicate=outcome.duplicates,
        message=clip(outcome.verdict.message(), MAX_MESSAGE_CHARS),
        rows_skipped=len(plan.good_rows) - loaded,  # event ids the table already holds
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


def _record_run(conn: Connection, **values: Any) -> None:
    conn.execute(validation_runs.insert().values(**_run_values(**values)))


def _run_values(
    *, partition: dt.date | None, report: dict[str, Any], table: str, **values: Any
) -> dict[str, Any]:
    """A validation run's row."""
    return {
        "table_name": table,
        "partition_date": partition,
        "bad_share": (values["rows_quarantined"] / values["rows_total"]) if values["rows_total"] else 1.0,
        "report": json.dumps(bounded(report), default=str),
        "finished_ts": int(time.time()),
        **values,
    }


def _quarantine_rows(
    conn: Connection,
    run_id: str,
    table: str,
    partition: dt.date | None,
    original: pd.DataFrame,
    rows: pd.DataFrame,
    payloads: np.ndarray | None = None,
) -> None:
    """Keep each rejected row with the rule it broke; the payload is the row as delivered.

    ``payloads`` (by row position) saves building them here; see ``_group_payloads``.
    """
    if not rows.empty:
        frame = _quarantine_frame(run_id, table, partition, original, rows, payloads)
        insert_frame(conn, quarantine, frame, ignore_existing=False)


def _quarantine_frame(
    run_id: str,
    table: str,
    partition: dt.date | None,
    original: pd.DataFrame,
    rows: pd.DataFrame,
    payloads: np.ndarray | None = None,
) -> pd.DataFrame:
    """The quarantine entries of a partition's rejected rows (see ``_quarantine_rows``)."""
    return _quarantine_entries(table, [(run_id, partition, original, rows, payloads)])


def _quarantine_entries(
    table: str,
    parts: Sequence[tuple[str, dt.date | None, pd.DataFrame, pd.DataFrame, np.ndarray | None]],
) -> pd.DataFrame:
    """The quarantine entries of several partitions, in their order: (run id, partition,
    rows as delivered, rejected rows, payloads by row position or None) each.

    Value by value the same as one partition at a time; built as one frame, so the per-value
    work (ids, rules and reasons cut to their columns) runs once for them all.
    """
    ids: list[str | None] = []
    payload_parts: list[np.ndarray] = []
    for _run_id, _partition, original, rows, payloads in parts:
        source = original.reset_index(drop=True)
        positions = rows["row"].to_numpy(dtype="int64")
        if payloads is None:
            # One payload per distinct bad row (a row breaking several rules is stored once per rule).
            distinct, back = np.unique(positions, return_inverse=True)
            payloads = np.asarray(_payloads(source.iloc[distinct]), dtype=object)
            positions_of = back.reshape(-1)
        else:
            positions_of = positions
        payload_parts.append(payloads[positions_of])
        ids += _event_ids(source["event_id"], positions) if "event_id" in source else [None] * len(positions)
    sizes = [len(rows) for _, _, _, rows, _ in parts]
    rows = (
        pd.concat([rows for _, _, _, rows, _ in parts], ignore_index=True) if len(parts) > 1 else parts[0][3]
    )
    reasons = rows["reason"].astype(str)
    long = (reasons.str.len() > MAX_MESSAGE_CHARS).to_numpy(dtype=bool)
    reason = reasons.to_numpy(dtype=object).copy()
    reason[long] = [clip(r, MAX_MESSAGE_CHARS) for r in reason[long]]
    return pd.DataFrame(
        {
            "run_id": np.repeat(np.array([p[0] for p in parts], dtype=object), sizes),
            "table_name": table,
            "partition_date": np.repeat(np.array([p[1] for p in parts], dtype=object), sizes),
            "event_id": ids,
            "rule": rows["rule"].astype(str).str.slice(0, 64).to_numpy(),
            "column_name": rows["column_name"].to_numpy(),
            "reason": reason,
            "payload": np.concatenate(payload_parts) if payload_parts else np.array([], dtype=object),
        }
    )


def _event_ids(column: pd.Series, positions: np.ndarray) -> list[str | None]:
    """The event ids at ``positions`` as quarantine stores them: text of at most 256 characters."""
    if isinstance(column.dtype, pd.StringDtype) and column.dtype.storage == "pyarrow":
        picked = pa.array(column).take(pa.array(positions, type=pa.int64()))
        # utf8_slice_codeunits counts code points (Arrow's unit of utf8), as str[:256] does.
        return pc.utf8_slice_codeunits(picked, start=0, stop=256).to_pylist()  # type: ignore[no-any-return]
    values = column.to_numpy(dtype=object)[positions]
    return [None if _is_missing(i) else str(i)[:256] for i in values]


def _payloads(rows: pd.DataFrame) -> list[str]:
    """Each row as delivered, as JSON, with huge values and very wide rows cut (see bounds).

    Built column by column (a bad day can quarantine hundreds of thousands of rows); the
    result is the same as ``_payload`` of each row.
    """
    if rows.empty:
        return []
    if rows.iloc[0].dtype != object:
        # A row read whole has its columns' common dtype (numbers upcast): keep what that gives.
        return [_payload(rows.iloc[i]) for i in range(len(rows))]
    names = {str(k): i for i, k in enumerate(rows.columns)}  # a repeated name: its last column
    kept = list(names.items())
    keys = [clip(name) for name, _ in kept[:MAX_PAYLOAD_COLUMNS]]
    columns = [_json_values(rows.iloc[:, i]) for _, i in kept[:MAX_PAYLOAD_COLUMNS]]
    extra = {"…": f"+{len(kept) - MAX_PAYLOAD_COLUMNS} entries"} if len(kept) > MAX_PAYLOAD_COLUMNS else {}
    return [
        _JSON.encode({**dict(zip(keys, values, strict=True)), **extra})
        for values in zip(*columns, strict=True)
    ]


def _json_values(column: pd.Series) -> list[Any]:
    """One column's values as ``_payload`` stores them: None when missing, plain, text clipped.

    Vectorised where the column's type says what its values are; value by value otherwise.
    """
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else None
    text = kind is None and pd.api.types.is_string_dtype(column.dtype)  # pandas' string dtypes
    numbers = (kind is not None and kind in _NUMBER_KINDS) or isinstance(column.dtype, _MASKED)
    inferred = pd.api.types.infer_dtype(column, skipna=True) if kind == "O" else None
    if not (text or numbers or inferred in _SCALAR_OBJECTS):
        return [None if _is_missing(v) else _json_value(v) for v in column]
    missing = column.isna().to_numpy(dtype=bool)
    if missing.all():
        return [None] * len(column)
    if text or inferred == "string":
        values: Any = column.to_numpy(dtype=object, na_value=None).copy()  # type: ignore[call-overload]
        values[missing] = None
        if max(map(len, values[~missing])) > MAX_VALUE_CHARS:
            values = np.array([None if v is None else clip(clip(v)) for v in values], dtype=object)
        return [None if v is None else str(v) for v in values] if inferred else values.tolist()
    if numbers or inferred in _AS_THEY_ARE:
        values = column.to_numpy(dtype=object).copy()  # Python ints, floats and bools
    else:
        values = np.array([_json_value(v) for v in column], dtype=object)
    values[missing] = None
    return values.tolist()


# numpy kinds whose values become Python numbers (missing: NaN, which isna finds).
_NUMBER_KINDS = frozenset("biuf")
_MASKED = (pd.Int64Dtype, pd.Float64Dtype, pd.BooleanDtype, pd.Int32Dtype, pd.Float32Dtype)
# Object columns of values _payload keeps unchanged.
_AS_THEY_ARE = frozenset({"date", "datetime", "decimal"})
# numpy kinds whose values become Python numbers (missing: NaN, which isna finds).
_NUMBER_KINDS = frozenset("biuf")
_MASKED = (pd.Int64Dtype, pd.Float64Dtype, pd.BooleanDtype, pd.Int32Dtype, pd.Float32Dtype)
# Object columns holding only scalars: isna of the column is isna of each value.
_SCALAR_OBJECTS = frozenset(
    {
        "string",
        "integer",
        "floating",
        "mixed-integer-float",
        "decimal",
        "boolean",
        "date",
        "datetime",
        "empty",
    }
)


def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        return clip(clip(value))  # as _payload: clipped, then bounded
    if isinstance(value, (dict, list, tuple)):
        return bounded(value)
    return _plain(value)


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
    _set_statuses(conn, table, [(partition, run_id, status, partition_row_count(conn, table, partition))])


def _set_statuses(conn: Connection, table: str, verdicts: list[tuple[dt.date, str, str, int]]) -> None:
    """Upsert partitions' statuses: (partition, run id, status, rows the partition holds) each."""
    now = int(time.time())
    rows = [
        {
            "table_name": table,
            "partition_date": partition,
            "status": status,
            "last_run_id": run_id,
            "row_count": count,
            "updated_ts": now,
        }
        for partition, run_id, status, count in verdicts
    ]
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(partition_status)
    keys = ["table_name", "partition_date"]
    upsert = insert.on_conflict_do_update(
        index_elements=keys, set_={k: insert.excluded[k] for k in rows[0] if k not in keys}
    )
    conn.execute(upsert, rows)


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
