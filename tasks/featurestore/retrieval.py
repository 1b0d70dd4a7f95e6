"""Point-in-time retrieval for training and scoring, as one set-based SQL join per feature view.

For each entity row (key, event_ts) and view: the latest row with ``feature_ts <= event_ts``
within the view's TTL, among the rows *known* at event_ts (``created_ts <= event_ts``), ties
broken by the latest ``created_ts``. ``created_ts`` is when a row became known (see
tasks/featurestore/materialize.py): a partition's first build, a backfill included, is known at
its ``feature_ts``, and a rebuild for late rows from the time it ran. So a training row at t
gets what scoring at t got, and late rows never reach a training row that precedes the rebuild
that read them. ``created_before_event=False`` reads the latest version of every row instead
(what the store holds now, late rows included), for exploration only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, Column, Connection, Engine, MetaData, String, Table, text

from tasks.db import insert_frame
from tasks.featurestore.definitions import ENTITIES, Feature, FeatureView, parse_ref
from tasks.featurestore.registry import is_registered

ENTITY_TABLE = "_ly_entity_rows"
READ_CHUNK = 100_000  # result rows fetched per round trip: bounds memory on large training sets


class ViewNotMaterialized(LookupError):
    """A declared view whose current version has never been materialised."""


@dataclass(frozen=True)
class _Request:
    view: FeatureView
    features: tuple[Feature, ...]


def _plan(feature_refs: Sequence[str], views: Mapping[str, FeatureView]) -> list[_Request]:
    """Group refs by view, in first-seen order; every name is checked against the declarations."""
    grouped: dict[str, tuple[FeatureView, list[Feature]]] = {}
    for ref in feature_refs:
        view, feature = parse_ref(ref, views)
        if view.name != ref.partition(":")[0]:
            raise ValueError(f"declared views are keyed by a name other than their own: {ref!r}")
        _, features = grouped.setdefault(view.name, (view, []))
        if feature not in features:
            features.append(feature)
    if not grouped:
        raise ValueError("no feature references given")
    return [_Request(v, tuple(fs)) for v, fs in grouped.values()]


def _entity_rows(entity_df: pd.DataFrame, plan: list[_Request]) -> tuple[pd.DataFrame, list[str]]:
    """The frame sent to the database: row id, event_ts and the entity key columns needed."""
    if "event_ts" not in entity_df.columns:
        raise ValueError("entity_df needs an event_ts column (epoch seconds)")
    if entity_df["event_ts"].isna().any():
        raise ValueError("entity_df.event_ts has missing values")
    rows = pd.DataFrame(
        {
            "row_id": np.arange(len(entity_df), dtype="int64"),
            "event_ts": entity_df["event_ts"].to_numpy("int64"),
        }
    )
    keys: list[str] = []
    for request in plan:
        entity = ENTITIES[request.view.entity]
        if entity.key in keys:
            continue
        keys.append(entity.key)
        if entity.key in entity_df.columns:
            column = entity_df[entity.key]
            rows[entity.key] = pd.Series(
                column.astype(str).where(column.notna(), None).to_numpy(dtype=object), dtype=object
            )
        elif entity.constant is not None:
            rows[entity.key] = entity.constant
        else:
            raise ValueError(f"entity_df lacks the key column {entity.key!r} of view {request.view.name}")
    return rows, keys


def _entity_table(keys: list[str]) -> Table:
    return Table(
        ENTITY_TABLE,
        MetaData(),
        Column("row_id", BigInteger, primary_key=True),
        Column("event_ts", BigInteger, nullable=False),
        *(Column(k, String(64)) for k in keys),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )


def _conditions(conn: Connection, view: FeatureView, i: int, created_before_event: bool) -> str:
    q = conn.dialect.identifier_preparer.quote
    parts = [f"t.{q(view.key)} = e.{q(view.key)}", "t.feature_ts <= e.event_ts"]
    if view.ttl_s > 0:
        parts.append(f"t.feature_ts >= e.event_ts - :ttl{i}")
    if created_before_event:
        parts.append("t.created_ts <= e.event_ts")
    return " AND ".join(parts)


def _join_sql(conn: Connection, plan: list[_Request], created_before_event: bool) -> str:
    """SQL of the as-of join: latest row per entity row and view, one probe of the key index each."""
    q = conn.dialect.identifier_preparer.quote
    order = "ORDER BY t.feature_ts DESC, t.created_ts DESC LIMIT 1"
    picked = [
        f"v{i}.{q(f.name)}" for i, r in enumerate(plan) for f in r.features
    ]  # identifiers: declared names only
    select_list = ", ".join(["e.row_id", *picked])
    if conn.dialect.name == "postgresql":
        joins = [
            f"LEFT JOIN LATERAL (SELECT {', '.join(f't.{q(f.name)}' for f in r.features)} "
            f"FROM {q(r.view.table_name)} t WHERE {_conditions(conn, r.view, i, created_before_event)} "
            f"{order}) v{i} ON TRUE"
            for i, r in enumerate(plan)
        ]
        return f"SELECT {select_list} FROM {ENTITY_TABLE} e {' '.join(joins)} ORDER BY e.row_id"
    # SQLite: a correlated subquery picks the latest rowid through the (key, feature_ts,
    # created_ts) primary-key index; the features are then fetched by rowid.
    probes = [
        f"(SELECT t.rowid FROM {q(r.view.table_name)} t "
        f"WHERE {_conditions(conn, r.view, i, created_before_event)} {order}) AS p{i}"
        for i, r in enumerate(plan)
    ]
    joins = [f"LEFT JOIN {q(r.view.table_name)} v{i} ON v{i}.rowid = e.p{i}" for i, r in enumerate(plan)]
    return (
        f"SELECT {select_list} FROM (SELECT e.row_id, {', '.join(probes)} FROM {ENTITY_TABLE} e) e "
        f"{' '.join(joins)} ORDER BY e.row_id"
    )


def _read_chunks(conn: Connection, sql: str, params: dict[str, int], width: int) -> pd.DataFrame:
    """Read the join result chunk by chunk (a server-side cursor on PostgreSQL) into one frame."""
    names = [f"c{i}" for i in range(width)]  # positional: two views may share a feature name
    # Per statement: Connection.execution_options would switch the whole connection over.
    result = conn.execute(text(sql), params, execution_options={"yield_per": READ_CHUNK})
    # Plain tuples first: from_records probes each Row object for attributes, which costs
    # SQLAlchemy an exception per row (about a third of the whole retrieval).
    chunks = [
        pd.DataFrame.from_records([tuple(row) for row in part], columns=names)
        for part in result.partitions(READ_CHUNK)
    ]
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=names)


def _typed(values: pd.Series, feature: Feature, index: pd.Index) -> pd.Series:
    """One output column in the feature's dtype: nullable Int64, float64 (NaN) or object (None)."""
    if feature.dtype in ("str", "text"):
        text_values = values.astype(object)
        return pd.Series(text_values.where(values.notna(), None).to_numpy(), index=index, dtype=object)
    numbers = pd.Series(pd.to_numeric(values).to_numpy("float64", na_value=np.nan), index=index)
    return numbers.astype("Int64") if feature.dtype == "int" else numbers


