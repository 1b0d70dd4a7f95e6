"""The sink protocol, a day-splitting emitter and deterministic event ids."""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Protocol

import numpy as np
import pandas as pd

from tasks.simulate.config import DAY_S


def _yyyymmdd(day: int) -> str:
    """A UTC day (days since the epoch) as yyyymmdd."""
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=day)).strftime("%Y%m%d")


class Sink(Protocol):
    """Receives generated frames; the same (table, day) may arrive several times."""

    def write(self, table: str, frame: pd.DataFrame) -> None: ...


class Emitter:
    """Writes frames to a sink, one UTC day per write, and counts rows per table.

    Only events with lo <= event_ts < hi are written (lo None: no lower bound), so a run can
    generate days it does not land: the tail of local days past the end, or the days an earlier
    run already landed.
    """

    def __init__(self, sink: Sink, seed: int, lo: int | None, hi: int) -> None:
        self.sink = sink
        self.seed = seed
        self.lo = lo
        self.hi = hi
        self.rows: Counter[str] = Counter()
        self._next: Counter[tuple[str, int]] = Counter()  # next id number per (prefix, UTC day)

    def ids(self, prefix: str, ts: np.ndarray) -> pd.Series:
        """Event ids for events at times ts (epoch seconds): f"{prefix}-{seed}-{yyyymmdd}-{n}".

        n counts the events of a prefix and UTC day in the order they were generated (calls in
        order, then position in ts). A day's ids thus depend only on that day's events, not on
        how many a run drew for other days: a continued run that plants a shift generates its
        first day anew, with another number of events, and still never reuses an id of a day
        already landed.
        """
        day = np.asarray(ts).astype(np.int64) // DAY_S
        if len(day) == 0:
            return pd.Series([], dtype="str")
        # One call's events span a few UTC days: count them by offset from the first.
        first = int(day.min())
        code = day - first
        counts = np.bincount(code)
        # Rank of each event within its day, by position (a stable sort keeps position order).
        rank = np.arange(len(day), dtype=np.int64)
        if len(counts) > 1:
            by_day = np.argsort(code, kind="stable")
            rank[by_day] = rank - np.repeat(np.cumsum(counts) - counts, counts)
        base = np.zeros(len(counts), dtype=np.int64)
        heads = [""] * len(counts)
        for k in np.flatnonzero(counts).tolist():
            key = (prefix, first + k)
            base[k] = self._next[key]
            self._next[key] += int(counts[k])
            heads[k] = f"{prefix}-{self.seed}-{_yyyymmdd(first + k)}-"
        if len(counts) == 1:
            return heads[0] + pd.Series(base[0] + rank).astype("str")
        numbers = pd.Series(base[code] + rank).astype("str")
        return pd.Series(pd.Index(heads, dtype="str").take(code)) + numbers

    def inside(self, ts: np.ndarray) -> np.ndarray:
        """Which event times fall in the window this run writes."""
        keep = ts < self.hi
        return keep if self.lo is None else keep & (ts >= self.lo)

    def emit(self, table: str, frame: pd.DataFrame) -> None:
        """Write a raw frame's rows inside the window, split by UTC day of event_ts."""
        if frame.empty:
            return
        keep = self.inside(frame["event_ts"].to_numpy())
        if not keep.all():
            frame = frame.loc[keep]
            if frame.empty:
                return
        day = frame["event_ts"].to_numpy() // DAY_S
        first, last = day.min(), day.max()
        if first == last:
            self.write(table, frame)
            return
        for d in np.unique(day):
            self.write(table, frame.loc[day == d].reset_index(drop=True))

    def write(self, table: str, frame: pd.DataFrame) -> None:
        """Write a frame as is and count its rows."""
        if frame.empty:
            return
        self.sink.write(table, frame.reset_index(drop=True))
        self.rows[table] += len(frame)
