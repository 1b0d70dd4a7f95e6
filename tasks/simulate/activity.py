"""Daily viewing: who is active, which live stream each session picks, and follows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.simulate.config import DAY_S, DIURNAL_LOCAL, HOUR_S, SimConfig, day_weekday
from tasks.simulate.population import Streamers, Streams, Users
from tasks.vocabulary import REGION_UTC_OFFSET, REGIONS

SLOT_S = 1800  # live-stream lookup granularity
MIN_TAIL_S = 60  # a session needs at least this much stream left when it starts
RECENT_K = 4  # streamers remembered per user for the repeat boost
REPEAT_BOOST = 4.0
SAME_REGION_BOOST = 2.0
WEEKEND_ACTIVITY = 1.2
_OFFSET_S = np.array([REGION_UTC_OFFSET[r] for r in REGIONS], dtype=np.int64) * HOUR_S


class LiveIndex:
    """Streams overlapping each 30-minute slot, so a session scores only a few streams."""

    def __init__(self, config: SimConfig, streams: Streams, days: int) -> None:
        self.origin = config.start_epoch
        self.n_slots = days * DAY_S // SLOT_S + 1
        first = (streams.start - self.origin) // SLOT_S
        last = (streams.end - MIN_TAIL_S - 1 - self.origin) // SLOT_S
        count = np.maximum(last - first + 1, 0)
        member = np.repeat(np.arange(len(streams)), count)
        within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        slot = np.repeat(first, count) + within
        order = np.argsort(slot, kind="stable")
        self.members = member[order]
        self.bounds = np.searchsorted(slot[order], np.arange(self.n_slots + 1))

    def at(self, slot: int) -> np.ndarray:
        """Indices of streams that may be live during a slot."""
        if slot < 0 or slot >= self.n_slots:
            return self.members[:0]
        return self.members[self.bounds[slot] : self.bounds[slot + 1]]


@dataclass
class ViewerState:
    """What the platform remembers between days: recent streamers and follow pairs."""

    recent: np.ndarray  # (users, RECENT_K) streamer index, -1 when empty
    recent_pos: np.ndarray  # next ring-buffer position per user
    follows: np.ndarray  # sorted codes user * n_streamers + streamer

    @classmethod
    def empty(cls, n_users: int) -> ViewerState:
        """State before the first day."""
        return cls(
            recent=np.full((n_users, RECENT_K), -1, dtype=np.int32),
            recent_pos=np.zeros(n_users, dtype=np.int64),
            follows=np.zeros(0, dtype=np.int64),
        )


@dataclass
class Sessions:
    """Watch sessions of one user chunk and day, ordered by start."""

    user: np.ndarray
    stream: np.ndarray
    streamer: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def popularity(st: Streamers) -> np.ndarray:
    """Stream attractiveness from latent quality and the current follower count."""
    return st.quality**1.5 * (1.0 + 0.3 * np.log1p(st.followers))


def _choose_streams(
    ts: np.ndarray,
    user: np.ndarray,
    users: Users,
    st: Streamers,
    streams: Streams,
    live: LiveIndex,
    state: ViewerState,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pick a live stream per session, p ∝ interest × popularity × region × repeat; -1 if none."""
    chosen = np.full(len(ts), -1, dtype=np.int64)
    if len(ts) == 0:
        return chosen
    pop = popularity(st)
    slot = (ts - live.origin) // SLOT_S
    order = np.argsort(slot, kind="stable")
    slots, starts = np.unique(slot[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for s, a, b in zip(slots, starts, ends, strict=True):
        cand = live.at(int(s))
        if len(cand) == 0:
            continue
        rows = order[a:b]
        t, u = ts[rows], user[rows]
        who = streams.streamer[cand]
        on_air = (streams.start[cand][None, :] <= t[:, None]) & (
            t[:, None] < streams.end[cand][None, :] - MIN_TAIL_S
        )
        weight = users.interests[u][:, st.category[who]] * pop[who][None, :]
        weight *= np.where(users.region[u][:, None] == st.region[who][None, :], SAME_REGION_BOOST, 1.0)
        seen = (state.recent[u][:, :, None] == who[None, None, :]).any(axis=1)
        weight *= np.where(seen, REPEAT_BOOST, 1.0)
        weight *= on_air
        cum = np.cumsum(weight, axis=1)
        total = cum[:, -1]
        pick = (cum < (rng.random(len(rows)) * total)[:, None]).sum(axis=1)
        chosen[rows] = np.where(total > 0, cand[np.minimum(pick, len(cand) - 1)], -1)
    return chosen


def simulate_sessions(
    config: SimConfig,
    day: int,
    lo: int,
    hi: int,
    users: Users,
    st: Streamers,
    streams: Streams,
    live: LiveIndex,
    state: ViewerState,
    rng: np.random.Generator,
    region_boost: np.ndarray | None = None,
) -> Sessions:
    """Sessions of users [lo, hi) on their local calendar day `day`.

    region_boost multiplies the sessions of each region's active users (a planted traffic shift).
    """
    day_start = config.start_epoch + day * DAY_S
    idx = np.arange(lo, hi)
    # Cheap pre-filter: on board by the end of the (local) day and not churned before it.
    idx = idx[(users.signup_ts[idx] < day_start + 2 * DAY_S) & (users.churn_ts[idx] > day_start - DAY_S)]
    weekend = day_weekday(config, day) >= 5
    p_active = np.minimum(users.activity[idx] * (WEEKEND_ACTIVITY if weekend else 1.0), 1.0)
    idx = idx[rng.random(len(idx)) < p_active]
    n_sess = 1 + rng.poisson(2.0 * users.activity[idx])
    if region_boost is not None:
        scaled = n_sess * region_boost[users.region[idx]]
        n_sess = np.floor(scaled).astype(np.int64)
        n_sess += rng.random(len(idx)) < scaled - n_sess
    user = np.repeat(idx, n_sess)
    n = len(user)
    local_s = rng.choice(24, n, p=DIURNAL_LOCAL) * HOUR_S + rng.integers(0, HOUR_S, n)
    ts = day_start + local_s - _OFFSET_S[users.region[user]]
    ok = (ts >= np.maximum(users.signup_ts[user], config.start_epoch)) & (
        ts < users.churn_ts[user] - MIN_TAIL_S
    )
    user, ts = user[ok], ts[ok]
    stream = _choose_streams(ts, user, users, st, streams, live, state, rng)
    ok = stream >= 0
    user, ts, stream = user[ok], ts[ok], stream[ok]
    # Lognormal watch time, longer for more active users, cut at the stream end or churn.
    dur = rng.lognormal(np.log(900.0 * (0.5 + users.activity[user])), 0.9)
    end = np.minimum.reduce(
        [ts + np.maximum(dur, 30.0).astype(np.int64), streams.end[stream], users.churn_ts[user] - 1]
    )
    ok = end - ts >= 10
    order = np.lexsort((user[ok], ts[ok]))
    sel = np.flatnonzero(ok)[order]
    return Sessions(user[sel], stream[sel], streams.streamer[stream[sel]], ts[sel], end[sel])


def remember(state: ViewerState, sessions: Sessions) -> None:
    """Push each user's latest streamers into their ring buffer of recent streamers."""
    if len(sessions) == 0:
        return
    order = np.lexsort((sessions.start, sessions.user))
    u, s = sessions.user[order], sessions.streamer[order]
    first = np.searchsorted(u, u, side="left")
    count = np.searchsorted(u, u, side="right") - first
    rank = np.arange(len(u)) - first
    # Only the last RECENT_K sessions per user, so no slot is written twice.
    keep = rank >= count - RECENT_K
    pos = (state.recent_pos[u[keep]] + rank[keep]) % RECENT_K
    state.recent[u[keep], pos] = s[keep]
    users_today, n_today = np.unique(u, return_counts=True)
    state.recent_pos[users_today] += n_today


def follows(
    sessions: Sessions,
    st: Streamers,
    state: ViewerState,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New follows (user, streamer, ts) from sessions; updates follower counts and state."""
    dur = sessions.end - sessions.start
    p = 0.04 * np.minimum(st.quality[sessions.streamer], 3.0) * np.minimum(1.0, dur / 1200.0)
    hit = np.flatnonzero(rng.random(len(sessions)) < p)
    code = sessions.user[hit] * len(st) + sessions.streamer[hit]
    code, first = np.unique(code, return_index=True)
    hit = hit[first]
    fresh = ~np.isin(code, state.follows, assume_unique=True)
    code, hit = code[fresh], hit[fresh]
    state.follows = np.union1d(state.follows, code)
    st.followers += np.bincount(sessions.streamer[hit], minlength=len(st))
    ts = sessions.start[hit] + (rng.random(len(hit)) * dur[hit]).astype(np.int64)
    order = np.argsort(ts, kind="stable")
    return sessions.user[hit][order], sessions.streamer[hit][order], ts[order]
