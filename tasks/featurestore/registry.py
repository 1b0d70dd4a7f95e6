"""The feature store's own tables: the view registry, the build log and one table per view version."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    and_,
    column,
    func,
    inspect,
    select,
)
from sqlalchemy import table as sa_table
from sqlalchemy.types import TypeEngine

from tasks.db import insert_frame
from tasks.featurestore.definitions import FeatureType, FeatureView

# Kept apart from tasks.schema.metadata: Alembic owns the raw/control tables, this module
# owns the store's (created on first use), so the migration-vs-schema check stays exact.
store_metadata = MetaData()
_feature_metadata = MetaData()

FEATURE_TABLE = re.compile(r"^fs_[a-z][a-z0-9_]*__[0-9a-f]{8}$")

fs_registry = Table(
    "fs_registry",
    store_metadata,
    Column("view", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("definition", Text, nullable=False),
    Column("feature_table", String(128), nullable=False),
    Column("registered_ts", BigInteger, nullable=False),
    comment="Every feature view version ever materialised, with its definition.",
)

fs_materializations = Table(
    "fs_materializations",
    store_metadata,
    Column("view", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("partition_date", Date, primary_key=True),
    Column("rows", BigInteger, nullable=False),
    Column("data_version", String(64), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    comment="The latest build of each (view, version, partition) and the source data it read.",
)

_SQL_TYPES: dict[FeatureType, TypeEngine] = {
    "int": BigInteger(),
    "float": Float(),
    "str": String(128),
    "text": Text(),
}


def feature_table(view: FeatureView) -> Table:
    """The table object of a view's current version (declared once per process)."""
    name = view.table_name
    if name in _feature_metadata.tables:
        return _feature_metadata.tables[name]
    table = Table(
        name,
        _feature_metadata,
        Column(view.key, String(64), primary_key=True),
        Column("feature_ts", BigInteger, primary_key=True),
        # In the key too, so retrieval's tie-break on created_ts is always deterministic.
        Column("created_ts", BigInteger, primary_key=True),
        Column("partition_date", Date, nullable=False),
        *(Column(f.name, _SQL_TYPES[f.dtype]) for f in view.features),
        comment=f"Feature view {view.name} version {view.version}",
    )
    Index(f"ix_{name}_partition", table.c.partition_date)
    return table


def ensure_store(conn: Connection) -> None:
    """Create the registry and build-log tables if they are missing."""
    store_metadata.create_all(conn, checkfirst=True)


def register_view(conn: Connection, view: FeatureView, *, registered_ts: int) -> Table:
    """Record the view's version in the registry (once) and create its feature table."""
    ensure_store(conn)
    table = feature_table(view)
    table.create(conn, checkfirst=True)
    row = pd.DataFrame(
        {
            "view": [view.name],
            "version": [view.version],
            "definition": [view.definition_json()],
            "feature_table": [table.name],
            "registered_ts": [registered_ts],
        }
    )
    insert_frame(conn, fs_registry, row)  # an existing (view, version) keeps its first record
    return table


def is_registered(conn: Connection, view: FeatureView) -> bool:
    """True when this exact version of the view has been registered."""
    if not inspect(conn).has_table(fs_registry.name):
        return False
    query = select(fs_registry.c.version).where(
        and_(fs_registry.c.view == view.name, fs_registry.c.version == view.version)
    )
    return conn.execute(query).first() is not None


def registered_tables(conn: Connection) -> list[tuple[str, str, str]]:
    """(view, version, feature table) of every registered version, table names checked."""
    if not inspect(conn).has_table(fs_registry.name):
        return []
    rows = conn.execute(
        select(fs_registry.c.view, fs_registry.c.version, fs_registry.c.feature_table).order_by(
            fs_registry.c.view, fs_registry.c.registered_ts, fs_registry.c.version
        )
    ).all()
    for row in rows:
        if not FEATURE_TABLE.match(row.feature_table):
            raise ValueError(f"fs_registry holds an unexpected table name {row.feature_table!r}")
    return [(r.view, r.version, r.feature_table) for r in rows]


def freshness(engine: Engine) -> list[dict[str, Any]]:
    """Per registered view version: latest feature_ts, partitions built and rows, for `features list`."""
    m = fs_materializations
    report: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for view, version, table_name in registered_tables(conn):
            table = sa_table(table_name, column("feature_ts"))  # name checked by registered_tables
            latest, rows = conn.execute(select(func.max(table.c.feature_ts), func.count())).one()
            built = conn.execute(
                select(func.count(), func.max(m.c.partition_date)).where(
                    and_(m.c.view == view, m.c.version == version)
                )
            ).one()
            report.append(
                {
                    "view": view,
                    "version": version,
                    "feature_table": table_name,
                    "latest_feature_ts": None if latest is None else int(latest),
                    "partitions_built": int(built[0]),
                    "latest_partition": built[1],
                    "rows": int(rows),
                }
            )
    return report
