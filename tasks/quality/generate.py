"""Generate the version-controlled suite files expectations/<table>.json from tasks/schema.py.

Run ``python -m tasks.quality.generate`` after changing the schema or a rule below, review the
diff of ``expectations/`` and commit it; a test checks that the files and this module agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tasks.quality.columns import MIN_TS, PARTITION_END, PARTITION_START, table_columns
from tasks.schema import RAW_TABLES

SUITE_DIR = Path(__file__).resolve().parents[2] / "expectations"

# Entity/catalogue tables feed every join downstream, so a small loss is already suspicious.
CATALOGUE_TABLES = frozenset({"raw_users", "raw_streamers", "raw_streams", "raw_ads", "raw_products"})
MAX_BAD_SHARE_EVENTS = 0.05
MAX_BAD_SHARE_CATALOGUE = 0.01
MAX_ROWS_PER_PARTITION = 50_000_000
MAX_TS_2100 = 4_102_444_800  # end timestamps may lie after max_ts (a stream still live), not after 2100
DEVICE_MOSTLY = 0.8
# The lower event-time bound is a per-source setting (tasks/settings.py: min_event_ts), so the
# suites take it as a parameter, like the caller's 'now' (max_ts).
MIN_TS_PARAMETER = {"$PARAMETER": "min_ts"}

ENUMS: dict[tuple[str | None, str], list[str]] = {
    (None, "device"): ["ios", "android", "web", "tv"],
    ("raw_ads", "bid_type"): ["cpm", "cpc"],
    ("raw_memberships", "action"): ["subscribe", "renew", "cancel"],
    ("raw_revenue", "source"): ["ad", "commerce", "membership", "gift", "paid_content"],
    ("raw_users", "channel"): ["organic", "referral", "paid_social", "campaign"],
}

# (min, max, why) per numeric column; finite upper bounds also reject +inf, min rejects -inf.
RANGES: dict[tuple[str | None, str], tuple[float, float, str]] = {
    (None, "is_commerce"): (0, 1, "flag is 0 or 1"),
    (None, "clicked"): (0, 1, "flag is 0 or 1"),
    (None, "converted"): (0, 1, "flag is 0 or 1"),
    (None, "position"): (1, 10, "ad slot position is 1..10"),
    (None, "hour"): (0, 23, "hour of day is 0..23"),
    # end_ts's lower bound is the source's min_ts in the suite (MIN_TS is its default).
    (None, "end_ts"): (MIN_TS, MAX_TS_2100, "end time not before min_ts and before 2100"),
    (None, "duration_s"): (0, 172_800, "watch duration is non-negative and under 48 h"),
    (None, "bid"): (0, 10_000, "bid is non-negative and sane"),
    (None, "impressions"): (0, 100_000_000, "hourly impressions non-negative and sane"),
    (None, "clicks"): (0, 100_000_000, "hourly clicks non-negative and sane"),
    (None, "conversions"): (0, 100_000_000, "hourly conversions non-negative and sane"),
    (None, "ctr"): (0, 1, "click-through rate is a share in [0, 1]"),
    (None, "spend"): (0, 1e9, "spend is non-negative and sane"),
    (None, "price"): (0, 1e6, "price is non-negative and sane"),
    (None, "commission_rate"): (0, 1, "commission rate is a share in [0, 1]"),
    (None, "quantity"): (1, 100_000, "an order line holds at least one item"),
    (None, "unit_price"): (0, 1e6, "unit price is non-negative and sane"),
    (None, "amount"): (0, 1e9, "money amount is non-negative and sane"),
    (None, "commission"): (0, 1e9, "commission is non-negative and sane"),
    (None, "platform_share"): (0, 1e9, "platform share is non-negative and sane"),
    (None, "fee"): (0, 1e6, "membership fee is non-negative and sane"),
    (None, "concurrent_viewers"): (0, 1e10, "viewer count is non-negative and sane"),
    (None, "bandwidth_mbps"): (0, 1e12, "bandwidth is non-negative and sane"),
    (None, "capacity_viewers"): (0, 1e10, "capacity is non-negative and sane"),
}

# (table, column_A, column_B, or_equal, why): column_A >= column_B (or >).
PAIRS: list[tuple[str, str, str, bool, str]] = [
    ("raw_ad_impressions", "clicked", "converted", True, "a conversion needs a click"),
    ("raw_ad_delivery", "impressions", "clicks", True, "clicks cannot exceed impressions"),
    ("raw_ad_delivery", "clicks", "conversions", True, "conversions cannot exceed clicks"),
    ("raw_streams", "end_ts", "event_ts", True, "a stream ends after it starts"),
    ("raw_watch_sessions", "end_ts", "event_ts", True, "a session ends after it starts"),
]


def _lookup(table_map: dict[tuple[str | None, str], Any], table: str, column: str) -> Any:
    """A per-table rule, else the rule shared by every table, else None."""
    return table_map.get((table, column), table_map.get((None, column)))


def _exp(kind: str, notes: str, **kwargs: Any) -> dict[str, Any]:
    """One expectation configuration in GX 1.x JSON form."""
    return {"type": kind, "kwargs": kwargs, "meta": {}, "notes": notes}


def build_suite(table: str) -> dict[str, Any]:
    """The suite of one raw table as a JSON-ready dict."""
    specs = table_columns(table)
    catalogue = table in CATALOGUE_TABLES
    exps: list[dict[str, Any]] = [
        _exp(
            "expect_table_row_count_to_be_between",
            "batch: an empty partition is rejected, never a vacuous pass of the column rules",
            min_value=1,
            max_value=MAX_ROWS_PER_PARTITION,
        ),
        _exp(
            "expect_table_columns_to_match_set",
            "batch: a renamed, dropped or extra column rejects the batch naming the column",
            column_set=[s.name for s in specs],
            exact_match=True,
        ),
        _exp(
            "expect_column_values_to_be_unique",
            "batch: event_id is the primary key; the caller dedupes, so a duplicate is a bug",
            column="event_id",
        ),
    ]
    for spec in specs:
        col = spec.name
        if not spec.nullable:
            exps.append(
                _exp(
                    "expect_column_values_to_not_be_null",
                    f"hard: {col} is required (NOT NULL in tasks/schema.py); NaN counts as null",
                    column=col,
                )
            )
        elif col == "device":
            exps.append(
                _exp(
                    "expect_column_values_to_not_be_null",
                    f"soft: device is optional per row, but more than {1 - DEVICE_MOSTLY:.0%} "
                    "missing in a partition means client telemetry broke",
                    column=col,
                    mostly=DEVICE_MOSTLY,
                )
            )
        if spec.kind == "str" and spec.length is not None:
            exps.append(
                _exp(
                    "expect_column_value_lengths_to_be_between",
                    f"hard: {col} fits VARCHAR({spec.length}); catches huge strings, emoji allowed",
                    column=col,
                    min_value=1,
                    max_value=spec.length,
                )
            )
        if (values := _lookup(ENUMS, table, col)) is not None:
            exps.append(
                _exp(
                    "expect_column_values_to_be_in_set",
                    f"hard: {col} is a closed vocabulary",
                    column=col,
                    value_set=values,
                )
            )
        if col == "event_ts":
            exps.append(
                _exp(
                    "expect_column_values_to_be_between",
                    "hard: event time not before min_ts (the source's lower bound, default "
                    "2000-01-01: rejects 1970) and not after max_ts (the caller's 'now'; "
                    "nothing in tasks/ reads the clock)",
                    column=col,
                    min_value=MIN_TS_PARAMETER,
                    max_value={"$PARAMETER": "max_ts"},
                )
            )
            exps.append(
                _exp(
                    "expect_column_pair_values_a_to_be_greater_than_b",
                    "hard: event_ts >= start of its event_date partition (helper column)",
                    column_A=col,
                    column_B=PARTITION_START,
                    or_equal=True,
                    ignore_row_if="either_value_is_missing",
                )
            )
            exps.append(
                _exp(
                    "expect_column_pair_values_a_to_be_greater_than_b",
                    "hard: event_ts < end of its event_date partition (helper column)",
                    column_A=PARTITION_END,
                    column_B=col,
                    or_equal=False,
                    ignore_row_if="either_value_is_missing",
                )
            )
        elif (bounds := _lookup(RANGES, table, col)) is not None:
            low, high, why = bounds
            exps.append(
                _exp(
                    "expect_column_values_to_be_between",
                    f"hard: {why}; rejects negative values and +/-inf",
                    column=col,
                    min_value=MIN_TS_PARAMETER if col == "end_ts" else low,
                    max_value=high,
                )
            )
        elif spec.kind in ("int", "float"):
            raise ValueError(f"{table}.{col}: numeric column without a range rule")
    for pair_table, col_a, col_b, or_equal, why in PAIRS:
        if pair_table == table:
            exps.append(
                _exp(
                    "expect_column_pair_values_a_to_be_greater_than_b",
                    f"hard: {why} ({col_a} >= {col_b})",
                    column_A=col_a,
                    column_B=col_b,
                    or_equal=or_equal,
                    ignore_row_if="either_value_is_missing",
                )
            )
    share = MAX_BAD_SHARE_CATALOGUE if catalogue else MAX_BAD_SHARE_EVENTS
    return {
        "name": table,
        "id": None,
        "expectations": exps,
        "meta": {
            "max_bad_share": share,
            "max_bad_share_why": (
                "catalogue/entity table: every downstream join depends on it, so more than 1% "
                "bad rows means the source is broken"
                if catalogue
                else "event table: up to 5% of rows may be quarantined (late clients, bad "
                "devices) before the partition is rejected as a whole"
            ),
            "parameters": {
                "max_ts": "epoch seconds; the caller's 'now' (no clock in tasks/)",
                "min_ts": "epoch seconds; the source's lower event-time bound (default 2000-01-01)",
            },
            "helper_columns": [PARTITION_START, PARTITION_END],
            "generated_by": "tasks/quality/generate.py",
        },
        "notes": "See expectations/README.md for hard/soft rules and mostly thresholds.",
    }


def render_suite(table: str) -> str:
    """The file text of one suite."""
    return json.dumps(build_suite(table), indent=2, ensure_ascii=False) + "\n"


def write_suites(directory: Path = SUITE_DIR) -> list[Path]:
    """Write every raw table's suite file and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in RAW_TABLES:
        path = directory / f"{table}.json"
        path.write_text(render_suite(table), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_suites(Path(sys.argv[1]) if len(sys.argv) > 1 else SUITE_DIR):
        print(written)
