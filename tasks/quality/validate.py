"""Validate all partitions of a raw table in one GX run and derive a verdict per partition."""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.quality import docs
from tasks.quality.bounds import bounded, clip
from tasks.quality.coerce import BAD_ROW_COLUMNS, coerce_frame, empty_bad_rows
from tasks.quality.columns import (
    HELPER_COLUMNS,
    MIN_TS,
    PARTITION_END,
    PARTITION_START,
    is_key,
    table_columns,
)
from tasks.quality.engine import run_suite
from tasks.quality.errors import QualityError
from tasks.quality.suites import (
    BATCH_TYPES,
    LoadedSuite,
    expectation_columns,
    is_soft,
    load_suite,
    user_columns,
)
from tasks.quality.verdict import CheckFailure, Verdict

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

DAY_S = 86_400
_RUNTIME: dict[tuple[str, frozenset[str]], tuple[ExpectationSuite, list[dict[str, Any]]]] = {}


@dataclass
class _Partitions:
    """Row -> partition code mapping for one frame."""

    dates: list[datetime.date]
    codes: np.ndarray
    sizes: np.ndarray

    def per_partition(self, rows: np.ndarray) -> np.ndarray:
        """Count the given row positions per partition."""
        return np.bincount(self.codes[rows], minlength=len(self.dates))


def _runtime_suite(
    loaded: LoadedSuite, present: frozenset[str]
) -> tuple[ExpectationSuite, list[dict[str, Any]]]:
    """The suite as run on the helper-augmented frame, without rules on absent columns."""
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.expectation_suite import expectationSuiteSchema

    key = (loaded.sha256, present)
    if key in _RUNTIME:
        return _RUNTIME[key]
    configs: list[dict[str, Any]] = []
    for config in loaded.raw["expectations"]:
        if not set(expectation_columns(config.get("kwargs", {}))) <= present:
            continue  # the column-set check already rejects and names the missing column
        config = copy.deepcopy(config)
        config.setdefault("meta", {})["_idx"] = len(configs)
        if config["type"] == "expect_table_columns_to_match_set":
            config["kwargs"]["column_set"] = list(config["kwargs"]["column_set"]) + list(HELPER_COLUMNS)
        configs.append(config)
    document = {**copy.deepcopy(loaded.raw), "expectations": configs}
    suite = ExpectationSuite(**expectationSuiteSchema.load(document))
    if len(suite.expectations) != len(configs):
        raise QualityError(f"{loaded.name}: GX dropped expectations of the runtime suite")
    _RUNTIME[key] = (suite, configs)
    return suite, configs


def _partitions(frame: pd.DataFrame, fallback: datetime.date | None, table: str) -> _Partitions:
    """Group rows by event_date; rows without one go to the fallback (or earliest) partition."""
    n = len(frame)
    if "event_date" in frame.columns:
        day = frame["event_date"].to_numpy(dtype="datetime64[D]")
    else:
        day = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    missing = np.isnat(day)
    if missing.any():
        if fallback is None:
            if missing.all():
                raise QualityError(
                    f"{table}: no row has an event_date, so no partition can be judged; "
                    "pass partition= to reject the batch instead"
                )
            fallback = day[~missing].min().astype(datetime.date)
        day = np.where(missing, np.datetime64(fallback, "D"), day)
    uniq, codes = np.unique(day, return_inverse=True)
    dates = [d.astype(datetime.date) for d in uniq]
    return _Partitions(dates, codes.astype(np.int64), np.bincount(codes, minlength=len(uniq)))


