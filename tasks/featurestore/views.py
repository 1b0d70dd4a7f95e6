"""The feature catalog: every feature view the models read, named `<measure>_<window>`."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from tasks.featurestore.definitions import DAY_S, BuildWindow, Feature, FeatureType, FeatureView, UnknownView
from tasks.vocabulary import CATEGORIES

# The platform's stream categories (tasks/vocabulary.py, which the simulator shares): features and data agree.
CATEGORY_VOCABULARY: tuple[str, ...] = tuple(CATEGORIES)

PART_END = "CAST(:part_end AS BIGINT)"
IN_WINDOW = "event_date BETWEEN :first_date AND :partition_date"
DAILY_TTL = DAY_S  # a windowed aggregate older than a day is stale; no row then means no activity


def _since(days: int) -> str:
    """SQL for the start of a trailing window of that many days ending at the partition's end."""
    return f"{PART_END} - {days * DAY_S}"


def _feats(dtype: FeatureType, *names: str) -> tuple[Feature, ...]:
    return tuple(Feature(n, dtype) for n in names)


def _windowed(days: tuple[int, ...], template: str) -> str:
    return ",\n  ".join(template.format(since=_since(d), d=d) for d in days)


_WATCH_MINUTES = "SUM(CASE WHEN event_ts >= {since} THEN duration_s ELSE 0 END) / 60.0 AS watch_minutes_{d}d"
_DISTINCT_STREAMERS = (
    "COUNT(DISTINCT CASE WHEN event_ts >= {since} THEN streamer_id END) AS distinct_streamers_{d}d"
)

user_watch = FeatureView(
    name="user_watch",
    entity="user",
    description="Watching volume, breadth and recency over 1, 7 and 28 days.",
    features=(
        *_feats("float", "watch_minutes_1d", "watch_minutes_7d", "watch_minutes_28d"),
        *_feats("int", "sessions_1d", "sessions_7d", "sessions_28d"),
        *_feats("int", "distinct_streamers_1d", "distinct_streamers_7d", "distinct_streamers_28d"),
        Feature("days_since_active_28d", "float"),
    ),
    ttl_s=DAILY_TTL,
    sources=("raw_watch_sessions",),
    lookback_days=28,
    sql=f"""
SELECT user_key, {PART_END} AS feature_ts,
  {_windowed((1, 7, 28), _WATCH_MINUTES)},
  {_windowed((1, 7, 28), "SUM(CASE WHEN event_ts >= {since} THEN 1 ELSE 0 END) AS sessions_{d}d")},
  {_windowed((1, 7, 28), _DISTINCT_STREAMERS)},
  ({PART_END} - MAX(event_ts)) / 86400.0 AS days_since_active_28d
FROM raw_watch_sessions
WHERE {IN_WINDOW}
GROUP BY user_key
""",
)


def category_mix(frames: Mapping[str, pd.DataFrame], window: BuildWindow) -> pd.DataFrame:
    """Share of each user's 28-day watch minutes per stream category (a pure pandas transform)."""
    watch = frames["raw_watch_sessions"]
    columns = [f"{c}_share_28d" for c in CATEGORY_VOCABULARY]
    if watch.empty:
        return pd.DataFrame(columns=["user_key", *columns])
    seconds = watch.pivot_table(
        index="user_key", columns="category", values="duration_s", aggfunc="sum", fill_value=0
    )
    total = seconds.sum(axis=1)
    # Categories outside the vocabulary still count in the total, so shares never overstate.
    shares = seconds.reindex(columns=list(CATEGORY_VOCABULARY), fill_value=0).div(
        total.where(total > 0), axis=0
    )
    shares.columns = columns
    return shares.astype("float64").reset_index()


user_category_mix = FeatureView(
    name="user_category_mix",
    entity="user",
    description="What each user watches: share of 28-day watch time per stream category.",
    features=_feats("float", *(f"{c}_share_28d" for c in CATEGORY_VOCABULARY)),
    ttl_s=DAILY_TTL,
    sources=("raw_watch_sessions",),
    lookback_days=28,
    transform=category_mix,
)

