"""The sink protocol, a day-splitting emitter and deterministic event ids."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

import numpy as np
import pandas as pd

from tasks.simulate.config import DAY_S


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
        self._next: Counter[str] = Counter()

    def ids(self, prefix: str, n: int) -> pd.Series:
        """The next n event ids of a prefix: f"{prefix}-{seed}-{counter}"."""
        first = self._next[prefix]
        self._next[prefix] += n
        numbers = pd.Series(np.arange(first, first + n, dtype=np.int64)).astype("str")
        return f"{prefix}-{self.seed}-" + numbers

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
