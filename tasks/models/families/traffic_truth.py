"""The simulator's true expected traffic: concurrent viewers per region and hour (evaluation only).

Only capacity_plan's oracle reads this; labels, features and scoring never do. Realised viewers
are the watch sessions overlapping each hour (tasks/simulate/traffic.py), so the expected viewers
follow the simulator's session story (tasks/simulate/activity.py) from the users' latent traits
(``oracle_users``: activity, churn time) and the streams that ran (``raw_streams``, their
streamers' latent quality from ``oracle_streamers``):

* a user who has signed up and not churned is active on a local day with probability
  min(activity x 1.2 at weekends, 1), and then starts 1 + Poisson(2 x activity) sessions, each at
  a local hour drawn from the diurnal profile, uniform within it;
* a session needs a stream on air (with at least a minute left) and picks one with probability
  proportional to its popularity, twice as likely in the viewer's region;
* it lasts a lognormal time (median 900 s x (0.5 + activity), sigma 0.9, at least 30 s), cut at
  the stream's end;
* a planted traffic shift (``oracle_shifts``) multiplies its region's sessions from its first day.

What is left out, and why it does not matter at the hour: the choice also weighs the viewer's
interests, follower counts and recent streamers (only the stream's remaining time matters here,
and that is averaged over the streams on air), and the cut at churn (minutes of a few users).
Real data has no oracle rows: the table is empty.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy.stats import norm
from sqlalchemy import Engine, select

from tasks.schema import oracle_shifts, oracle_streamers, oracle_users, raw_streams, raw_users
from tasks.simulate.activity import MIN_TAIL_S, SAME_REGION_BOOST, WEEKEND_ACTIVITY
from tasks.simulate.config import DIURNAL_LOCAL
from tasks.vocabulary import REGION_UTC_OFFSET, REGIONS

HOUR_S = 3_600
DAY_S = 86_400
SLOT_S = 300  # time grid of session starts: the expected viewers of an hour sum 12 slots
MAX_SESSION_S = 8 * HOUR_S  # longer than any stream: no session outlasts this
ACTIVITY_BINS = 12  # users grouped by activity quantile: a session's length depends on it
# Session story constants that tasks/simulate/activity.py writes inline (keep in step with it).
SESSIONS_PER_ACTIVITY = 2.0  # sessions on an active day: 1 + Poisson(2 x activity)
MEDIAN_WATCH_S = 900.0  # lognormal median 900 s x (0.5 + activity)
WATCH_SIGMA = 0.9
MIN_WATCH_S = 30.0


def _users(engine: Engine) -> pd.DataFrame:
    """Region, signup, churn and activity of every user with an oracle row."""
    query = select(
        raw_users.c.region,
        raw_users.c.event_ts.label("signup_ts"),
        oracle_users.c.activity,
        oracle_users.c.churned_ts,
    ).join(oracle_users, oracle_users.c.user_key == raw_users.c.user_key)
    with engine.connect() as conn:
        rows = conn.execute(query).fetchall()
    return pd.DataFrame(rows, columns=["region", "signup_ts", "activity", "churned_ts"])


def _streams(engine: Engine, start_ts: int, end_ts: int) -> pd.DataFrame:
    """Streams overlapping [start_ts, end_ts) with their region and streamer quality."""
    query = (
        select(raw_streams.c.event_ts, raw_streams.c.end_ts, raw_streams.c.region, oracle_streamers.c.quality)
        .join(oracle_streamers, oracle_streamers.c.streamer_id == raw_streams.c.streamer_id)
        .where(raw_streams.c.event_ts < end_ts, raw_streams.c.end_ts > start_ts)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).fetchall()
    return pd.DataFrame(rows, columns=["start", "end", "region", "quality"])


def _traffic_shifts(engine: Engine) -> list[tuple[int, float, int]]:
    """Planted traffic shifts as (region index, session multiplier, first local day in epoch days)."""
    query = select(oracle_shifts.c.from_date, oracle_shifts.c.params).where(oracle_shifts.c.kind == "traffic")
    with engine.connect() as conn:
        rows = conn.execute(query).fetchall()
    out = []
    for from_date, params in rows:
        p = json.loads(params)
        if str(p.get("target")) in REGIONS:
            day = (pd.Timestamp(from_date) - pd.Timestamp(0)).days
            out.append((REGIONS.index(str(p["target"])), float(p["size"]), int(day)))
    return out


def _start_rates(
    users: pd.DataFrame, slots: np.ndarray, bins: np.ndarray, shifts: list[tuple[int, float, int]]
) -> np.ndarray:
    """(slots, regions, bins): expected session starts per second at each slot start, by region and
    activity bin, before the need for a stream on air. A planted traffic shift multiplies its
    region's sessions from its first local day on."""
    region = pd.Categorical(users["region"], categories=list(REGIONS)).codes
    activity = users["activity"].to_numpy("float64")
    sessions = 1.0 + SESSIONS_PER_ACTIVITY * activity
    weight = np.stack(
        [np.minimum(activity, 1.0) * sessions, np.minimum(activity * WEEKEND_ACTIVITY, 1.0) * sessions],
        axis=1,
    )
    signup = users["signup_ts"].to_numpy("float64")
    churn = pd.to_numeric(users["churned_ts"], errors="coerce").to_numpy("float64")
    churn = np.where(np.isfinite(churn), churn - MIN_TAIL_S, np.inf)
    n, k = len(slots), len(REGIONS)
    # Users alive at each slot start: +weight from the slot of signup, -weight from that of churn.
    first = np.clip(np.searchsorted(slots, signup, side="left"), 0, n)
    last = np.clip(np.searchsorted(slots, churn, side="left"), 0, n)
    ok = (region >= 0) & (first < last)
    alive = np.zeros((n + 1, k, len(bins) - 1, 2))
    b = np.clip(np.searchsorted(bins, activity, side="right") - 1, 0, len(bins) - 2)
    np.add.at(alive, (first[ok], region[ok], b[ok]), weight[ok])
    np.add.at(alive, (last[ok], region[ok], b[ok]), -weight[ok])
    alive = np.cumsum(alive, axis=0)[:n]
    rates = np.zeros((n, k, len(bins) - 1))
    for j, name in enumerate(REGIONS):
        local = slots + REGION_UTC_OFFSET[name] * HOUR_S  # the session's local clock
        hour = (local % DAY_S) // HOUR_S
        weekend = ((local // DAY_S + 3) % 7 >= 5).astype(np.int64)  # 1970-01-01 was a Thursday
        per_second = DIURNAL_LOCAL[hour] / HOUR_S
        for target, size, first_day in shifts:
            if target == j:
                per_second = np.where(local // DAY_S >= first_day, per_second * size, per_second)
        rates[:, j, :] = alive[np.arange(n), j, :, weekend] * per_second[:, None]
    return rates


def _remaining(streams: pd.DataFrame, slots: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """(slots, regions, lags): share of sessions starting mid-slot whose stream is still on air after
    each lag, by viewer region (0 where no stream is on air: no session starts)."""
    mid = slots + SLOT_S // 2
    out = np.zeros((len(slots), len(REGIONS), len(lags)))
    if streams.empty:
        return out
    start, end = streams["start"].to_numpy("int64"), streams["end"].to_numpy("int64")
    popularity = streams["quality"].to_numpy("float64") ** 1.5
    home = pd.Categorical(streams["region"], categories=list(REGIONS)).codes
    for i, t in enumerate(mid):
        on = np.flatnonzero((start <= t) & (t < end - MIN_TAIL_S))
        if not len(on):
            continue
        left = end[on] - t
        alive = left[:, None] > lags[None, :]  # (streams, lags)
        for j in range(len(REGIONS)):
            w = popularity[on] * np.where(home[on] == j, SAME_REGION_BOOST, 1.0)
            out[i, j] = w @ alive / w.sum()
    return out


def _watch_survival(activity: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """(bins, lags): P(watch time > lag) for the lognormal watch time of each bin's activity."""
    mu = np.log(MEDIAN_WATCH_S * (0.5 + activity))[:, None]
    tail = norm.sf((np.log(np.maximum(lags, 1e-9))[None, :] - mu) / WATCH_SIGMA)
    return np.where(lags[None, :] < MIN_WATCH_S, 1.0, tail)


def expected_viewers(engine: Engine, start_ts: int, end_ts: int) -> pd.DataFrame:
    """Expected concurrent viewers per hour (index: hour start, epoch s) and region (columns) over
    [start_ts, end_ts), from the simulator's truth; empty when there is none (real data)."""
    first = start_ts - start_ts % HOUR_S
    hours = pd.Index(np.arange(first, end_ts, HOUR_S, dtype="int64"), name="ts")
    users = _users(engine)
    if users.empty:
        return pd.DataFrame(columns=list(REGIONS), index=hours[:0], dtype="float64")
    slots = np.arange(first - MAX_SESSION_S, first + len(hours) * HOUR_S, SLOT_S, dtype="int64")
    lags = np.arange(0, MAX_SESSION_S, SLOT_S, dtype="float64")
    activity = users["activity"].to_numpy("float64")
    bins = np.unique(np.quantile(activity, np.linspace(0, 1, ACTIVITY_BINS + 1)))
    bins[-1] = np.inf
    if len(bins) < 2:
        bins = np.array([-np.inf, np.inf])
    inside = np.clip(np.searchsorted(bins, activity, side="right") - 1, 0, len(bins) - 2)
    typical = np.array(
        [activity[inside == b].mean() if (inside == b).any() else 0.0 for b in range(len(bins) - 1)]
    )
    rates = _start_rates(users, slots, bins, _traffic_shifts(engine))  # (slots, regions, bins)
    reach = _remaining(_streams(engine, int(slots[0]), int(slots[-1]) + SLOT_S), slots, lags)
    survive = _watch_survival(typical, lags)  # (bins, lags)
    # Viewer-seconds in slot s from starts in slot s - k: SLOT_S^2 x rate x P(still watching) at a
    # lag of k slots; within the start slot, half the starts are before a moment, a third of a slot ago.
    survive[:, 0] = 0.5 * _watch_survival(typical, np.array([SLOT_S / 3]))[:, 0]
    seconds = np.zeros((len(slots), len(REGIONS)))
    for k in range(len(lags)):
        contrib = np.einsum("trb,b->tr", rates, survive[:, k]) * reach[:, :, k] * SLOT_S**2
        seconds[k:] += contrib[: len(slots) - k]
    per_slot = pd.DataFrame(seconds, index=slots, columns=list(REGIONS))
    per_slot = per_slot[per_slot.index >= first]
    hourly = per_slot.groupby((per_slot.index - first) // HOUR_S).sum() / HOUR_S
    hourly.index = hours[hourly.index.to_numpy()]
    return hourly.reindex(hours)
