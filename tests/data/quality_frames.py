"""Build small, valid typed frames for any raw table from tasks/schema.py."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd

from tasks.quality.coerce import PANDAS_DTYPES
from tasks.quality.columns import table_columns
from tasks.quality.generate import ENUMS, RANGES

DAY = datetime.date(2026, 1, 5)
DAY_TS = int(datetime.datetime(2026, 1, 5, tzinfo=datetime.UTC).timestamp())
MAX_TS = DAY_TS + 40 * 86_400  # the caller's "now": well after every test partition


def good_frame(table: str, n: int = 20, day: datetime.date = DAY, days: int = 1) -> pd.DataFrame:
    """A typed frame of n valid rows spread over `days` daily partitions starting at `day`."""
    i = np.arange(n)
    offset = i % days
    dates = pd.to_datetime([day + datetime.timedelta(days=int(d)) for d in offset])
    start = dates.to_numpy(dtype="datetime64[s]").astype("int64")
    event_ts = start + (i * 37) % 86_000
    data: dict[str, object] = {}
    for spec in table_columns(table):
        name = spec.name
        enum = ENUMS.get((table, name), ENUMS.get((None, name)))
        bounds = RANGES.get((table, name), RANGES.get((None, name)))
        if name == "event_id":
            values: object = [f"{table}-{k}" for k in i]
        elif name == "event_ts":
            values = event_ts
        elif name == "event_date":
            values = dates.astype("datetime64[s]")
        elif name == "end_ts":
            values = event_ts + 60
        elif enum is not None:
            values = [enum[k % len(enum)] for k in i]
        elif bounds is not None:
            low, high = bounds[0], bounds[1]
            values = np.full(n, min(low + 1, high))
        else:
            values = [f"{name}_{k % 7}" for k in i]
        data[name] = pd.Series(values).astype(PANDAS_DTYPES[spec.kind])  # type: ignore[call-overload]
    return pd.DataFrame(data)
