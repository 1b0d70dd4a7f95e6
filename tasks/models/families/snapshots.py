"""Daily entity snapshots: the example frames of the per-user and per-streamer outcome models.

A snapshot is taken at 00:00 UTC of a day T. Its population, context inputs and outcome come
from per-entity daily aggregates of validated raw partitions (``event_date`` is the UTC date of
``event_ts``, so whole days line up with midnight snapshots):

* context inputs read only days before T (``[T - 28 d, T)``),
* outcomes read only days from T on (``[T, T + horizon)``).

User population at T: users who watched at least one live stream in the 28 days before T (so
they had signed up before T). A user silent for longer is already lost, not at risk, and is
scored by no model here. Streamer population at T: streamers onboarded before T.

A snapshot is used only when the raw history before it covers a few days (users: 3, their
activity shares are normalised by the days observed; streamers: 7, so that the last-7-days
baseline is complete) and, for training, when every partition of
its outcome window that exists is validated (a quarantined or failed day would fake a zero).

The frames carry no ``target_ts``: time_split would purge every training row whose outcome
window reaches into the validation period, and with daily snapshots, a 7-14 day horizon and a
few weeks of history that purge leaves no training rows at all. The label builders split by
entity and time instead (``entity_split``), so that no entity's outcome is both trained on and
judged; the outcome windows of late training rows still share calendar days with the holdout's,
which can carry platform-wide drift of those days, not any held-out entity's answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, and_, func, select

from tasks.dates import day_start, epoch, floor_to_day, partition_day
from tasks.featurestore import get_historical_features
from tasks.featurestore.definitions import DAY_S, parse_ref
from tasks.featurestore.views import FEATURE_VIEWS as VIEWS
from tasks.models.scoring_frame import check_fresh
from tasks.models.spec import LabelWindow, ModelSpec
from tasks.models.training import SPLIT_COLUMN
from tasks.schema import partition_status
from tasks.warehouse import raw_table, validated_dates

LOOKBACK_DAYS = 28  # the population and context window before a snapshot
USER_MIN_HISTORY_DAYS = 3  # raw history a user snapshot needs (activity shares are normalised)
STREAMER_MIN_HISTORY_DAYS = 7  # a streamer snapshot needs a whole week: the 7-day baseline
NEW_USER_DAYS = 7  # a user younger than this at the snapshot is "new" (slice)
ACTIVITY_TABLE = "raw_watch_sessions"
EVAL_SHARE = 0.5  # entities kept for the validation and holdout splits (see entity_split)
USER_CONTEXT = ("active_days_7d", "active_days_28d", "active_share_28d")


@dataclass(frozen=True)
class EventCount:
    """Per-entity daily events of one raw table: rows counted, or one column summed."""

    table: str
    key: str
    value: str | None = None  # the column summed; None counts rows
    where: tuple[str, str] | None = None  # (column, value): only rows where column == value


@dataclass(frozen=True)
class DailyGrid:
    """Per-entity daily totals on a dense day grid starting at ``first`` (0 where no events)."""

    first: dt.date
    keys: pd.Index
    totals: np.ndarray  # (keys, days) float64

    @cached_property
    def cumulative(self) -> np.ndarray:
        """Running totals with a leading zero column: any window sum is two lookups."""
        cum = np.zeros((self.totals.shape[0], self.totals.shape[1] + 1))
        np.cumsum(self.totals, axis=1, out=cum[:, 1:])
        return cum

    def window(self, rows: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Sum of rows[i] over grid days [start[i], end[i]) (day indices, clipped to the grid)."""
        width = self.totals.shape[1]
        lo, hi = np.clip(start, 0, width), np.clip(end, 0, width)
        return np.asarray(self.cumulative[rows, hi] - self.cumulative[rows, lo], dtype="float64")