user_ads = FeatureView(
    name="user_ads",
    entity="user",
    description="Ad exposure and response, with a CTR smoothed towards 1/20.",
    features=(
        *_feats("int", "ad_impressions_7d", "ad_impressions_28d", "ad_clicks_7d", "ad_clicks_28d"),
        *_feats("float", "ad_ctr_smoothed_7d", "ad_ctr_smoothed_28d"),
    ),
    ttl_s=DAILY_TTL,
    sources=("raw_ad_impressions",),
    lookback_days=28,
    sql=f"""
SELECT user_key, feature_ts, ad_impressions_7d, ad_impressions_28d, ad_clicks_7d, ad_clicks_28d,
  (ad_clicks_7d + 1.0) / (ad_impressions_7d + 20.0) AS ad_ctr_smoothed_7d,
  (ad_clicks_28d + 1.0) / (ad_impressions_28d + 20.0) AS ad_ctr_smoothed_28d
FROM (
  SELECT user_key, {PART_END} AS feature_ts,
    {_windowed((7, 28), "SUM(CASE WHEN event_ts >= {since} THEN 1 ELSE 0 END) AS ad_impressions_{d}d")},
    {_windowed((7, 28), "SUM(CASE WHEN event_ts >= {since} THEN clicked ELSE 0 END) AS ad_clicks_{d}d")}
  FROM raw_ad_impressions
  WHERE {IN_WINDOW}
  GROUP BY user_key
) agg
""",
)

user_commerce = FeatureView(
    name="user_commerce",
    entity="user",
    description="Live-commerce intent and purchases over 28 days.",
    features=(
        Feature("orders_28d", "int"),
        Feature("spend_28d", "float"),
        Feature("product_views_28d", "int"),
    ),
    ttl_s=DAILY_TTL,
    sources=("raw_product_views", "raw_orders"),
    lookback_days=28,
    sql=f"""
SELECT user_key, {PART_END} AS feature_ts,
  SUM(is_order) AS orders_28d, SUM(amount) AS spend_28d, SUM(1 - is_order) AS product_views_28d
FROM (
  SELECT user_key, 1 AS is_order, amount FROM raw_orders WHERE {IN_WINDOW}
  UNION ALL
  SELECT user_key, 0, 0.0 FROM raw_product_views WHERE {IN_WINDOW}
) s
GROUP BY user_key
""",
)

user_gifts = FeatureView(
    name="user_gifts",
    entity="user",
    description="Tipping: gifts sent and their value over 7 and 28 days.",
    features=(
        *_feats("int", "gifts_count_7d", "gifts_count_28d"),
        *_feats("float", "gifts_sum_7d", "gifts_sum_28d"),
    ),
    ttl_s=DAILY_TTL,
    sources=("raw_gifts",),
    lookback_days=28,
    sql=f"""
SELECT user_key, {PART_END} AS feature_ts,
  {_windowed((7, 28), "SUM(CASE WHEN event_ts >= {since} THEN 1 ELSE 0 END) AS gifts_count_{d}d")},
  {_windowed((7, 28), "SUM(CASE WHEN event_ts >= {since} THEN amount ELSE 0 END) AS gifts_sum_{d}d")}
FROM raw_gifts
WHERE {IN_WINDOW}
GROUP BY user_key
""",
)

user_membership = FeatureView(
    name="user_membership",
    entity="user",
    description="Membership state from the latest subscribe/renew/cancel, and fees paid over 28 days.",
    features=(Feature("membership_active", "int"), Feature("membership_fees_28d", "float")),
    ttl_s=DAILY_TTL,
    sources=("raw_memberships",),
    # Memberships renew every 30 days, so an active member always has an action in 35 days.
    lookback_days=35,
    sql=f"""
SELECT user_key, {PART_END} AS feature_ts,
  MAX(CASE WHEN rn = 1 AND action IN ('subscribe', 'renew') THEN 1 ELSE 0 END) AS membership_active,
  SUM(CASE WHEN event_ts >= {_since(28)} THEN fee ELSE 0 END) AS membership_fees_28d
FROM (
  SELECT user_key, event_ts, action, fee,
    ROW_NUMBER() OVER (PARTITION BY user_key ORDER BY event_ts DESC, event_id DESC) AS rn
  FROM raw_memberships
  WHERE {IN_WINDOW}
) m
GROUP BY user_key
""",
)