def get_historical_features(
    engine: Engine,
    entity_df: pd.DataFrame,
    feature_refs: Sequence[str],
    *,
    created_before_event: bool = True,
    views: Mapping[str, FeatureView] | None = None,
) -> pd.DataFrame:
    """Point-in-time correct features for each (entity, event_ts) row, in input order, nulls if none.

    Only rows known at each event_ts are read (module docstring); ``created_before_event=False``
    reads the latest version of every row instead.
    """
    if views is None:
        from tasks.featurestore.views import FEATURE_VIEWS

        views = FEATURE_VIEWS
    plan = _plan(feature_refs, views)  # refuses undeclared names before any SQL runs
    rows, keys = _entity_rows(entity_df, plan)
    width = 1 + sum(len(r.features) for r in plan)
    params = {f"ttl{i}": r.view.ttl_s for i, r in enumerate(plan) if r.view.ttl_s > 0}
    with engine.connect() as conn, conn.begin():
        for request in plan:
            if not is_registered(conn, request.view):
                raise ViewNotMaterialized(
                    f"feature view {request.view.name} version {request.view.version[:8]} "
                    "has not been materialised"
                )
        # Schema-qualified so that only a leftover temporary table can ever be dropped.
        leftover = f"{'pg_temp' if conn.dialect.name == 'postgresql' else 'temp'}.{ENTITY_TABLE}"
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {leftover}")
        temp = _entity_table(keys)
        temp.create(conn)
        insert_frame(conn, temp, rows, ignore_existing=False)  # COPY on PostgreSQL
        values = _read_chunks(conn, _join_sql(conn, plan, created_before_event), params, width)
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {leftover}")
    if len(values) != len(entity_df) or not np.array_equal(values["c0"].to_numpy("int64"), rows["row_id"]):
        raise RuntimeError("point-in-time join returned rows out of step with the entity rows")
    columns: dict[str, pd.Series] = {}
    col = 1
    for request in plan:
        for feature in request.features:
            columns[f"{request.view.name}__{feature.name}"] = _typed(
                values[f"c{col}"], feature, entity_df.index
            )
            col += 1
    # One concat, not a column insert per feature: wide views (hundreds of lags) stay one block.
    kept = entity_df.drop(columns=[c for c in columns if c in entity_df.columns])
    return pd.concat([kept, pd.DataFrame(columns, index=entity_df.index)], axis=1)


def get_online_features(
    engine: Engine,
    entity_keys: pd.DataFrame,
    feature_refs: Sequence[str],
    as_of: int,
    *,
    created_before_event: bool = True,
    views: Mapping[str, FeatureView] | None = None,
) -> pd.DataFrame:
    """The latest in-TTL features per entity at as_of, through the very same join as training."""
    if "event_ts" in entity_keys.columns:
        raise ValueError("entity_keys must not carry event_ts; as_of sets it")
    frame = entity_keys.assign(event_ts=np.int64(as_of))
    out = get_historical_features(
        engine, frame, feature_refs, created_before_event=created_before_event, views=views
    )
    return out.drop(columns="event_ts")


def feature_columns(feature_refs: Sequence[str]) -> list[str]:
    """Output column names of the refs, `<view>__<feature>`, without touching the database."""
    return [ref.replace(":", "__", 1) for ref in dict.fromkeys(feature_refs)]
