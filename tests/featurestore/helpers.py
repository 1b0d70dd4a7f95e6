"""Small builders for feature-store tests: raw rows, partition verdicts and tiny test views."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from sqlalchemy import Connection, and_, update

from tasks.db import insert_frame
from tasks.featurestore import Feature, FeatureView
from tasks.schema import RAW_TABLES, partition_status

DAY = dt.date(2026, 1, 10)


def epoch(day: dt.date, hour: float = 0.0) -> int:
    """Epoch seconds of an hour of a UTC day."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return int(midnight.timestamp() + hour * 3600)


def days(start: dt.date, n: int) -> list[dt.date]:
    """n consecutive days from start."""
    return [start + dt.timedelta(days=i) for i in range(n)]


def raw(table: str, rows: list[dict[str, Any]], prefix: str = "") -> pd.DataFrame:
    """Raw rows with event ids and event_date derived from each row's event_ts."""
    frame = pd.DataFrame(rows)
    frame.insert(0, "event_id", [f"{prefix}{table}-{i}" for i in range(len(frame))])
    frame["event_date"] = [dt.datetime.fromtimestamp(ts, dt.UTC).date() for ts in frame["event_ts"]]
    return frame


def load(conn: Connection, table: str, rows: list[dict[str, Any]], prefix: str = "") -> None:
    """Insert raw rows into a raw table."""
    insert_frame(conn, RAW_TABLES[table], raw(table, rows, prefix))


def set_status(
    conn: Connection, table: str, dates: list[dt.date], status: str = "validated", run_id: str = "run-1"
) -> None:
    """Record (or overwrite) the latest validation verdict of partitions."""
    ps = partition_status
    for day in dates:
        changed = conn.execute(
            update(ps)
            .where(and_(ps.c.table_name == table, ps.c.partition_date == day))
            .values(status=status, last_run_id=run_id)
        ).rowcount
        if not changed:
            conn.execute(
                ps.insert().values(
                    table_name=table,
                    partition_date=day,
                    status=status,
                    last_run_id=run_id,
                    row_count=0,
                    updated_ts=0,
                )
            )


def gift_view(
    name: str = "test_gifts", lookback: int = 1, ttl_s: int = 86_400, sql_extra: str = ""
) -> FeatureView:
    """A small SQL view over raw_gifts: per-user gift count and sum over the lookback window."""
    return FeatureView(
        name=name,
        entity="user",
        features=(Feature("gifts_count", "int"), Feature("gifts_sum", "float")),
        ttl_s=ttl_s,
        sources=("raw_gifts",),
        lookback_days=lookback,
        sql=(
            "SELECT user_key, CAST(:part_end AS BIGINT) AS feature_ts, COUNT(*) AS gifts_count, "
            "SUM(amount) AS gifts_sum FROM raw_gifts "
            f"WHERE event_date BETWEEN :first_date AND :partition_date {sql_extra}GROUP BY user_key"
        ),
    )


def gift(user: str, ts: int, amount: float, streamer: str = "s1") -> dict[str, Any]:
    """One raw_gifts row."""
    return {
        "event_ts": ts,
        "user_key": user,
        "streamer_id": streamer,
        "stream_id": "st1",
        "amount": amount,
        "platform_share": amount * 0.3,
    }
