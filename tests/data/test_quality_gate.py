"""The data-quality gate: verdicts per partition, bad rows, and errors that must raise."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.quality import (
    QualityError,
    build_data_docs,
    coerce_frame,
    validate_empty,
    validate_partitions,
)
from tasks.quality.generate import SUITE_DIR
from tasks.schema import RAW_TABLES
from tests.data.quality_frames import DAY, DAY_TS, MAX_TS, good_frame

TABLES = sorted(RAW_TABLES)
BETWEEN = "expect_column_values_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
OF_TYPE = "expect_column_values_to_be_of_type"
COLUMN_SET = "expect_table_columns_to_match_set"


def one(table: str, frame: pd.DataFrame, **kwargs: object):
    """Validate a single-partition frame and return its only verdict."""
    verdicts = validate_partitions(table, frame, max_ts=MAX_TS, **kwargs)  # type: ignore[arg-type]
    assert list(verdicts) == [DAY]
    return verdicts[DAY]


@pytest.mark.parametrize("table", TABLES)
def test_good_batch_is_accepted(table: str) -> None:
    """A valid frame over three partitions gives three accepted verdicts without bad rows."""
    verdicts = validate_partitions(table, good_frame(table, 30, days=3), max_ts=MAX_TS)
    assert sorted(verdicts) == [DAY + datetime.timedelta(days=d) for d in range(3)]
    for verdict in verdicts.values():
        assert verdict.accepted, verdict.message()
        assert verdict.rows_total == 10 and verdict.bad_rows.empty and verdict.bad_share == 0.0
        assert verdict.suite_name == table and len(verdict.suite_hash) == 64
        json.dumps(verdict.report)
        assert "accepted" in verdict.message()


# --- D1: an empty batch -------------------------------------------------------------------


@pytest.mark.parametrize("table", ["raw_orders", "raw_ad_impressions", "raw_traffic"])
def test_d1_empty_batch_rejected_by_row_count(table: str) -> None:
    """An empty batch is rejected by GX's row-count band, never a vacuous pass."""
    verdict = validate_empty(table, DAY, max_ts=MAX_TS)
    assert not verdict.accepted and verdict.rows_total == 0 and verdict.bad_share == 1.0
    assert [f.rule for f in verdict.failures] == ["expect_table_row_count_to_be_between"]
    assert verdict.failures[0].observed == "0"
    assert "expect_table_row_count_to_be_between" in verdict.message()


def test_d1_empty_frame_with_partition_goes_through_gx() -> None:
    """validate_partitions on an empty frame with a partition rejects it the same way."""
    empty = good_frame("raw_orders").iloc[:0]
    verdicts = validate_partitions("raw_orders", empty, max_ts=MAX_TS, partition=DAY)
    assert not verdicts[DAY].accepted


# --- D2: null key columns and the documented mostly threshold ------------------------------


@pytest.mark.parametrize(
    ("table", "column"),
    [("raw_orders", "user_key"), ("raw_gifts", "amount"), ("raw_ad_impressions", "event_ts")],
)
def test_d2_partly_null_key_rows_are_bad(table: str, column: str) -> None:
    """A few null cells in a required column quarantine those rows, naming the column."""
    frame = good_frame(table, 100)
    frame.loc[[3, 50], column] = None
    verdict = one(table, frame)
    assert verdict.accepted, verdict.message()  # 2% <= 5%
    bad = verdict.bad_rows[verdict.bad_rows["rule"] == NOT_NULL]
    assert sorted(bad["row"]) == [3, 50] and set(bad["column_name"]) == {column}
    assert bad["reason"].str.contains(f"{column} is null").all()


@pytest.mark.parametrize(("table", "column"), [("raw_orders", "user_key"), ("raw_gifts", "amount")])
def test_d2_all_null_key_column_rejected(table: str, column: str) -> None:
    """A required column that is entirely null rejects the batch naming column and rule."""
    frame = good_frame(table, 40)
    frame[column] = None
    verdict = one(table, frame)
    assert not verdict.accepted and verdict.bad_share == 1.0
    assert (verdict.failures[-1].column, verdict.failures[-1].rule) == (column, NOT_NULL)
    assert f"{column}: {NOT_NULL} broke on 40 of 40 rows" in verdict.message()


