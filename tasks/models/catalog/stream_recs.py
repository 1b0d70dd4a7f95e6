"""stream_recs: which live streams to show a user now, a ranking over the streams live at that moment.

The protocol follows Rappaz, McAuley & Aberer, "Recommendation on Live-Streaming Platforms: Dynamic
Availability and Repeat Consumption" (RecSys 2021): one query per watch-session start (user, t),
candidates are only the streams live at t (``event_ts <= t < end_ts``), the split is temporal, and
HR@1/5/10 and NDCG@10 are reported separately for repeat targets (the user watched the target
streamer before t) and new ones. Two baselines: POP (the live streamer with the most sessions
started in the 7 days before t) and REP (the live streamer the user watched most recently).

Every input is computed from history strictly before t, read through the feature store: the
session and follow logs (``user_session_log``, ``user_follow_log``: a session or follow is known
one second after it starts) give the user × streamer history (sessions, recency, place among the
user's last sessions, follows), the user's category mix and the streamer's recent popularity;
``user_profile`` gives the region. The streams on air (the candidates, with their category,
region and time on air) come from validated raw_streams partitions; their end times are used
only to decide which streams are on air at t, never as features.

The item is the streamer (a streamer has at most one stream on air; stream ids are ephemeral):
scores are entity_key = user_key, item = streamer_id, rank 1..10, score = the re-ranker's
probability, detail = JSON with the stream id, category and whether the stream is live or only
scheduled (see ``scoring_candidates``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sqlalchemy import Connection, Engine, and_, select
from sqlalchemy.sql import Select
from xgboost import XGBClassifier

from tasks.dates import partition_day
from tasks.featurestore import get_online_features
from tasks.featurestore.definitions import DAY_S
from tasks.featurestore.views import FEATURE_VIEWS
from tasks.models.families.event_logs import read_logs, unpack
from tasks.models.plots import plot_hit_rate_at_k
from tasks.models.scoring_frame import check_fresh
from tasks.models.spec import (
    ChangeThreshold,
    ColumnBaseline,
    LabelWindow,
    ModelSpec,
    PromotionPolicy,
    RelativeThreshold,
    Sampling,
    ScoringTarget,
    SignificanceRule,
)
from tasks.warehouse import raw_table, validated_dates

HOUR_S = 3_600
LOOKBACK_DAYS = 28  # user history the features (and the repeat/new split) look back over
STREAM_LOOKBACK_S = 8 * DAY_S  # streams read before a window: long streams and last week's schedule
MAX_QUERIES = 6_000  # queries kept per label window (a stable hash sample of the session starts)
ACTIVE_DAYS = 7  # scoring covers users with a session in the last week
TOP_K = 10
RECENT_SESSIONS = 4  # how many of the user's latest sessions "pair_recent" looks at
LABEL_SOURCES = ("raw_watch_sessions", "raw_streams", "raw_follows", "raw_users")
METRICS = ("hit_rate_1", "hit_rate_5", "hit_rate_10", "ndcg_10", "mrr", "catalog_coverage_10")
SLICES = ("target_type",)
REPEAT, NEW = "repeat", "new"

FEATURES: tuple[str, ...] = (
    "pair_sessions_7d",  # the user's sessions with this streamer
    "pair_sessions_28d",
    "pair_hours_since",  # since the user last started a session with this streamer (NaN: never)
    "pair_recent",  # times the streamer appears among the user's last RECENT_SESSIONS sessions
    "pair_follows",  # the user followed the streamer
    "user_sessions_28d",
    "category_share_28d",  # share of the user's sessions in the stream's category (NaN: no history)
    "same_region",  # the streamer's region is the user's (NaN: user region unknown)
    "streamer_sessions_1h",  # sessions started with the streamer: recent popularity
    "streamer_sessions_24h",
    "streamer_sessions_7d",
    "streamer_follows",  # follows the streamer received before t (all validated history)
    "stream_sessions",  # sessions started on this very stream so far
    "live_hours",  # how long the stream has been on air
)


# --- reading validated history -----------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """Validated raw rows the features of one window (or one scoring moment) are computed from."""

    sessions: pd.DataFrame  # event_id, user_key, stream_id, streamer_id, category, event_ts
    streams: pd.DataFrame  # stream_id, streamer_id, category, region, event_ts, end_ts
    follows: pd.DataFrame  # user_key, streamer_id, event_ts
    users: pd.DataFrame  # user_key, region


def _read(conn: Connection, query: Select[Any], ints: tuple[str, ...]) -> pd.DataFrame:
    result = conn.execute(query)
    # Plain tuples: building a frame from Row objects probes each one for attributes (slow).
    frame = pd.DataFrame.from_records([tuple(row) for row in result], columns=list(result.keys()))
    for column in frame.columns:
        frame[column] = frame[column].astype("int64") if column in ints else frame[column].astype(object)
    return frame


def _between(table: Any, first_ts: int, end_ts: int, *, inclusive: bool = False) -> Any:
    """Rows of validated partitions with first_ts <= event_ts < end_ts (<= with inclusive)."""
    upper = table.c.event_ts <= end_ts if inclusive else table.c.event_ts < end_ts
    return and_(
        table.c.event_date.between(partition_day(first_ts), partition_day(end_ts)),  # partition pruning
        table.c.event_date.in_(validated_dates(table.name)),
        table.c.event_ts >= first_ts,
        upper,
    )


SESSION_LOG = ("user_session_log:sessions_1d",)
FOLLOW_LOG = ("user_follow_log:follows_1d",)
REGION = ("user_profile:region",)
HISTORY_VIEWS = ("user_session_log", "user_follow_log", "user_profile")  # read through the store


def _logged(
    engine: Engine, refs: tuple[str, ...], start_ts: int, end_ts: int, names: list[str]
) -> pd.DataFrame:
    """The events of a log view with start_ts <= event_ts < end_ts, each once, in (time, id) order."""
    rows = read_logs(engine, refs, start_ts, end_ts)
    events = unpack(rows, "user_key", refs[0].replace(":", "__", 1), names).drop(columns="row_ts")
    events = events.drop_duplicates("event_id")
    events = events.astype({c: ("int64" if c == "event_ts" else object) for c in events.columns})
    ts = events["event_ts"].to_numpy("int64")
    events = events[(ts >= start_ts) & (ts < end_ts)]
    return events.sort_values(["event_ts", "event_id"], kind="stable").reset_index(drop=True)


def load_history(conn: Connection, start_ts: int, end_ts: int) -> History:
    """Sessions, streams, follows and user regions needed for queries in [start_ts, end_ts].

    Sessions, follows and regions come through the feature store (a session or follow is known
    one second after it starts); the streams, which decide the live candidates, from raw_streams.
    """
    engine = conn.engine
    first = start_ts - LOOKBACK_DAYS * DAY_S
    session_columns = ["event_id", "stream_id", "streamer_id", "category", "event_ts"]
    sessions = _logged(engine, SESSION_LOG, first, end_ts, session_columns)
    sessions = sessions[["event_id", "user_key", "stream_id", "streamer_id", "category", "event_ts"]]
    follows = _logged(engine, FOLLOW_LOG, 0, end_ts, ["event_id", "streamer_id", "event_ts"])
    streams = raw_table("raw_streams")
    on_air = _read(
        conn,
        select(
            streams.c.stream_id,
            streams.c.streamer_id,
            streams.c.category,
            streams.c.region,
            streams.c.event_ts,
            streams.c.end_ts,
        )
        .where(_between(streams, start_ts - STREAM_LOOKBACK_S, end_ts, inclusive=True))
        .order_by(streams.c.event_ts, streams.c.stream_id),
        ("event_ts", "end_ts"),
    )
    # Signup attributes never change, so the regions as of end_ts are those of every earlier query.
    viewers = pd.DataFrame({"user_key": sorted(set(sessions["user_key"]))}, dtype=object)
    region = (
        get_online_features(engine, viewers, REGION, end_ts).rename(
            columns={"user_profile__region": "region"}
        )
        if len(viewers)
        else pd.DataFrame({"user_key": [], "region": []}, dtype=object)
    )
    return History(
        sessions.reset_index(drop=True),
        on_air,
        follows[["user_key", "streamer_id", "event_ts"]].reset_index(drop=True),
        region.dropna(subset=["region"]).reset_index(drop=True),
    )


# --- candidates ---------------------------------------------------------------------------------


def live_pairs(starts: Any, ends: Any, times: Any) -> tuple[np.ndarray, np.ndarray]:
    """(time index, stream index) of every stream on air at each time: start <= t < end."""
    starts, ends, times = (np.asarray(a, dtype="int64") for a in (starts, ends, times))
    if len(starts) == 0 or len(times) == 0:
        return np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64")
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    longest = int((ends - starts).max())
    lo = np.searchsorted(sorted_starts, times - longest, side="left")
    hi = np.searchsorted(sorted_starts, times, side="right")
    count = hi - lo
    which = np.repeat(np.arange(len(times)), count)
    offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    stream = order[np.repeat(lo, count) + offset]
    keep = ends[stream] > times[which]
    return which[keep], stream[keep]


def _candidate_frame(
    queries: pd.DataFrame, streams: pd.DataFrame, q: np.ndarray, s: np.ndarray
) -> pd.DataFrame:
    """One row per (query, live streamer); a streamer with two streams on air keeps the later one."""
    pairs = pd.DataFrame(
        {
            "query_id": queries["query_id"].to_numpy(dtype=object)[q],
            "user_key": queries["user_key"].to_numpy(dtype=object)[q],
            "event_ts": queries["event_ts"].to_numpy("int64")[q],
            "stream_id": streams["stream_id"].to_numpy(dtype=object)[s],
            "streamer_id": streams["streamer_id"].to_numpy(dtype=object)[s],
            "category": streams["category"].to_numpy(dtype=object)[s],
            "region": streams["region"].to_numpy(dtype=object)[s],
            "stream_start": streams["event_ts"].to_numpy("int64")[s],
        }
    )
    pairs = pairs.sort_values(["query_id", "streamer_id", "stream_start"], kind="stable")
    return pairs.drop_duplicates(["query_id", "streamer_id"], keep="last").reset_index(drop=True)


def scoring_candidates(streams: pd.DataFrame, as_of: int) -> pd.DataFrame:
    """The streams to rank at as_of: those on air, else those the weekly schedule expects within the hour.

    On air means ``event_ts <= as_of <= end_ts``: the end is inclusive here because a stream still
    on air when the data was extracted has its record cut at that moment. When nothing is on air
    (a quiet hour, or data that ends before as_of), the candidates are the streamers who were on
    air during the same hour one week earlier: streamers keep weekly schedules, so these are the
    streams the platform expects; they carry no stream id and a "scheduled" status.
    """
    columns = ["stream_id", "streamer_id", "category", "region", "stream_start", "status"]
    start = streams["event_ts"].to_numpy("int64")
    end = streams["end_ts"].to_numpy("int64")
    on_air = streams[(start <= as_of) & (end >= as_of)]
    if not on_air.empty:
        out = on_air.rename(columns={"event_ts": "stream_start"}).assign(status="live")
    else:
        week_ago = as_of - 7 * DAY_S
        last_week = streams[(start < week_ago + HOUR_S) & (end > week_ago)]
        out = last_week.assign(stream_id=None, stream_start=as_of, status="scheduled")
    out = out.sort_values(["streamer_id", "stream_start"], kind="stable")
    return out.drop_duplicates("streamer_id", keep="last")[columns].reset_index(drop=True)


# --- point-in-time features ---------------------------------------------------------------------

_SHIFT = np.int64(1) << np.int64(32)  # packs (key code, epoch seconds) into one sortable int64


class _Timeline:
    """Event times per integer key, for counting a key's events in a window before a time."""

    def __init__(self, codes: np.ndarray, ts: np.ndarray, values: np.ndarray | None = None) -> None:
        packed = codes.astype("int64") * _SHIFT + ts.astype("int64")
        order = np.argsort(packed, kind="stable")
        self.packed = packed[order]
        self.values = None if values is None else values[order]

    def position(self, codes: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Index of the first event of the key at or after t (so events before t end just before it)."""
        return np.searchsorted(self.packed, codes.astype("int64") * _SHIFT + t, side="left")

    def count(self, codes: np.ndarray, t: np.ndarray, window_s: int) -> np.ndarray:
        """Events of each key in [t - window_s, t)."""
        since = np.maximum(t - window_s, 0)
        low = np.searchsorted(self.packed, codes.astype("int64") * _SHIFT + since, side="left")
        return (self.position(codes, t) - low).astype("float64")

    def key_at(self, index: np.ndarray) -> np.ndarray:
        """The key code of events by index (-1 out of range)."""
        inside = (index >= 0) & (index < len(self.packed))
        return np.where(inside, self.packed[np.clip(index, 0, max(len(self.packed) - 1, 0))] // _SHIFT, -1)

    def last(self, codes: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Time of each key's latest event before t (NaN if none)."""
        if len(self.packed) == 0:
            return np.full(len(codes), np.nan)
        before = self.position(codes, t) - 1
        mine = self.key_at(before) == codes
        return np.where(mine, (self.packed[np.maximum(before, 0)] % _SHIFT).astype("float64"), np.nan)


def _encode(*columns: pd.Series) -> tuple[list[np.ndarray], int]:
    """Shared integer codes of several columns of one key (equal keys, equal codes), and the count."""
    values = pd.concat(columns, ignore_index=True).astype(object)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    bounds = np.cumsum([0, *(len(c) for c in columns)])
    parts = [codes[lo:hi].astype("int64") for lo, hi in itertools.pairwise(bounds)]
    return parts, len(uniques)


def pair_features(pairs: pd.DataFrame, history: History) -> pd.DataFrame:
    """The FEATURES and baseline scores of (user, streamer, t) rows, from history strictly before t."""
    t = pairs["event_ts"].to_numpy("int64")
    sessions, follows, out = history.sessions, history.follows, {}
    ts = sessions["event_ts"].to_numpy("int64")
    follow_ts = follows["event_ts"].to_numpy("int64")
    (su, fu, qu), _ = _encode(sessions["user_key"], follows["user_key"], pairs["user_key"])
    (ss, fs, qs), n_streamers = _encode(sessions["streamer_id"], follows["streamer_id"], pairs["streamer_id"])
    (sc, qc), n_categories = _encode(sessions["category"], pairs["category"])
    (sst, qst), _ = _encode(sessions["stream_id"], pairs["stream_id"])

    pair = _Timeline(su * n_streamers + ss, ts)
    q_pair = qu * n_streamers + qs
    out["pair_sessions_7d"] = pair.count(q_pair, t, 7 * DAY_S)
    out["pair_sessions_28d"] = pair.count(q_pair, t, LOOKBACK_DAYS * DAY_S)
    last = pair.last(q_pair, t)
    last = np.where(t - last <= LOOKBACK_DAYS * DAY_S, last, np.nan)
    out["pair_hours_since"] = (t - last) / HOUR_S

    # The user's latest sessions (within the lookback, as scoring sees them), streamer of each.
    user = _Timeline(su, ts, values=ss)
    end = user.position(qu, t)
    recent = np.zeros(len(pairs))
    assert user.values is not None
    since = t - LOOKBACK_DAYS * DAY_S
    for back in range(1, RECENT_SESSIONS + 1) if len(ts) else ():
        before = end - back
        index = np.maximum(before, 0)
        mine = (user.key_at(before) == qu) & (user.packed[index] % _SHIFT >= since)
        recent += mine & (user.values[index] == qs)
    out["pair_recent"] = recent
    followed = _Timeline(fu * n_streamers + fs, follow_ts).last(q_pair, t)
    out["pair_follows"] = np.isfinite(followed).astype("float64")

    user_total = user.count(qu, t, LOOKBACK_DAYS * DAY_S)
    out["user_sessions_28d"] = user_total
    in_category = _Timeline(su * n_categories + sc, ts).count(
        qu * n_categories + qc, t, LOOKBACK_DAYS * DAY_S
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out["category_share_28d"] = np.where(user_total > 0, in_category / user_total, np.nan)

    region = pairs["user_key"].map(history.users.set_index("user_key")["region"])
    same = (region.to_numpy(dtype=object) == pairs["region"].to_numpy(dtype=object)).astype("float64")
    out["same_region"] = np.where(region.isna().to_numpy(), np.nan, same)

    streamer = _Timeline(ss, ts)
    out["streamer_sessions_1h"] = streamer.count(qs, t, HOUR_S)
    out["streamer_sessions_24h"] = streamer.count(qs, t, DAY_S)
    out["streamer_sessions_7d"] = streamer.count(qs, t, 7 * DAY_S)
    out["streamer_follows"] = _Timeline(fs, follow_ts).count(qs, t, 10_000 * DAY_S)
    # A scheduled (not yet live) candidate has no stream id: no sessions on it yet.
    stream_sessions = _Timeline(sst, ts).count(qst, t, 7 * DAY_S)
    out["stream_sessions"] = np.where(pairs["stream_id"].isna().to_numpy(), 0.0, stream_sessions)
    out["live_hours"] = (t - pairs["stream_start"].to_numpy("int64")) / HOUR_S

    # Baselines: POP ranks live streamers by sessions in the last 7 days; REP by how recently
    # the user watched them (never watched: 0, after every watched one).
    out["pop_score"] = out["streamer_sessions_7d"]
    out["rep_score"] = np.where(np.isnan(out["pair_hours_since"]), 0.0, 1.0 / (1.0 + out["pair_hours_since"]))
    return pd.DataFrame(out, index=pairs.index)


# --- labels -------------------------------------------------------------------------------------


def sample_queries(ids: pd.Series, cap: int) -> np.ndarray:
    """Boolean mask keeping at most cap ids: the smallest stable hashes (the same ids every run)."""
    if len(ids) <= cap:
        return np.ones(len(ids), dtype=bool)
    hashed = pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy()
    keep = np.zeros(len(ids), dtype=bool)
    keep[np.argsort(hashed, kind="stable")[:cap]] = True
    return keep


def rank_frame(pairs: pd.DataFrame, history: History) -> pd.DataFrame:
    """Candidate rows with features and baselines, in a deterministic (time, query, streamer) order."""
    features = pair_features(pairs, history)
    frame = pd.concat([pairs, features], axis=1)
    return frame.sort_values(["event_ts", "query_id", "streamer_id"], kind="stable").reset_index(drop=True)


def build_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """One query per sampled session start in the window; rows = streamers live then, label = chosen."""
    history = load_history(conn, window.start_ts, window.end_ts)
    sessions = history.sessions
    ts = sessions["event_ts"].to_numpy("int64")
    starts = sessions[(ts >= window.start_ts) & (ts < window.end_ts)]
    starts = starts[sample_queries(starts["event_id"], MAX_QUERIES)]
    queries = pd.DataFrame(
        {
            "query_id": starts["event_id"].to_numpy(dtype=object),
            "user_key": starts["user_key"].to_numpy(dtype=object),
            "event_ts": starts["event_ts"].to_numpy("int64"),
            "target": starts["streamer_id"].to_numpy(dtype=object),
        }
    )
    streams = history.streams
    q, s = live_pairs(streams["event_ts"], streams["end_ts"], queries["event_ts"])
    pairs = _candidate_frame(queries, streams, q, s)
    target = pairs["query_id"].map(queries.set_index("query_id")["target"])
    pairs["label"] = (pairs["streamer_id"] == target).astype("int64")
    # A target outside the live candidates (its stream's partition not validated) has no positive row.
    answered = pairs.groupby("query_id")["label"].transform("max") > 0
    frame = rank_frame(pairs[answered].reset_index(drop=True), history)
    seen = frame["pair_hours_since"].notna() & (frame["label"] == 1)
    repeat = seen.groupby(frame["query_id"]).transform("max")
    frame["target_type"] = np.where(repeat, REPEAT, NEW)
    frame["example_id"] = frame["query_id"].astype(str) + ":" + frame["streamer_id"].astype(str)
    frame["item_id"] = frame["streamer_id"]  # for catalog_coverage_10
    return frame.drop(columns=["stream_start"])


# --- scoring ------------------------------------------------------------------------------------


def scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
    """Every user active in the last week × the streams to rank at as_of, with their features."""
    now = int(as_of.timestamp())
    views = dict.fromkeys([*spec.history_views, *(ref.partition(":")[0] for ref in spec.feature_refs)])
    for name in views:  # the framework's freshness rule, once per view (sessions: a day old at most)
        check_fresh(engine, FEATURE_VIEWS[name], now)
    with engine.connect() as conn:
        history = load_history(conn, now, now)
    sessions = history.sessions
    ts = sessions["event_ts"].to_numpy("int64")
    users = sorted(set(sessions["user_key"][ts >= now - ACTIVE_DAYS * DAY_S]))
    candidates = scoring_candidates(history.streams, now)
    if not users or candidates.empty:
        raise ValueError(
            f"{spec.name}: nothing to score at {as_of.isoformat()}: {len(users)} active users, "
            f"{len(candidates)} live or scheduled streams in validated partitions of raw_streams"
        )
    pairs = candidates.merge(pd.DataFrame({"user_key": users}, dtype=object), how="cross")
    pairs = pairs.assign(query_id=pairs["user_key"], event_ts=np.int64(now))
    frame = rank_frame(pairs, history)
    streamers = pd.DataFrame({"streamer_id": sorted(set(frame["streamer_id"]))}, dtype=object)
    stored = get_online_features(engine, streamers, spec.feature_refs, now)
    frame = frame.merge(stored, on="streamer_id", how="left", validate="many_to_one")
    return frame.sort_values(["user_key", "streamer_id"], kind="stable").reset_index(drop=True)


def format_scores(spec: ModelSpec, frame: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The top TOP_K streamers per user: entity_key=user_key, item=streamer_id, rank, score, detail."""
    scored = frame[["user_key", "streamer_id", "stream_id", "category", "status"]].assign(
        score=np.clip(predictions["prediction"].to_numpy("float64"), *spec.scoring.score_range)
    )
    scored = scored.sort_values(["user_key", "score", "streamer_id"], ascending=[True, False, True])
    scored["rank"] = scored.groupby("user_key").cumcount() + 1
    top = scored[scored["rank"] <= TOP_K]
    detail = [
        json.dumps({"stream_id": s, "category": c, "status": st}, sort_keys=True)
        for s, c, st in zip(top["stream_id"], top["category"], top["status"], strict=True)
    ]
    return pd.DataFrame(
        {
            "entity_key": top["user_key"].astype(str).to_numpy(),
            "item": top["streamer_id"].astype(str).to_numpy(),
            "rank": top["rank"].to_numpy("int64"),
            "score": top["score"].to_numpy("float64"),
            "detail": detail,
        }
    ).reset_index(drop=True)


# --- the re-ranker --------------------------------------------------------------------------------

RANKER_DEFAULTS: dict[str, Any] = {
    "n_estimators": 400,
    "learning_rate": 0.1,
    "max_depth": 4,
    "min_child_weight": 5.0,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "reg_lambda": 1.0,
    "max_bin": 64,
    "early_stopping_rounds": 20,
    # One thread: OpenMP workers spin-wait, so on shared cores two threads can be many times
    # slower than one, and a fit at demo scale takes seconds either way.
    "n_jobs": 1,
}


class LiveStreamRanker(BaseEstimator):  # type: ignore[misc]
    """XGBoost re-ranker: P(the user starts this live stream) from the candidate row's inputs.

    A binary objective over candidate rows: within a query, sorting by the probability is the
    ranking, and the scores stay comparable across queries (and in [0, 1] for publishing).
    ``columns`` (the inputs, in order) and ``params`` (XGBoost settings over RANKER_DEFAULTS,
    plus ``seed``) are stored as given; ``fit`` sets ``booster_``.
    """

    def __init__(self, columns: tuple[str, ...], params: Mapping[str, Any] | None = None) -> None:
        self.columns = columns
        self.params = params

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise ValueError(f"stream_recs input lacks columns {missing}")
        return (
            np.column_stack([pd.to_numeric(X[c]).to_numpy("float64", na_value=np.nan) for c in self.columns])
            if len(X)
            else np.zeros((0, len(self.columns)))
        )

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        eval_set: list[tuple[pd.DataFrame, Any]] | None = None,
    ) -> LiveStreamRanker:
        """Fit the booster, early-stopped on the first eval_set pair when one is given."""
        given = dict(self.params or {})
        params = {**RANKER_DEFAULTS, **{k: v for k, v in given.items() if k != "seed"}}
        if not eval_set:
            params.pop("early_stopping_rounds", None)
        booster = XGBClassifier(
            objective="binary:logistic",
            eval_metric="logloss",
            tree_method="hist",
            random_state=int(given.get("seed", 0)),
            **params,
        )
        evals = [(self._matrix(x), np.asarray(v, dtype="float64")) for x, v in (eval_set or [])][:1]
        booster.fit(self._matrix(X), np.asarray(y, dtype="float64"), eval_set=evals or None, verbose=False)
        self.booster_ = booster
        return self

    @property
    def best_iteration(self) -> int | None:
        """The early-stopped iteration (None before fitting or without early stopping)."""
        booster = getattr(self, "booster_", None)
        return None if booster is None else getattr(booster, "best_iteration", None)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The probability of each candidate row being the stream the user starts."""
        booster = getattr(self, "booster_", None)
        if booster is None:
            raise ValueError("LiveStreamRanker is not fitted")
        if len(X) == 0:
            return np.zeros(0)
        return np.asarray(booster.predict_proba(self._matrix(X))[:, 1], dtype="float64")

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """The predictions as a frame with a "prediction" column, aligned with X."""
        return pd.DataFrame({"prediction": self.predict(X)}, index=X.index)


def make_ranker(params: Mapping[str, Any]) -> LiveStreamRanker:
    """A fresh re-ranker over the spec's inputs."""
    return LiveStreamRanker(INPUTS, params)


# Joined to each candidate row (by streamer_id) as of its query time: the streamer's hours on air
# over the 7 days before the last midnight (how regular a schedule the viewer can count on).
FEATURE_REFS: tuple[str, ...] = ("streamer_activity:live_hours_7d",)
REF_COLUMNS: tuple[str, ...] = tuple(ref.replace(":", "__", 1) for ref in FEATURE_REFS)
INPUTS = (*REF_COLUMNS, *FEATURES)
# The inputs of one side of a (user, streamer) row, for monitoring (ModelSpec.input_entities): the
# candidate's (its stream on air is the streamer's one at a time) and the user's; the pair_*,
# category and region inputs describe the pair.
STREAMER_INPUTS = ("streamer_sessions_1h", "streamer_sessions_24h", "streamer_sessions_7d",
                   "streamer_follows", "stream_sessions", "live_hours")  # fmt: skip
INPUT_ENTITIES: dict[str, str] = {**dict.fromkeys(STREAMER_INPUTS, "streamer"), "user_sessions_28d": "user"}


def ranking_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """HR@K by K of the model, POP and REP, overall and for repeat and new targets (ModelSpec.plots)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {"prediction": "model", "baseline_prediction": "POP", "baseline1_prediction": "REP"}
    return [plot_hit_rate_at_k(frame, folder / "hit_rate_at_k.png", names, slice_column="target_type")]


# Relative bars, not absolute floors. HR@10 and NDCG@10 of every ordering grow with fewer streams live
# at a time and shrink with more, so a floor such as HR@10 >= 0.55 only fits one platform size (the
# demo's 40 live streams: POP reaches 0.52 there, while at 50,000 users the model's 0.23 is 2.7x
# POP and still fails it). Instead the model must order the live streams significantly better than
# popularity (NDCG@10, paired bootstrap over users), beat both naive orderings on HR@10 and NDCG@10,
# and reach 1.2x the NDCG@10 of each (relative thresholds, judged on the paired interval of
# model - 1.2 x baseline like every threshold: a holdout too small to tell is undecided). 1.2 is
# the smallest lift worth replacing a one-line rule for; the demo measures 1.51x POP, 1.47x REP.
REP = str(ColumnBaseline("rep_score"))
POLICY = PromotionPolicy(
    change_thresholds=(
        ChangeThreshold("ndcg_10", slack=-0.01),
        ChangeThreshold("hit_rate_10", slack=-0.01),
        ChangeThreshold("hit_rate_10", slack=-0.03, slice="target_type"),  # repeat and new each
    ),
    significance=(SignificanceRule("ndcg_10", against="baseline", confidence=0.95),),
    beat_baseline=("hit_rate_10", "ndcg_10"),
    relative_thresholds=(
        RelativeThreshold("ndcg_10", ratio=1.2, against="baseline"),
        RelativeThreshold("ndcg_10", ratio=1.2, against=REP),
    ),
)

stream_recs = ModelSpec(
    name="stream_recs",
    kind="ranking",
    description="Which live streams to show a user now: a re-ranking of the streams live at that moment.",
    build_labels=build_labels,
    # The other inputs are computed from the store's session and follow logs and user_profile
    # (HISTORY_VIEWS, read in load_history), to the second.
    feature_refs=FEATURE_REFS,
    history_views=HISTORY_VIEWS,
    context_features=FEATURES,
    categorical=(),
    make_estimator=make_ranker,
    params={"max_depth": 4, "learning_rate": 0.1, "n_estimators": 400},
    baseline=ColumnBaseline("pop_score"),
    metrics=METRICS,
    primary_metric="ndcg_10",
    slices=SLICES,
    policy=POLICY,
    scoring=ScoringTarget(entity="user", key="user_key"),
    label_sources=LABEL_SOURCES,
    training_days=21,
    extra_baselines=(ColumnBaseline("rep_score"),),
    build_scoring_frame=scoring_frame,
    format_scores=format_scores,
    plots=ranking_plots,
    # A ranker learns within a query: beyond the cap whole queries are kept, never part of one.
    sampling=Sampling("entity", column="query_id"),
    input_entities=INPUT_ENTITIES,
)
