"""Event logs kept in the feature store: a text feature holding a JSON list of events per entity row.

The recommenders need every event of a history, not one aggregate: their views store, per
entity and ``feature_ts``, the events known at that moment as a JSON list (a day of orders, the
sessions of a day so far). Reading a log back enumerates the rows the view holds in a time
range and fetches each through ``get_historical_features`` at its own ``feature_ts``, so every
row read passed the store's version, point-in-time and TTL rules; the events are then unpacked,
and an event that several rows repeat is kept once. A row is read as it was known at its own
``feature_ts``: a version rebuilt later for late events (tasks/featurestore/materialize.py) is
left out, so no example sees an event that arrived after it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, select

from tasks.featurestore import ViewNotMaterialized, feature_table, get_historical_features
from tasks.featurestore.definitions import parse_ref
from tasks.featurestore.registry import is_registered
from tasks.featurestore.views import FEATURE_VIEWS


def stored_rows(engine: Engine, view_name: str, start_ts: int, end_ts: int) -> pd.DataFrame:
    """(entity key, event_ts) of every row of the view with start_ts < feature_ts <= end_ts, known then."""
    view = FEATURE_VIEWS[view_name]
    with engine.connect() as conn:
        if not is_registered(conn, view):
            raise ViewNotMaterialized(
                f"feature view {view.name} version {view.version[:8]} has not been materialised"
            )
        table = feature_table(view)
        key = table.c[view.key]
        rows = conn.execute(
            select(key, table.c.feature_ts)
            .where(
                and_(
                    table.c.feature_ts > start_ts,
                    table.c.feature_ts <= end_ts,
                    table.c.created_ts <= table.c.feature_ts,  # known at its own time
                )
            )
            .distinct()
        ).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=[view.key, "event_ts"])
    frame = frame.astype({view.key: object, "event_ts": "int64"})
    return frame.sort_values(["event_ts", view.key], kind="stable").reset_index(drop=True)


def read_logs(engine: Engine, refs: Sequence[str], start_ts: int, end_ts: int) -> pd.DataFrame:
    """Every row of the refs' view (one view) in (start_ts, end_ts], its log features as of the row."""
    view = parse_ref(refs[0], FEATURE_VIEWS)[0]
    rows = stored_rows(engine, view.name, start_ts, end_ts)
    if rows.empty:
        return rows.assign(**{r.replace(":", "__", 1): pd.Series(dtype=object) for r in refs})
    return get_historical_features(engine, rows, refs)


def unpack(frame: pd.DataFrame, key: str, column: str, names: Sequence[str]) -> pd.DataFrame:
    """One row per element of each row's JSON list: key, the row's event_ts as "row_ts", then names."""
    keys: list[object] = []
    stamps: list[int] = []
    records: list[list[object]] = []
    for entity, ts, text in zip(frame[key], frame["event_ts"], frame[column], strict=True):
        if text is None:
            continue
        events = json.loads(text)
        keys.extend([entity] * len(events))
        stamps.extend([int(ts)] * len(events))
        records.extend(events)
    out = pd.DataFrame(records, columns=list(names)) if records else pd.DataFrame(columns=list(names))
    out.insert(0, "row_ts", np.asarray(stamps, dtype="int64"))
    out.insert(0, key, pd.Series(keys, dtype=object))
    return out