def _gx_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame GX sees: Int64 columns as float64 and partition start/end epoch helper columns.

    GX's pandas `between` is vectorised only for numpy dtypes (nullable Int64 falls back to a
    per-value Python lambda, ~1.5 s per million rows) and its column-pair rules raise on pd.NA;
    float64 holds every bounded integer here exactly, and NaN is still null to GX.
    """
    columns: dict[str, Any] = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.Int64Dtype):
            columns[name] = column.to_numpy(dtype="float64", na_value=np.nan)
    if "event_date" in frame.columns:
        day = frame["event_date"].to_numpy(dtype="datetime64[s]")
        start = np.where(np.isnat(day), np.nan, day.astype("int64").astype("float64"))
        columns[PARTITION_START] = start
        columns[PARTITION_END] = start + DAY_S
    return frame.assign(**columns)


def _reason(frame: pd.DataFrame, rows: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """Readable reasons for failing rows: the rule's note plus the offending value(s)."""
    note = str(config.get("notes") or config["type"]).split(": ", 1)[-1]
    read = expectation_columns(config["kwargs"])
    cols = [c for c in read if c not in HELPER_COLUMNS and c in frame.columns]
    if any(c in HELPER_COLUMNS for c in read):
        cols.append("event_date")
    if config["type"] == "expect_column_values_to_not_be_null":
        what = "null or blank" if is_key(cols[0]) else "null"
        return np.full(len(rows), f"{cols[0]} is {what}: {note}", dtype=object)
    text = pd.Series(np.full(len(rows), note + " — ", dtype=object))
    for i, col in enumerate(cols):
        values = frame[col].iloc[rows].astype("object").astype(str).str.slice(0, 40)
        text = text + ("" if i == 0 else ", ") + f"{col}=" + values.to_numpy()
    return text.to_numpy(dtype=object)


def _share_failure(bad: pd.DataFrame, rows_total: int, limit: float) -> CheckFailure:
    """The batch failure for too many bad rows, naming the worst column and rule."""
    counts = bad.groupby(["column_name", "rule"])["row"].nunique().sort_values(ascending=False)
    (column, rule), worst = counts.index[0], int(counts.iloc[0])
    distinct = int(bad["row"].nunique())
    share = distinct / rows_total
    more = f"; {distinct} distinct bad rows in all" if distinct != worst else ""
    return CheckFailure(
        rule=str(rule),
        column=str(column),
        observed=f"{distinct}/{rows_total}",
        message=f"broke on {worst} of {rows_total} rows ({share:.1%} > max {limit:.1%}){more}",
    )


def _entry(config: dict[str, Any]) -> dict[str, Any]:
    """The static part of a report entry for one expectation."""
    kind = "batch" if config["type"] in BATCH_TYPES else ("soft" if is_soft(config) else "hard")
    return {
        "rule": config["type"],
        "column": user_columns(config["kwargs"]),
        "kind": kind,
        "mostly": config["kwargs"].get("mostly", 1.0),
        "notes": config.get("notes"),
    }