def test_d2_null_event_date_rows_go_to_the_given_partition() -> None:
    """Rows without an event_date are bad and judged in the partition the caller names."""
    frame = good_frame("raw_follows", 50)
    frame.loc[7, "event_date"] = pd.NaT
    verdict = one("raw_follows", frame, partition=DAY)
    assert verdict.bad_rows.query("column_name == 'event_date'")["row"].tolist() == [7]


@pytest.mark.parametrize(("nulls", "accepted"), [(20, True), (21, False)])
def test_d2_device_mostly_threshold(nulls: int, accepted: bool) -> None:
    """device is soft (mostly=0.8): 20% missing is accepted, 21% rejects; rows are kept."""
    frame = good_frame("raw_ad_impressions", 100)
    frame.loc[: nulls - 1, "device"] = None
    verdict = one("raw_ad_impressions", frame)
    assert verdict.accepted is accepted, verdict.message()
    assert verdict.bad_rows.empty  # soft rules never quarantine rows
    if not accepted:
        assert verdict.failures[0].column == "device" and verdict.failures[0].rule == NOT_NULL
        assert "21 of 100" in verdict.message()


# --- D3: renamed, dropped, retyped or extra columns ----------------------------------------


def _failing_columns(verdict) -> set[str | None]:
    """Columns named by the verdict's batch failures."""
    return {f.column for f in verdict.failures}


def test_d3_renamed_column_rejected() -> None:
    """A renamed column is reported as missing (old name) and extra (new name)."""
    verdict = one("raw_orders", good_frame("raw_orders").rename(columns={"quantity": "qty"}))
    assert not verdict.accepted and {"quantity", "qty"} <= _failing_columns(verdict)
    assert all(f.rule == COLUMN_SET for f in verdict.failures)
    assert "quantity" in verdict.message() and COLUMN_SET in verdict.message()


def test_d3_dropped_column_rejected() -> None:
    """A dropped column rejects the batch naming it; the other rules still run."""
    verdict = one("raw_streams", good_frame("raw_streams").drop(columns=["end_ts"]))
    assert not verdict.accepted and _failing_columns(verdict) == {"end_ts"}
    assert {e["column"] for e in verdict.report["expectations"]} >= {"event_id", "region"}


def test_d3_extra_column_rejected() -> None:
    """An extra column rejects the batch naming it, never a helper column."""
    frame = good_frame("raw_follows").assign(surprise=1)
    verdict = one("raw_follows", frame)
    assert not verdict.accepted and _failing_columns(verdict) == {"surprise"}
    observed = verdict.report["expectations"][1]["observed"]
    assert not any(c.startswith("__") for c in observed)


def test_d3_retyped_column_rejected() -> None:
    """A column whose values no longer cast (text in an integer column) makes every row bad."""
    raw = good_frame("raw_orders", 30).astype({"quantity": "object"})
    raw["quantity"] = "a few"
    typed, cast_bad = coerce_frame("raw_orders", raw)
    assert set(cast_bad["rule"]) == {OF_TYPE} and set(cast_bad["column_name"]) == {"quantity"}
    assert len(cast_bad) == 30
    verdict = one("raw_orders", typed, cast_failures=cast_bad)
    assert not verdict.accepted and verdict.bad_share == 1.0
    assert f"quantity: {OF_TYPE} broke on 30 of 30 rows" in verdict.message()
    # validating the untyped frame directly gives the same verdict
    assert one("raw_orders", raw).message() == verdict.message()


def test_coerce_casts_file_values() -> None:
    """Strings from a CSV-like source cast to the schema types; uncastable cells are listed."""
    raw = good_frame("raw_orders", 4).astype("object")
    raw["event_date"] = "2026-01-05"
    raw["quantity"] = ["1", "2.0", "2.5", None]
    raw["unit_price"] = ["9.5", "x", "inf", "1"]
    typed, bad = coerce_frame("raw_orders", raw)
    assert str(typed["quantity"].dtype) == "Int64" and typed["quantity"].tolist()[:2] == [1, 2]
    assert typed["unit_price"].dtype == np.float64 and np.isinf(typed["unit_price"][2])
    assert sorted(zip(bad["row"], bad["column_name"], strict=True)) == [
        (1, "unit_price"),
        (2, "quantity"),
    ]
    assert (typed["event_date"] == pd.Timestamp(DAY)).all()


# --- D5: bad values quarantined with a reason; the bad-share gate --------------------------


def _bad(table: str, column: str, value: object, rows: list[int], n: int = 100) -> pd.DataFrame:
    """A good frame with `value` written into `column` at `rows`."""
    frame = good_frame(table, n)
    frame[column] = frame[column].astype("object")
    frame.loc[rows, column] = value  # type: ignore[call-overload]
    return frame