user_paid_content = FeatureView(
    name="user_paid_content",
    entity="user",
    description="Paid-content purchases and spend over 28 days.",
    features=(Feature("paid_content_purchases_28d", "int"), Feature("paid_content_spend_28d", "float")),
    ttl_s=DAILY_TTL,
    sources=("raw_paid_content",),
    lookback_days=28,
    sql=f"""
SELECT user_key, {PART_END} AS feature_ts,
  COUNT(*) AS paid_content_purchases_28d, SUM(price) AS paid_content_spend_28d
FROM raw_paid_content
WHERE {IN_WINDOW}
GROUP BY user_key
""",
)

user_profile = FeatureView(
    name="user_profile",
    entity="user",
    description="Signup attributes and account age, snapshotted daily for every user signed up so far.",
    features=(
        *_feats("str", "region", "device", "age_band", "channel"),
        Feature("days_since_signup", "int"),
    ),
    ttl_s=2 * DAY_S,
    sources=("raw_users",),
    lookback_days=3650,  # all history: the snapshot covers every user who ever signed up
    sql=f"""
SELECT user_key, {PART_END} AS feature_ts, region, device, age_band, channel,
  ({PART_END} - event_ts) / 86400 AS days_since_signup
FROM (
  SELECT user_key, event_ts, region, device, age_band, channel,
    ROW_NUMBER() OVER (PARTITION BY user_key ORDER BY event_ts, event_id) AS rn
  FROM raw_users
  WHERE {IN_WINDOW}
) u
WHERE rn = 1
""",
)

streamer_activity = FeatureView(
    name="streamer_activity",
    entity="streamer",
    description="A streamer's audience, watch time, tips, follower growth and hours live over 7 days.",
    features=(
        Feature("unique_viewers_7d", "int"),
        Feature("watch_minutes_7d", "float"),
        Feature("gifts_sum_7d", "float"),
        Feature("gifts_count_7d", "int"),
        Feature("followers_gained_7d", "int"),
        Feature("live_hours_7d", "float"),
    ),
    ttl_s=DAILY_TTL,
    sources=("raw_watch_sessions", "raw_gifts", "raw_follows", "raw_streams"),
    lookback_days=7,
    sql=f"""
SELECT streamer_id, {PART_END} AS feature_ts,
  COUNT(DISTINCT viewer) AS unique_viewers_7d,
  SUM(watch_s) / 60.0 AS watch_minutes_7d,
  SUM(gift) AS gifts_sum_7d,
  SUM(is_gift) AS gifts_count_7d,
  SUM(is_follow) AS followers_gained_7d,
  SUM(live_s) / 3600.0 AS live_hours_7d
FROM (
  SELECT streamer_id, user_key AS viewer, duration_s AS watch_s, 0.0 AS gift, 0 AS is_gift,
    0 AS is_follow, 0 AS live_s
  FROM raw_watch_sessions WHERE {IN_WINDOW}
  UNION ALL
  SELECT streamer_id, NULL, 0, amount, 1, 0, 0 FROM raw_gifts WHERE {IN_WINDOW}
  UNION ALL
  SELECT streamer_id, NULL, 0, 0.0, 0, 1, 0 FROM raw_follows WHERE {IN_WINDOW}
  UNION ALL
  SELECT streamer_id, NULL, 0, 0.0, 0, 0, end_ts - event_ts FROM raw_streams WHERE {IN_WINDOW}
) s
GROUP BY streamer_id
""",
)

streamer_followers = FeatureView(
    name="streamer_followers",
    entity="streamer",
    description="Followers a streamer has gained since the start of history.",
    features=(Feature("followers_total", "int"),),
    ttl_s=2 * DAY_S,
    sources=("raw_follows",),
    lookback_days=3650,
    sql=f"""
SELECT streamer_id, {PART_END} AS feature_ts, COUNT(*) AS followers_total
FROM raw_follows
WHERE {IN_WINDOW}
GROUP BY streamer_id
""",
)

product_activity = FeatureView(
    name="product_activity",
    entity="product",
    description="A product's card views, orders and view-to-order conversion over 7 days.",
    features=(Feature("views_7d", "int"), Feature("orders_7d", "int"), Feature("conversion_7d", "float")),
    ttl_s=DAILY_TTL,
    sources=("raw_product_views", "raw_orders"),
    lookback_days=7,
    sql=f"""
SELECT product_id, feature_ts, views_7d, orders_7d,
  CAST(orders_7d AS FLOAT) / NULLIF(views_7d, 0) AS conversion_7d
FROM (
  SELECT product_id, {PART_END} AS feature_ts, SUM(1 - is_order) AS views_7d, SUM(is_order) AS orders_7d
  FROM (
    SELECT product_id, 0 AS is_order FROM raw_product_views WHERE {IN_WINDOW}
    UNION ALL
    SELECT product_id, 1 FROM raw_orders WHERE {IN_WINDOW}
  ) s
  GROUP BY product_id
) agg
""",
)