def validate_partitions(
    table: str,
    frame: pd.DataFrame,
    *,
    max_ts: int,
    min_ts: int = MIN_TS,
    cast_failures: pd.DataFrame | None = None,
    partition: datetime.date | None = None,
    suite_dir: Path | None = None,
    max_bad_share: float | None = None,
) -> dict[datetime.date, Verdict]:
    """Validate a typed frame that may hold several partitions and return a verdict per partition.

    ``cast_failures`` are the bad rows coerce_frame returned (row positions of this frame);
    ``partition`` receives rows without an event_date (default: the earliest partition).
    ``min_ts``/``max_ts`` bound event times: the source's lower bound and the caller's 'now'.
    ``max_bad_share`` overrides the suite's limit for a source known to be dirty (an import
    mapping may set it); the override is recorded in each verdict's report.
    """
    loaded = load_suite(table, suite_dir)
    limit = loaded.max_bad_share if max_bad_share is None else max_bad_share
    typed, cast_bad = coerce_frame(table, frame)  # no-op for an already typed frame
    if cast_failures is not None and not cast_failures.empty:
        cast_bad = pd.concat([cast_failures[BAD_ROW_COLUMNS], cast_bad], ignore_index=True)
    if typed.empty:
        if partition is None:
            raise QualityError(f"{table}: empty frame and no partition; use validate_empty")
        return {
            partition: validate_empty(table, partition, max_ts=max_ts, min_ts=min_ts, suite_dir=suite_dir)
        }
    parts = _partitions(typed, partition, table)
    work = _gx_frame(typed)
    suite, configs = _runtime_suite(loaded, frozenset(work.columns))
    result = run_suite(table, work, suite, {"max_ts": max_ts, "min_ts": min_ts})
    n_parts = len(parts.dates)
    failures: list[list[CheckFailure]] = [[] for _ in range(n_parts)]
    reports: list[list[dict[str, Any]]] = [[] for _ in range(n_parts)]
    bad_pieces = [cast_bad]
    for item in result.results:
        config = configs[int(item.expectation_config.meta["_idx"])]  # type: ignore[union-attr]
        kind, kwargs, res = config["type"], config["kwargs"], item.result
        base = _entry(config)
        column = base["column"]
        if kind == "expect_table_row_count_to_be_between":
            low, high = kwargs.get("min_value"), kwargs.get("max_value")
            for p, size in enumerate(parts.sizes):
                ok = (low is None or size >= low) and (high is None or size <= high)
                reports[p].append({**base, "success": bool(ok), "observed": int(size)})
                if not ok:
                    failures[p].append(
                        CheckFailure(kind, None, str(size), f"row count {size} not in [{low}, {high}]")
                    )
            continue
        if kind == "expect_table_columns_to_match_set":
            mismatch = (res.get("details") or {}).get("mismatched") or {}
            missing = [c for c in mismatch.get("missing", []) if c not in HELPER_COLUMNS]
            extra = [c for c in mismatch.get("unexpected", []) if c not in HELPER_COLUMNS]
            observed = bounded([c for c in res.get("observed_value", []) if c not in HELPER_COLUMNS])
            for p in range(n_parts):
                reports[p].append({**base, "success": bool(item.success), "observed": observed})
            if not item.success:
                named = [(c, "missing (renamed or dropped)") for c in missing]
                named += [(clip(str(c), 64), "unexpected (extra)") for c in extra[:20]]
                if len(extra) > 20:
                    named.append((f"…+{len(extra) - 20}", "unexpected (extra)"))
                for name, what in named:
                    for p in range(n_parts):
                        failures[p].append(CheckFailure(kind, name, what, f"column {name} is {what}"))
            continue
        idx = np.asarray(res.get("unexpected_index_list") or [], dtype=np.int64)
        per_part = parts.per_partition(idx)
        if base["kind"] == "hard":
            for p in range(n_parts):
                reports[p].append(
                    {**base, "success": bool(per_part[p] == 0), "unexpected_count": int(per_part[p])}
                )
            if len(idx):
                bad_pieces.append(
                    pd.DataFrame(
                        {
                            "row": idx,
                            "rule": kind,
                            "column_name": column,
                            "reason": _reason(typed, idx, config),
                        }
                    )
                )
            continue
        # Batch-level row rules (uniqueness, soft `mostly` rules): judged per partition from the
        # one GX run, with GX's own denominator (all rows for not-null, non-null rows otherwise).
        mostly = float(kwargs.get("mostly", 1.0))
        if kind == "expect_column_values_to_not_be_null" or column is None:
            denominators = parts.sizes
        else:
            present = np.ones(len(work), dtype=bool)
            for col in expectation_columns(kwargs):
                present &= work[col].notna().to_numpy()
            denominators = parts.per_partition(np.flatnonzero(present))
        for p in range(n_parts):
            den, broken = int(denominators[p]), int(per_part[p])
            ok = den == 0 or (den - broken) / den >= mostly
            reports[p].append({**base, "success": ok, "unexpected_count": broken, "element_count": den})
            if not ok:
                failures[p].append(
                    CheckFailure(
                        kind,
                        column,
                        f"{broken}/{den}",
                        f"failed on {broken} of {den} rows ({broken / den:.1%}); allowed "
                        f"{1 - mostly:.1%} (mostly={mostly})",
                    )
                )
    run_name = docs.remember(table, result)  # after reading: it trims the big index lists
    bad_all = pd.concat([b for b in bad_pieces if not b.empty] or [empty_bad_rows()], ignore_index=True)
    codes = parts.codes[bad_all["row"].to_numpy(dtype=np.int64)]
    order = np.lexsort((bad_all["row"].to_numpy(dtype=np.int64), codes))  # partition, then row
    bad_all, codes = bad_all.iloc[order].reset_index(drop=True), codes[order]
    bounds = np.searchsorted(codes, np.arange(n_parts + 1))
    verdicts: dict[datetime.date, Verdict] = {}
    for p, day in enumerate(parts.dates):
        bad = bad_all.iloc[bounds[p] : bounds[p + 1]].reset_index(drop=True)
        size = int(parts.sizes[p])
        if not bad.empty and bad["row"].nunique() / size > limit:
            failures[p].append(_share_failure(bad, size, limit))
        verdicts[day] = Verdict(
            table=table,
            partition=day,
            suite_name=loaded.name,
            suite_hash=loaded.sha256,
            accepted=not failures[p],
            rows_total=size,
            bad_rows=bad,
            failures=failures[p],
            report={
                "table": table,
                "partition": day.isoformat(),
                "suite_name": loaded.name,
                "suite_hash": loaded.sha256,
                "rows_total": size,
                "bad_rows": int(bad["row"].nunique()) if not bad.empty else 0,
                "max_bad_share": limit,
                "gx_run": run_name,
                "expectations": reports[p],
            },
            max_bad_share=limit,
        )
    return verdicts


