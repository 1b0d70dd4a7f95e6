"""The feature catalog: every feature view the models read, named `<measure>_<window>`."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from tasks.featurestore.definitions import DAY_S, BuildWindow, Feature, FeatureType, FeatureView, UnknownView
from tasks.simulate.config import CATEGORIES

# One constant for the stream-category vocabulary: the simulator's, so features and data agree.
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
    )
}


def get_view(name: str, views: Mapping[str, FeatureView] | None = None) -> FeatureView:
    """The declared view of that name (from the catalog unless views are given), else UnknownView."""
    declared = FEATURE_VIEWS if views is None else views
    view = declared.get(name)
    if view is None or view.name != name:
        raise UnknownView(f"unknown feature view {name!r}; declared views: {', '.join(sorted(declared))}")
    return view