ad_activity = FeatureView(
    name="ad_activity",
    entity="ad",
    description="An ad's impressions, clicks and raw CTR over 7 days.",
    features=(Feature("impressions_7d", "int"), Feature("clicks_7d", "int"), Feature("ctr_7d", "float")),
    ttl_s=DAILY_TTL,
    sources=("raw_ad_impressions",),
    lookback_days=7,
    sql=f"""
SELECT ad_id, feature_ts, impressions_7d, clicks_7d,
  CAST(clicks_7d AS FLOAT) / NULLIF(impressions_7d, 0) AS ctr_7d
FROM (
  SELECT ad_id, {PART_END} AS feature_ts, COUNT(*) AS impressions_7d, SUM(clicked) AS clicks_7d
  FROM raw_ad_impressions
  WHERE {IN_WINDOW}
  GROUP BY ad_id
) agg
""",
)

_LAGS = (1, 24, 168)
_LAG_JOIN = "LEFT JOIN h l{h} ON l{h}.region = cur.region AND l{h}.hour_ts = cur.hour_ts - {s}"

region_traffic = FeatureView(
    name="region_traffic",
    entity="region",
    granularity="hourly",
    description="Hourly concurrent viewers and bandwidth per region, with 1h, 24h and 168h lags.",
    features=tuple(
        Feature(f"{m}_{suffix}", "float")
        for m in ("concurrent_viewers", "bandwidth_mbps")
        for suffix in ("1h", *(f"lag_{h}h" for h in _LAGS))
    ),
    ttl_s=3_600,
    sources=("raw_traffic",),
    lookback_days=8,  # the 168h lag of the partition's first hour reaches 7 days back
    sql=f"""
WITH h AS (
  SELECT region, event_ts - (event_ts % 3600) AS hour_ts,
    AVG(concurrent_viewers) AS viewers, AVG(bandwidth_mbps) AS mbps
  FROM raw_traffic
  WHERE {IN_WINDOW}
  GROUP BY region, event_ts - (event_ts % 3600)
)
SELECT cur.region, cur.hour_ts + 3600 AS feature_ts,
  cur.viewers AS concurrent_viewers_1h,
  {", ".join(f"l{h}.viewers AS concurrent_viewers_lag_{h}h" for h in _LAGS)},
  cur.mbps AS bandwidth_mbps_1h,
  {", ".join(f"l{h}.mbps AS bandwidth_mbps_lag_{h}h" for h in _LAGS)}
FROM h cur
{" ".join(_LAG_JOIN.format(h=h, s=h * 3600) for h in _LAGS)}
WHERE cur.hour_ts >= :part_start
""",
)

# --- forecast histories: each series' recent values as of every hour (traffic) or day (growth) ---------
# The forecasters derive their inputs (recent means, seasonal naive values, same-hour profiles) from
# these rows, read point-in-time at the forecast origin: a row holds only what was known at its end.

HISTORY_HOURS = 168  # one week of hourly values: the weekly naive and a 7-day same-hour profile
HISTORY_DAYS = 35  # five weeks of daily values: 4-week same-weekday profiles plus the campaign history
_HOUR_ENDS = " UNION ALL ".join(f"SELECT {n} AS n" for n in range(1, 25))
_HOURLY_LAG = "MAX(CASE WHEN s.hour_ts = e.feature_ts - {s} THEN s.value END) AS lag_{k}h"
_DAILY_LAG = "MAX(CASE WHEN day_ts = {end} - {s} THEN {measure} END) AS {measure}_lag_{k}d"
GROWTH_MEASURES = ("new_users", "campaign", "dau")
_HOURLY_LAGS = ",\n    ".join(_HOURLY_LAG.format(s=k * 3600, k=k) for k in range(1, HISTORY_HOURS + 1))
_DAILY_LAGS = ",\n    ".join(
    _DAILY_LAG.format(end=PART_END, s=k * DAY_S, measure=m, k=k)
    for m in GROWTH_MEASURES
    for k in range(1, HISTORY_DAYS + 1)
)