D5_CASES = [
    ("raw_watch_sessions", "duration_s", -5, BETWEEN, "duration_s"),
    ("raw_ad_delivery", "ctr", 1.5, BETWEEN, "ctr"),
    (
        "raw_ad_delivery",
        "clicks",
        10**6,
        "expect_column_pair_values_a_to_be_greater_than_b",
        "impressions,clicks",
    ),
    ("raw_orders", "event_ts", 0, BETWEEN, "event_ts"),  # 1970
    ("raw_gifts", "amount", float("nan"), NOT_NULL, "amount"),
    ("raw_gifts", "amount", float("inf"), BETWEEN, "amount"),
    ("raw_paid_content", "price", float("-inf"), BETWEEN, "price"),
    ("raw_follows", "user_key", "u" * 65, "expect_column_value_lengths_to_be_between", "user_key"),
    ("raw_ad_impressions", "position", 11, BETWEEN, "position"),
    ("raw_memberships", "action", "upgrade", "expect_column_values_to_be_in_set", "action"),
]


@pytest.mark.parametrize(("table", "column", "value", "rule", "named"), D5_CASES)
def test_d5_bad_rows_quarantined_under_threshold(
    table: str, column: str, value: object, rule: str, named: str
) -> None:
    """A few bad values are listed as bad rows with rule and reason; the batch is accepted."""
    typed, cast_bad = coerce_frame(table, _bad(table, column, value, [4, 9]))
    verdict = one(table, typed, cast_failures=cast_bad)
    assert verdict.accepted, verdict.message()
    hits = verdict.bad_rows[(verdict.bad_rows["rule"] == rule)]
    assert sorted(set(hits["row"])) == [4, 9] and set(hits["column_name"]) == {named}
    assert (hits["reason"].str.len() > 0).all()
    assert verdict.bad_share == pytest.approx(0.02)
    assert "2 of 100 rows quarantined" in verdict.message()


@pytest.mark.parametrize(("table", "column", "value", "rule", "named"), D5_CASES)
def test_d5_batch_rejected_over_threshold(
    table: str, column: str, value: object, rule: str, named: str
) -> None:
    """Bad rows above max_bad_share (5% here) reject the partition naming column and rule."""
    typed, cast_bad = coerce_frame(table, _bad(table, column, value, list(range(6))))
    verdict = one(table, typed, cast_failures=cast_bad)
    assert not verdict.accepted and verdict.bad_share == pytest.approx(0.06)
    assert any(f.column == named for f in verdict.failures), verdict.message()
    assert "> max 5.0%" in verdict.message()


def test_d5_threshold_is_inclusive_at_max_bad_share() -> None:
    """Exactly max_bad_share of bad rows is still accepted; one more row rejects."""
    at = one("raw_gifts", _bad("raw_gifts", "amount", -1.0, list(range(5))))
    over = one("raw_gifts", _bad("raw_gifts", "amount", -1.0, list(range(6))))
    assert at.accepted and not over.accepted


def test_d5_future_and_out_of_partition_timestamps() -> None:
    """event_ts after max_ts, or outside its event_date day, is a bad row."""
    frame = good_frame("raw_orders", 100)
    frame.loc[1, "event_ts"] = DAY_TS + 86_400  # next day, wrong partition
    frame.loc[2, "event_ts"] = DAY_TS - 1  # previous day
    frame.loc[3, "event_ts"] = DAY_TS + 80_000
    verdict = validate_partitions("raw_orders", frame, max_ts=DAY_TS + 70_000)[DAY]
    bad = verdict.bad_rows
    assert sorted(set(bad["row"])) == [1, 2, 3] and set(bad["column_name"]) == {"event_ts"}
    assert set(bad.query("row == 3")["rule"]) == {BETWEEN}  # only the max_ts rule
    pair = bad[bad["rule"] == "expect_column_pair_values_a_to_be_greater_than_b"]
    assert sorted(pair["row"]) == [1, 2]
    assert pair["reason"].str.contains("event_date=2026-01-05").all()


def test_d5_emoji_inside_allowed_length_is_fine() -> None:
    """Emoji count as characters; a short (even 64-character) emoji string is accepted."""
    frame = good_frame("raw_streams", 20)
    frame.loc[0, "region"] = "🎮 gaming 🇰🇷"
    frame.loc[1, "category"] = "😀" * 64
    verdict = one("raw_streams", frame)
    assert verdict.accepted and verdict.bad_rows.empty


