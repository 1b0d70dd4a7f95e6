"""Time in one place: epoch seconds ↔ UTC dates, the partition day of a timestamp, and the as_of rule.

Timestamps are integer epoch seconds (UTC) everywhere in the warehouse; a partition is the UTC
calendar day of a row's ``event_ts``.

**The as_of rule.** ``as_of`` is an instant in UTC: a run "as of T" sees every row whose
event time is before T and nothing after. A *date* D (what a person types on the command line)
means the end of that day, D + 1 at 00:00 UTC, so "as of 2026-02-01" includes all of
2026-02-01. No value means now. A naive datetime is taken as UTC. The command line and every
flow resolve ``as_of`` with :func:`resolve_as_of`, and nothing else reads the clock for it.
"""

from __future__ import annotations

import datetime as dt

DAY_S = 86_400


def partition_day(ts: int | float) -> dt.date:
    """The UTC calendar day (the partition) of an epoch-seconds timestamp."""
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).date()


def day_start(day: dt.date) -> int:
    """Epoch seconds of ``day`` at 00:00 UTC."""
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())


def day_end(day: dt.date) -> int:
    """Epoch seconds of the day after ``day`` at 00:00 UTC (the end of ``day``, exclusive)."""
    return day_start(day) + DAY_S


def floor_to_day(ts: int) -> int:
    """The 00:00 UTC of the day ``ts`` falls in, in epoch seconds."""
    return ts - ts % DAY_S


def epoch(moment: dt.datetime) -> int:
    """Epoch seconds of a datetime (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def utc(ts: int | float) -> dt.datetime:
    """The aware UTC datetime of epoch seconds."""
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def resolve_as_of(value: dt.datetime | dt.date | None, now: dt.datetime | None = None) -> dt.datetime:
    """The as_of rule (module docstring): None → now; a date → its end; a datetime → itself, in UTC."""
    if value is None:
        return now.astimezone(dt.UTC) if now is not None else dt.datetime.now(dt.UTC)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), dt.UTC)