traffic_history = FeatureView(
    name="traffic_history",
    entity="series",
    granularity="hourly",
    description=(
        "Per series (<region>/viewers, <region>/bandwidth) at every hour's end: the hourly means of the "
        "168 hours before it (lag_1h = the hour just ended) and, on viewers rows, the serving limit in force."
    ),
    features=(
        Feature("history_end_ts", "int"),
        *_feats("float", *(f"lag_{k}h" for k in range(1, HISTORY_HOURS + 1))),
        Feature("capacity_limit", "float"),
    ),
    # A forecast made from a row covers the 48 hours after its end: the row serves until they are over.
    ttl_s=48 * 3_600 - 1,
    sources=("raw_traffic",),
    lookback_days=8,  # the 168 hours before the partition's first hour end reach 7 days back
    sql=f"""
WITH h AS (
  SELECT region, event_ts - (event_ts % 3600) AS hour_ts,
    AVG(concurrent_viewers) AS viewers, AVG(bandwidth_mbps) AS mbps, MAX(capacity_viewers) AS capacity
  FROM raw_traffic
  WHERE {IN_WINDOW} AND event_ts >= :window_start AND event_ts < :part_end
  GROUP BY region, event_ts - (event_ts % 3600)
),
s AS (
  SELECT region || '/viewers' AS series, hour_ts, viewers AS value FROM h
  UNION ALL
  SELECT region || '/bandwidth', hour_ts, mbps FROM h WHERE mbps IS NOT NULL
),
e AS (SELECT CAST(:part_start AS BIGINT) + 3600 * n AS feature_ts FROM ({_HOUR_ENDS}) hours),
reported AS (
  SELECT e.feature_ts, h.region, MAX(h.hour_ts) AS hour_ts
  FROM e JOIN h ON h.hour_ts < e.feature_ts AND h.capacity IS NOT NULL
  GROUP BY e.feature_ts, h.region
),
limits AS (
  SELECT r.feature_ts, r.region || '/viewers' AS series, h.capacity
  FROM reported r JOIN h ON h.region = r.region AND h.hour_ts = r.hour_ts
),
lags AS (
  SELECT s.series, e.feature_ts,
    {_HOURLY_LAGS}
  FROM e JOIN s ON s.hour_ts >= e.feature_ts - {HISTORY_HOURS * 3600} AND s.hour_ts < e.feature_ts
  GROUP BY s.series, e.feature_ts
)
SELECT lags.*, lags.feature_ts AS history_end_ts, limits.capacity AS capacity_limit
FROM lags LEFT JOIN limits ON limits.series = lags.series AND limits.feature_ts = lags.feature_ts
""",
)

growth_history = FeatureView(
    name="growth_history",
    entity="platform",
    description=(
        "The platform's last 35 days (lag_1d = the day just ended): signups, signups from campaigns and "
        "daily active users; a day without any signup or session (DAU: any session) is missing, not zero."
    ),
    features=(
        Feature("history_end_ts", "int"),
        *_feats("float", *(f"{m}_lag_{k}d" for m in GROWTH_MEASURES for k in range(1, HISTORY_DAYS + 1))),
    ),
    # A forecast made from a row covers the 14 days after its end: the row serves until they are over.
    ttl_s=14 * DAY_S - 1,
    sources=("raw_users", "raw_watch_sessions"),
    lookback_days=HISTORY_DAYS,
    sql=f"""
WITH ev AS (
  SELECT event_ts - (event_ts % 86400) AS day_ts, 1 AS signup,
    CASE WHEN channel = 'campaign' THEN 1 ELSE 0 END AS campaign, CAST(NULL AS VARCHAR(64)) AS user_key
  FROM raw_users WHERE {IN_WINDOW} AND event_ts >= :window_start AND event_ts < :part_end
  UNION ALL
  SELECT event_ts - (event_ts % 86400), 0, 0, user_key
  FROM raw_watch_sessions WHERE {IN_WINDOW} AND event_ts >= :window_start AND event_ts < :part_end
),
d AS (
  SELECT day_ts, SUM(signup) AS new_users, SUM(campaign) AS campaign,
    CASE WHEN SUM(1 - signup) > 0 THEN COUNT(DISTINCT user_key) END AS dau
  FROM ev GROUP BY day_ts
)
SELECT * FROM (
  SELECT 'all' AS platform, {PART_END} AS feature_ts, {PART_END} AS history_end_ts, COUNT(*) AS days_seen,
    {_DAILY_LAGS}
  FROM d
) agg
WHERE days_seen > 0
""",
)

