"""The warehouse's life cycle: migrations, partition status and what downstream may read."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, Connection, Engine, Select, Table, and_, func, select

from tasks.dates import partition_day
from tasks.schema import RAW_TABLES, partition_status

MIGRATIONS = Path(__file__).resolve().parent.parent / "infra"


def alembic_config() -> Config:
    """The Alembic configuration of the warehouse migrations kept in infra/."""
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS / "migrations"))
    return config


def upgrade_schema(engine: Engine) -> None:
    """Create or upgrade every warehouse table to the latest migration."""
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


class UnknownTable(ValueError):
    """A table name that is not declared in the schema."""


def raw_table(name: str) -> Table:
    """The declared raw table of that name; anything else is refused before any SQL runs."""
    try:
        return RAW_TABLES[name]
    except KeyError:
        raise UnknownTable(
            f"unknown raw table {name!r}; declared tables: {', '.join(sorted(RAW_TABLES))}"
        ) from None


def partition_statuses(conn: Connection, table: str | None = None) -> dict[tuple[str, dt.date], str]:
    """Latest validation status ('validated' or 'rejected') per (table, partition)."""
    query = select(
        partition_status.c.table_name, partition_status.c.partition_date, partition_status.c.status
    )
    if table is not None:
        query = query.where(partition_status.c.table_name == raw_table(table).name)
    return {(r.table_name, r.partition_date): r.status for r in conn.execute(query)}


def validated_dates(table: str) -> Select[tuple[dt.date]]:
    """A subquery of the partition dates of a raw table that passed validation (``IN`` filters)."""
    ps = partition_status
    return select(ps.c.partition_date).where(and_(ps.c.table_name == table, ps.c.status == "validated"))


def validated_between(table: Table, start_ts: int, end_ts: int) -> ColumnElement[bool]:
    """Rows of a raw table with ``start_ts <= event_ts < end_ts`` in validated partitions only
    (the partition range first, so the database prunes partitions before it reads rows)."""
    return and_(
        table.c.event_date.between(partition_day(start_ts), partition_day(end_ts - 1)),
        table.c.event_date.in_(validated_dates(table.name)),
        table.c.event_ts >= start_ts,
        table.c.event_ts < end_ts,
    )


def partition_row_count(conn: Connection, table: str, partition: dt.date) -> int:
    """Rows stored in one partition of a raw table."""
    t = raw_table(table)
    return int(
        conn.execute(select(func.count()).select_from(t).where(t.c.event_date == partition)).scalar_one()
    )


def partition_row_counts(conn: Connection, table: str, partitions: list[dt.date]) -> dict[dt.date, int]:
    """Rows stored in each of several partitions of a raw table (absent: none)."""
    t = raw_table(table)
    query = (
        select(t.c.event_date, func.count()).where(t.c.event_date.in_(partitions)).group_by(t.c.event_date)
    )
    return {day: int(count) for day, count in conn.execute(query)}


def partition_is_validated(conn: Connection, table: str, partition: dt.date) -> bool:
    """True when the partition's latest validation accepted it."""
    row = conn.execute(
        select(partition_status.c.status).where(
            and_(partition_status.c.table_name == table, partition_status.c.partition_date == partition)
        )
    ).first()
    return row is not None and row.status == "validated"


def store_identities(conn: Connection, frame: pd.DataFrame) -> int:
    """Record pseudonym → raw identifier pairs in the identity table (existing keys kept)."""
    from tasks.db import insert_frame
    from tasks.schema import identity_users

    return insert_frame(conn, identity_users, frame[["user_key", "user_id", "email"]])