def snapshot_times(window: LabelWindow) -> list[int]:
    """Midnights T in the window whose outcome horizon ends by the window's end."""
    first = -(-window.start_ts // DAY_S) * DAY_S  # the first midnight at or after the start
    return list(range(first, window.end_ts - window.horizon_s + 1, DAY_S))


def history_start(conn: Connection, table: str) -> dt.date | None:
    """The first validated partition of a raw table (None when it has none)."""
    ps = partition_status
    query = select(func.min(ps.c.partition_date)).where(
        and_(ps.c.table_name == table, ps.c.status == "validated")
    )
    first = conn.execute(query).scalar()
    return None if first is None else _as_date(first)


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def untrusted_dates(conn: Connection, tables: Sequence[str], first: dt.date, last: dt.date) -> set[dt.date]:
    """Dates in [first, last] where a partition of one of the tables exists but is not validated."""
    ps = partition_status
    query = select(ps.c.partition_date).where(
        and_(
            ps.c.table_name.in_(list(tables)),
            ps.c.partition_date.between(first, last),
            ps.c.status != "validated",
        )
    )
    return {_as_date(r[0]) for r in conn.execute(query)}


def daily_grid(conn: Connection, events: EventCount, first: dt.date, last: dt.date) -> DailyGrid:
    """Daily totals per entity over [first, last] from validated partitions only."""
    table = raw_table(events.table)
    key = table.c[events.key]
    measure = func.count() if events.value is None else func.sum(table.c[events.value])
    query = (
        select(key.label("key"), table.c.event_date, measure.label("total"))
        .where(
            and_(
                table.c.event_date.between(first, last),  # partition pruning
                table.c.event_date.in_(validated_dates(table.name)),
            )
        )
        .group_by(key, table.c.event_date)
    )
    if events.where is not None:
        column, value = events.where
        query = query.where(table.c[column] == value)
    rows = pd.DataFrame(conn.execute(query).fetchall(), columns=["key", "event_date", "total"])
    keys = pd.Index(sorted(rows["key"].astype(str).unique()), dtype=object)
    n_days = (last - first).days + 1
    totals = np.zeros((len(keys), max(n_days, 0)))
    if len(rows):
        day = np.array([(_as_date(d) - first).days for d in rows["event_date"]], dtype=np.int64)
        totals[keys.get_indexer(pd.Index(rows["key"].astype(str))), day] = rows["total"].to_numpy("float64")
    return DailyGrid(first, keys, totals)


def _rows(grid: DailyGrid, keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Grid row of each key and whether the key is on the grid at all."""
    idx = grid.keys.get_indexer(pd.Index(keys.astype(str)))
    return np.maximum(idx, 0), idx >= 0


def grid_window(
    grid: DailyGrid, keys: pd.Series, ts: pd.Series, start_days: int, end_days: int
) -> np.ndarray:
    """Per row: the grid total over days [T + start_days, T + end_days) where T = the row's ts."""
    rows, known = _rows(grid, keys)
    day = (ts.to_numpy("int64") - day_start(grid.first)) // DAY_S
    if grid.totals.shape[0] == 0:
        return np.zeros(len(keys))
    return np.where(known, grid.window(rows, day + start_days, day + end_days), 0.0)


def _signups(conn: Connection) -> pd.DataFrame:
    users = raw_table("raw_users")
    query = (
        select(users.c.user_key, func.min(users.c.event_ts).label("signup_ts"), func.min(users.c.region))
        .where(users.c.event_date.in_(validated_dates(users.name)))
        .group_by(users.c.user_key)
    )
    rows = conn.execute(query).fetchall()
    return pd.DataFrame(rows, columns=["user_key", "signup_ts", "region"]).set_index("user_key")


def _usable(times: Sequence[int], start: dt.date | None, min_history_days: int) -> list[int]:
    if start is None:
        return []
    earliest = day_start(start) + min_history_days * DAY_S
    return sorted(t for t in times if t >= earliest)


def _drop_untrusted(
    conn: Connection, times: list[int], horizon_days: int, tables: Sequence[str]
) -> list[int]:
    """Snapshots whose outcome window holds no untrusted partition of the given tables."""
    if horizon_days <= 0 or not times:
        return times
    bad = untrusted_dates(
        conn, tables, partition_day(times[0]), partition_day(times[-1] + (horizon_days - 1) * DAY_S)
    )
    return [t for t in times if not any(partition_day(t + d * DAY_S) in bad for d in range(horizon_days))]


def _example_ids(keys: pd.Series, ts: pd.Series) -> pd.Series:
    days = pd.to_datetime(ts, unit="s", utc=True).dt.strftime("%Y%m%d")
    return keys.astype(str) + ":" + days


def entity_fold(keys: pd.Series) -> np.ndarray:
    """A stable number in [0, 1) per entity key (md5 of the key), the same on every run and host.

    User keys are pseudonyms, so the user-level splits built on this are a fixed function of the
    pseudonym key: reproducible wherever the key is the same (a simulated platform derives it
    from its seed, see tasks.settings.pseudonym_key; production keeps one secret key).
    """
    digests = [hashlib.md5(str(k).encode(), usedforsecurity=False).hexdigest()[:8] for k in keys]
    return np.array([int(d, 16) for d in digests], dtype="float64") / 2**32


def entity_split(
    frame: pd.DataFrame, key: str, train_share: float, eval_share: float = EVAL_SHARE
) -> pd.DataFrame:
    """The frame with a ``split`` column (train, valid, holdout or cross), by entity and by time.

    Snapshots of one entity a few days apart have overlapping outcome windows and nearly equal
    inputs, so a booster that saw an entity's future in training recognises it in the holdout
    (measured on the demo platform: about +0.04 holdout AUC for the purchase models, more with
    more trees). Purging by time cannot help with weeks of history and a two-week horizon, so
    entities are split instead. The rule:

    * a fixed ``eval_share`` of the entities (by ``entity_fold``: the same ones on every run) are
      evaluation entities, the others training entities;
    * a boundary day L cuts snapshot time at its ``train_share`` quantile;
    * train: training entities before L; valid (early stopping only): evaluation entities
      before L; holdout: evaluation entities from L on;
    * cross: training entities from L on, judged by a mirror model fitted the other way round
      (on the valid rows, early-stopped on the train rows; see training.fit_candidate).

    No entity is both fitted and judged by one model, and every judged row lies after every row
    its model was fitted on. Two-fold cross-fitting judges every entity active after L instead
    of half of them: the holdout's independent units (entities) double, which is what narrows a
    metric's interval when each entity has several correlated snapshots. The registered model is
    the first one; the champion is compared on its holdout rows only (it was fitted on the
    training entities). Validation rows share calendar days with their model's training rows;
    they only pick the number of boosting rounds. With fewer than two snapshot days the frame is
    returned without the column (time_split then decides).
    """
    if frame.empty or frame["event_ts"].nunique() < 2:
        return frame
    ts = frame["event_ts"].to_numpy("int64")
    boundary = max(np.quantile(ts, train_share, method="lower"), np.unique(ts)[1])
    evaluation = entity_fold(frame[key]) < eval_share
    early = ts < boundary
    role = np.where(evaluation, np.where(early, "valid", "holdout"), np.where(early, "train", "cross"))
    return frame.assign(**{SPLIT_COLUMN: role})


def user_snapshots(
    conn: Connection, times: Sequence[int], *, horizon_days: int = 0, outcome: EventCount | None = None
) -> pd.DataFrame:
    """One row per (active user, snapshot): keys, event_ts, slices, context and outcome counts.

    Columns: example_id, user_key, event_ts, region, user_type, the USER_CONTEXT inputs and, for
    a horizon > 0, future_active_days (days with a session in the horizon) and
    future_events (outcome rows in the horizon; 0 without an outcome).
    """
    start = history_start(conn, ACTIVITY_TABLE)
    tables = [ACTIVITY_TABLE, *([outcome.table] if outcome else [])]
    chosen = _drop_untrusted(conn, _usable(times, start, USER_MIN_HISTORY_DAYS), horizon_days, tables)
    columns = ["example_id", "user_key", "event_ts", "region", "user_type", *USER_CONTEXT]
    if horizon_days > 0:
        columns += ["future_active_days", "future_events"]
    if not chosen or start is None:
        return pd.DataFrame(columns=columns)
    first = partition_day(chosen[0] - LOOKBACK_DAYS * DAY_S)
    last = partition_day(chosen[-1] + max(horizon_days - 1, 0) * DAY_S)
    active = daily_grid(conn, EventCount(ACTIVITY_TABLE, "user_key"), first, last)
    active = DailyGrid(active.first, active.keys, (active.totals > 0).astype("float64"))
    parts = []
    for t in chosen:
        day = (t - day_start(active.first)) // DAY_S
        rows = np.arange(len(active.keys))
        recent = active.window(rows, np.full(len(rows), day - LOOKBACK_DAYS), np.full(len(rows), day))
        keep = recent > 0
        parts.append(pd.DataFrame({"user_key": active.keys[keep], "event_ts": t}))
    frame = pd.concat(parts, ignore_index=True)
    frame["event_ts"] = frame["event_ts"].astype("int64")
    keys, ts = frame["user_key"], frame["event_ts"]
    signups = _signups(conn).reindex(keys)
    signup_ts = signups["signup_ts"].to_numpy("float64")
    age_s = ts.to_numpy("int64") - signup_ts
    frame["region"] = signups["region"].fillna("unknown").to_numpy(object)
    frame["user_type"] = np.where(
        np.isnan(age_s), "unknown", np.where(age_s < NEW_USER_DAYS * DAY_S, "new", "returning")
    ).astype(object)
    frame["active_days_7d"] = grid_window(active, keys, ts, -7, 0)
    frame["active_days_28d"] = grid_window(active, keys, ts, -LOOKBACK_DAYS, 0)
    # Days the user could have been seen on: since signup and since the history began, at most 28.
    since = np.fmax(np.nan_to_num(signup_ts, nan=0.0) // DAY_S * DAY_S, float(day_start(start)))
    exposure = np.clip((ts.to_numpy("float64") - since) / DAY_S, 1.0, float(LOOKBACK_DAYS))
    frame["active_share_28d"] = frame["active_days_28d"] / exposure
    if horizon_days > 0:
        frame["future_active_days"] = grid_window(active, keys, ts, 0, horizon_days)
        frame["future_events"] = 0.0
        if outcome is not None:
            grid = daily_grid(conn, outcome, first, last)
            frame["future_events"] = grid_window(grid, keys, ts, 0, horizon_days)
    frame["example_id"] = _example_ids(keys, ts)
    return frame[columns].sort_values(["event_ts", "user_key"], kind="stable").reset_index(drop=True)


RUN_RATE_FLOOR = 1.0  # currency units
STREAMER_CONTEXT = ("gifts_last_7d", "gifts_last_28d", "gifts_per_day_28d", "gift_count_28d", "live_days_7d")


def _streamers(conn: Connection) -> pd.DataFrame:
    streamers = raw_table("raw_streamers")
    query = (
        select(
            streamers.c.streamer_id,
            func.min(streamers.c.event_ts).label("onboard_ts"),
            func.min(streamers.c.category).label("category"),
            func.min(streamers.c.region).label("region"),
        )
        .where(streamers.c.event_date.in_(validated_dates(streamers.name)))
        .group_by(streamers.c.streamer_id)
    )
    rows = conn.execute(query).fetchall()
    return pd.DataFrame(rows, columns=["streamer_id", "onboard_ts", "category", "region"])


def streamer_snapshots(conn: Connection, times: Sequence[int], *, horizon_days: int = 0) -> pd.DataFrame:
    """One row per (onboarded streamer, snapshot): keys, event_ts, slices, gift context and outcome.

    Columns: example_id, streamer_id, event_ts, category, region, the STREAMER_CONTEXT inputs,
    gifts_run_rate_7d (7 x the 28-day daily average, at least RUN_RATE_FLOOR: a naive baseline) and,
    for a horizon > 0, future_gifts (gift amount in the horizon).
    """
    start = history_start(conn, "raw_gifts")
    usable = _usable(times, start, STREAMER_MIN_HISTORY_DAYS)
    chosen = _drop_untrusted(conn, usable, horizon_days, ["raw_gifts"])
    columns = ["example_id", "streamer_id", "event_ts", "category", "region", *STREAMER_CONTEXT]
    columns.append("gifts_run_rate_7d")
    if horizon_days > 0:
        columns += ["future_gifts"]
    streamers = _streamers(conn)
    if not chosen or start is None or streamers.empty:
        return pd.DataFrame(columns=columns)
    parts = [streamers[streamers["onboard_ts"] < t].assign(event_ts=t) for t in chosen]
    frame = pd.concat(parts, ignore_index=True)
    frame["event_ts"] = frame["event_ts"].astype("int64")
    keys, ts = frame["streamer_id"], frame["event_ts"]
    first = partition_day(chosen[0] - LOOKBACK_DAYS * DAY_S)
    last = partition_day(chosen[-1] + max(horizon_days - 1, 0) * DAY_S)
    amount = daily_grid(conn, EventCount("raw_gifts", "streamer_id", value="amount"), first, last)
    count = daily_grid(conn, EventCount("raw_gifts", "streamer_id"), first, last)
    live = daily_grid(conn, EventCount("raw_streams", "streamer_id"), first, last)
    frame["gifts_last_7d"] = grid_window(amount, keys, ts, -7, 0)
    frame["gifts_last_28d"] = grid_window(amount, keys, ts, -LOOKBACK_DAYS, 0)
    since = np.fmax(frame["onboard_ts"].to_numpy("float64") // DAY_S * DAY_S, float(day_start(start)))
    observed = np.clip((ts.to_numpy("float64") - since) / DAY_S, 1.0, float(LOOKBACK_DAYS))
    frame["gifts_per_day_28d"] = frame["gifts_last_28d"] / observed
    # A second naive baseline; never exactly zero, which the Tweedie deviance punishes without bound.
    frame["gifts_run_rate_7d"] = np.maximum(7 * frame["gifts_per_day_28d"], RUN_RATE_FLOOR)
    frame["gift_count_28d"] = grid_window(count, keys, ts, -LOOKBACK_DAYS, 0)
    frame["live_days_7d"] = grid_window((_present(live)), keys, ts, -7, 0)
    if horizon_days > 0:
        frame["future_gifts"] = grid_window(amount, keys, ts, 0, horizon_days)
    frame["example_id"] = _example_ids(keys, ts)
    return frame[columns].sort_values(["event_ts", "streamer_id"], kind="stable").reset_index(drop=True)


def _present(grid: DailyGrid) -> DailyGrid:
    return DailyGrid(grid.first, grid.keys, (grid.totals > 0).astype("float64"))


def with_features(engine: Engine, spec: ModelSpec, frame: pd.DataFrame, as_of: int) -> pd.DataFrame:
    """The frame with the spec's features at each row's event_ts, after checking they are fresh."""
    seen: set[str] = set()
    for ref in spec.feature_refs:
        view = parse_ref(ref, VIEWS)[0]
        if view.name not in seen:
            seen.add(view.name)
            check_fresh(engine, view, as_of)
    return get_historical_features(engine, frame, spec.feature_refs)


def user_scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
    """The user population of the snapshot at as_of's 00:00 UTC with its inputs (training's code)."""
    ts = epoch(as_of)
    with engine.connect() as conn:
        frame = user_snapshots(conn, [floor_to_day(ts)])
    return with_features(engine, spec, frame, ts)


def streamer_scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
    """Every streamer onboarded by as_of's 00:00 UTC with its inputs (training's code)."""
    ts = epoch(as_of)
    with engine.connect() as conn:
        frame = streamer_snapshots(conn, [floor_to_day(ts)])
    return with_features(engine, spec, frame, ts)