# --- end of the forecast histories ---------------------------------------------------------------------


# --- item histories of the recommenders: event logs as JSON lists ------------------------------------
# A day's events per user (known at the day's end), or the day's events so far (one row per event
# second, known one second after it). A model reads every row of a range back through
# ``get_historical_features`` (tasks/models/families/event_logs.py), so every event it sees passed the
# store's validation, point-in-time and TTL rules.


def _json_lists(frame: pd.DataFrame, key: str, columns: list[str]) -> pd.Series:
    """Per key, a JSON list of [column values...] rows in frame order (a compact, typed history)."""
    if frame.empty:
        return pd.Series(dtype=object)
    records = list(zip(*(frame[c].tolist() for c in columns), strict=True))
    grouped = pd.Series(records, index=frame[key].to_numpy(), dtype=object).groupby(level=0, sort=True)
    return grouped.agg(lambda rows: json.dumps(list(rows), separators=(",", ":")))


def product_events(frames: Mapping[str, pd.DataFrame], window: BuildWindow) -> pd.DataFrame:
    """Each user's orders and product-card views of the day as JSON lists (a pure pandas transform)."""
    orders = frames["raw_orders"].sort_values(["event_ts", "product_id", "event_id"], kind="stable")
    views = frames["raw_product_views"].sort_values(["event_ts", "product_id", "event_id"], kind="stable")
    orders = orders.assign(
        event_ts=orders["event_ts"].astype("int64"), unit_price=orders["unit_price"].astype(float)
    )
    views = views.assign(event_ts=views["event_ts"].astype("int64"))
    out = pd.DataFrame(
        {
            "orders_1d": _json_lists(orders, "user_key", ["product_id", "event_ts", "unit_price"]),
            "product_views_1d": _json_lists(views, "user_key", ["product_id", "event_ts"]),
        }
    )
    out = out.fillna("[]")  # a user with orders but no views (or the reverse) has an empty list
    return out.rename_axis("user_key").reset_index()


user_product_events = FeatureView(
    name="user_product_events",
    entity="user",
    description="The day's orders [product, time, unit price] and product-card views [product, time].",
    features=_feats("text", "orders_1d", "product_views_1d"),
    ttl_s=DAILY_TTL,
    sources=("raw_orders", "raw_product_views"),  # orders first: a shop without card views still builds
    transform=product_events,
)


def streamer_watch(frames: Mapping[str, pd.DataFrame], window: BuildWindow) -> pd.DataFrame:
    """Seconds each user watched each streamer on the day, as a JSON list (a pure pandas transform).

    A session counts only up to the midnight after its start: the part past midnight belongs to
    the next day, whose end is the first moment anyone may know it.
    """
    watch = frames["raw_watch_sessions"]
    if watch.empty:
        return pd.DataFrame(columns=["user_key", "streamer_seconds_1d"])
    start = watch["event_ts"].astype("int64")
    midnight = start - start % DAY_S + DAY_S
    seconds = np.where(watch["end_ts"].astype("int64") > midnight, midnight - start, watch["duration_s"])
    per_pair = (
        watch.assign(seconds=seconds.astype("float64"))
        .groupby(["user_key", "streamer_id"], sort=True)
        .agg(seconds=("seconds", "sum"), category=("category", "min"))
        .reset_index()
    )
    lists = _json_lists(per_pair, "user_key", ["streamer_id", "seconds", "category"])
    return pd.DataFrame({"user_key": lists.index, "streamer_seconds_1d": lists.to_numpy()})


user_streamer_watch = FeatureView(
    name="user_streamer_watch",
    entity="user",
    description="The day's watch time per streamer [streamer, seconds, stream category] of each user.",
    features=_feats("text", "streamer_seconds_1d"),
    ttl_s=DAILY_TTL,
    sources=("raw_watch_sessions",),
    transform=streamer_watch,
)

