"""Column kinds of the raw tables, read from tasks/schema.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import BigInteger, Date, Float, Integer, String

from tasks.schema import RAW_TABLES

Kind = Literal["str", "int", "float", "date"]

# Helper columns added for the one whole-frame GX run; never reported as the user's columns.
PARTITION_START = "__partition_start_ts"
PARTITION_END = "__partition_end_ts"
HELPER_COLUMNS: tuple[str, ...] = (PARTITION_START, PARTITION_END)

MIN_TS = 946_684_800  # 2000-01-01T00:00:00Z: the default lower event-time bound (min_ts)
KEY_SUFFIXES = ("_id", "_key", "_ref")


def is_key(name: str) -> bool:
    """True for identifier columns (event_id, user_key, ad_id, order_ref, …).

    A blank (empty or whitespace-only) identifier identifies nothing, so the gate treats it as
    null: a bad row in a required key column, never a duplicate of another blank one.
    """
    return name == "event_id" or name.endswith(KEY_SUFFIXES)


@dataclass(frozen=True)
class ColumnSpec:
    """One raw column: name, kind, nullability and maximum string length."""

    name: str
    kind: Kind
    nullable: bool
    length: int | None


def _kind(column_type: object) -> Kind:
    """Map a SQLAlchemy type to the pandas-side kind used by the gate."""
    if isinstance(column_type, (BigInteger, Integer)):
        return "int"
    if isinstance(column_type, Float):
        return "float"
    if isinstance(column_type, Date):
        return "date"
    if isinstance(column_type, String):
        return "str"
    raise TypeError(f"unsupported raw column type {column_type!r}")


def table_columns(table: str) -> list[ColumnSpec]:
    """The declared columns of a raw table, in schema order."""
    if table not in RAW_TABLES:
        raise KeyError(f"unknown raw table {table!r}")
    specs = []
    for column in RAW_TABLES[table].columns:
        length = getattr(column.type, "length", None)
        specs.append(ColumnSpec(column.name, _kind(column.type), bool(column.nullable), length))
    return specs