def test_partitions_are_judged_separately() -> None:
    """One bad partition is rejected while its neighbours are accepted; rows stay global."""
    frame = good_frame("raw_gifts", 300, days=3)
    day2 = frame.index[frame["event_date"] == pd.Timestamp(DAY + datetime.timedelta(days=1))]
    frame.loc[day2[:20], "amount"] = -1.0
    verdicts = validate_partitions("raw_gifts", frame, max_ts=MAX_TS)
    assert [v.accepted for v in verdicts.values()] == [True, False, True]
    rejected = verdicts[DAY + datetime.timedelta(days=1)]
    assert sorted(rejected.bad_rows["row"]) == sorted(day2[:20].tolist())


def test_duplicate_event_id_is_a_batch_failure() -> None:
    """A duplicate event_id (the caller should have deduped) rejects the batch."""
    frame = good_frame("raw_follows", 20)
    frame.loc[5, "event_id"] = frame.at[6, "event_id"]  # type: ignore[index, assignment]
    verdict = one("raw_follows", frame)
    assert not verdict.accepted and verdict.failures[0].column == "event_id"


# --- D7: GX or its suites fail -> QualityError, never "skipped" ---------------------------


def _suite_copy(tmp_path: Path, table: str) -> Path:
    """A private copy of a table's suite file to break."""
    shutil.copy(SUITE_DIR / f"{table}.json", tmp_path / f"{table}.json")
    return tmp_path / f"{table}.json"


def test_d7_missing_suite_file_raises(tmp_path: Path) -> None:
    """No suite file: QualityError, for full and empty batches alike."""
    with pytest.raises(QualityError, match="cannot be read"):
        validate_partitions("raw_orders", good_frame("raw_orders"), max_ts=MAX_TS, suite_dir=tmp_path)
    with pytest.raises(QualityError):
        validate_empty("raw_orders", DAY, max_ts=MAX_TS, suite_dir=tmp_path)


def test_d7_corrupt_suite_json_raises(tmp_path: Path) -> None:
    """A truncated suite file: QualityError."""
    path = _suite_copy(tmp_path, "raw_orders")
    path.write_text(path.read_text()[:200])
    with pytest.raises(QualityError, match="not valid JSON"):
        validate_partitions("raw_orders", good_frame("raw_orders"), max_ts=MAX_TS, suite_dir=tmp_path)


def test_d7_unknown_expectation_raises_not_dropped(tmp_path: Path) -> None:
    """GX silently drops an invalid expectation from a suite; the gate refuses the suite."""
    path = _suite_copy(tmp_path, "raw_orders")
    suite = json.loads(path.read_text())
    suite["expectations"].append({"type": "expect_column_values_to_be_bogus", "kwargs": {}})
    path.write_text(json.dumps(suite))
    with pytest.raises(QualityError, match="GX accepted only"):
        validate_partitions("raw_orders", good_frame("raw_orders"), max_ts=MAX_TS, suite_dir=tmp_path)


def test_d7_expectation_that_errors_raises(tmp_path: Path) -> None:
    """An expectation raising inside GX (invalid regex) surfaces as QualityError."""
    path = _suite_copy(tmp_path, "raw_orders")
    suite = json.loads(path.read_text())
    suite["expectations"].append(
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "user_key", "regex": "("}}
    )
    path.write_text(json.dumps(suite))
    with pytest.raises(QualityError, match="errored in GX"):
        validate_partitions("raw_orders", good_frame("raw_orders"), max_ts=MAX_TS, suite_dir=tmp_path)


def test_d7_gx_crash_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX raising from validate itself becomes QualityError."""
    from great_expectations.datasource.fluent.interfaces import Batch

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Batch, "validate", boom)
    with pytest.raises(QualityError, match="disk on fire"):
        validate_partitions("raw_orders", good_frame("raw_orders"), max_ts=MAX_TS)


def test_data_docs_built_locally(tmp_path: Path) -> None:
    """GX Data Docs are built for the verdicts given and index.html is returned."""
    verdicts = validate_partitions("raw_gifts", good_frame("raw_gifts", days=2), max_ts=MAX_TS)
    index = build_data_docs(tmp_path / "site", verdicts.values())
    assert index.name == "index.html" and index.exists()
    assert any((tmp_path / "site").rglob("*.html"))