def empty_typed_frame(table: str) -> pd.DataFrame:
    """A zero-row frame with the raw table's columns and types."""
    from tasks.quality.coerce import PANDAS_DTYPES

    return pd.DataFrame({s.name: pd.Series([], dtype=PANDAS_DTYPES[s.kind]) for s in table_columns(table)})


def validate_empty(
    table: str,
    partition: datetime.date,
    *,
    max_ts: int,
    min_ts: int = MIN_TS,
    suite_dir: Path | None = None,
) -> Verdict:
    """Validate an empty batch through GX: the row-count band rejects it, never a vacuous pass."""
    loaded = load_suite(table, suite_dir)
    work = _gx_frame(empty_typed_frame(table))
    suite, configs = _runtime_suite(loaded, frozenset(work.columns))
    result = run_suite(table, work, suite, {"max_ts": max_ts, "min_ts": min_ts})
    run_name = docs.remember(table, result)
    failures: list[CheckFailure] = []
    report: list[dict[str, Any]] = []
    for item in result.results:
        config = configs[int(item.expectation_config.meta["_idx"])]  # type: ignore[union-attr]
        entry = {**_entry(config), "success": bool(item.success)}
        observed = bounded(item.result.get("observed_value"))
        if observed is not None:
            entry["observed"] = observed
        report.append(entry)
        if not item.success:
            failures.append(
                CheckFailure(
                    config["type"],
                    entry["column"],
                    str(observed),
                    f"GX: {config['type']} failed on the empty batch (observed {observed})",
                )
            )
    if not failures:
        raise QualityError(f"{table}: the suite accepted an empty batch; it lacks a row-count band")
    return Verdict(
        table=table,
        partition=partition,
        suite_name=loaded.name,
        suite_hash=loaded.sha256,
        accepted=False,
        rows_total=0,
        bad_rows=empty_bad_rows(),
        failures=failures,
        report={
            "table": table,
            "partition": partition.isoformat(),
            "suite_name": loaded.name,
            "suite_hash": loaded.sha256,
            "rows_total": 0,
            "bad_rows": 0,
            "max_bad_share": loaded.max_bad_share,
            "gx_run": run_name,
            "expectations": report,
        },
        max_bad_share=loaded.max_bad_share,
    )