product_popularity = FeatureView(
    name="product_popularity",
    entity="product",
    description="A product's buyers over 28 days and its orders and card views over 7 days.",
    features=_feats("int", "buyers_28d", "orders_7d", "views_7d"),
    ttl_s=DAILY_TTL,
    sources=("raw_orders", "raw_product_views"),  # orders first: a shop without card views still builds
    lookback_days=28,
    sql=f"""
SELECT product_id, {PART_END} AS feature_ts,
  COUNT(DISTINCT CASE WHEN is_order = 1 THEN user_key END) AS buyers_28d,
  SUM(CASE WHEN is_order = 1 AND event_ts >= {_since(7)} THEN 1 ELSE 0 END) AS orders_7d,
  SUM(CASE WHEN is_order = 0 AND event_ts >= {_since(7)} THEN 1 ELSE 0 END) AS views_7d
FROM (
  SELECT product_id, user_key, event_ts, 1 AS is_order FROM raw_orders WHERE {IN_WINDOW}
  UNION ALL
  SELECT product_id, user_key, event_ts, 0 FROM raw_product_views WHERE {IN_WINDOW}
) s
GROUP BY product_id
""",
)


def _day_so_far(events: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per user and second with an event: at one second past it, the user's events of the day so far."""
    if events.empty:
        return pd.DataFrame(columns=["user_key", "feature_ts", "log"])
    events = events.sort_values(["user_key", "event_ts", "event_id"], kind="stable")
    keys, stamps, logs = [], [], []
    for user, group in events.groupby("user_key", sort=True):
        records = [list(r) for r in zip(*(group[c].tolist() for c in columns), strict=True)]
        times = group["event_ts"].astype("int64").tolist()
        for i, ts in enumerate(times):
            if i + 1 < len(times) and times[i + 1] == ts:
                continue  # one row per second, once all of that second's events are in
            keys.append(user)
            stamps.append(ts + 1)
            logs.append(json.dumps(records[: i + 1], separators=(",", ":")))
    return pd.DataFrame({"user_key": keys, "feature_ts": np.asarray(stamps, dtype="int64"), "log": logs})


def session_log(frames: Mapping[str, pd.DataFrame], window: BuildWindow) -> pd.DataFrame:
    """The sessions each user started on the day so far, known one second after each start."""
    sessions = frames["raw_watch_sessions"].assign(event_ts=lambda f: f["event_ts"].astype("int64"))
    columns = ["event_id", "stream_id", "streamer_id", "category", "event_ts"]
    return _day_so_far(sessions, columns).rename(columns={"log": "sessions_1d"})


user_session_log = FeatureView(
    name="user_session_log",
    entity="user",
    description="The day's sessions so far [event id, stream, streamer, category, start], one row per start.",
    features=_feats("text", "sessions_1d"),
    ttl_s=DAILY_TTL,  # fresh while anyone started a session within the last day
    sources=("raw_watch_sessions",),
    transform=session_log,
)


def follow_log(frames: Mapping[str, pd.DataFrame], window: BuildWindow) -> pd.DataFrame:
    """The follows each user made on the day so far, known one second after each follow."""
    follows = frames["raw_follows"].assign(event_ts=lambda f: f["event_ts"].astype("int64"))
    return _day_so_far(follows, ["event_id", "streamer_id", "event_ts"]).rename(columns={"log": "follows_1d"})


user_follow_log = FeatureView(
    name="user_follow_log",
    entity="user",
    description="The day's follows so far [event id, streamer, time], one row per follow.",
    features=_feats("text", "follows_1d"),
    ttl_s=0,  # follows are sparse and count for ever: no row goes stale
    sources=("raw_follows",),
    transform=follow_log,
)

# --- end of the recommenders' item histories ------------------------------------------------------------


FEATURE_VIEWS: dict[str, FeatureView] = {
    v.name: v
    for v in (
        user_watch,
        user_category_mix,
        user_ads,
        user_commerce,
        user_gifts,
        user_membership,
        user_paid_content,
        user_profile,
        streamer_activity,
        streamer_followers,
        product_activity,
        ad_activity,
        region_traffic,
        traffic_history,
        growth_history,
        user_product_events,
        user_streamer_watch,
        product_popularity,
        user_session_log,
        user_follow_log,
    )
}


def get_view(name: str, views: Mapping[str, FeatureView] | None = None) -> FeatureView:
    """The declared view of that name (from the catalog unless views are given), else UnknownView."""
    declared = FEATURE_VIEWS if views is None else views
    view = declared.get(name)
    if view is None or view.name != name:
        raise UnknownView(f"unknown feature view {name!r}; declared views: {', '.join(sorted(declared))}")
    return view
