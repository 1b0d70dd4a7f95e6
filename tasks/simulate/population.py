"""Users, streamers, their schedules and streams, and the ad and product catalogues."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.pseudonym import pseudonymise
from tasks.simulate.config import (
    AGE_SHARE,
    CAMPAIGN_LIFT,
    DAY_S,
    DEVICE_SHARE,
    HISTORY_DAYS,
    HOUR_S,
    INITIAL_USER_SHARE,
    ORGANIC_SHARE,
    REGION_SHARE,
    SEGMENT_NAMES,
    SimConfig,
    campaign_windows,
    day_weekday,
    rng_for,
)
from tasks.vocabulary import (
    AGE_BANDS,
    CATEGORIES,
    DEVICES,
    ORGANIC_CHANNELS,
    PRODUCT_CATEGORIES,
    REGION_UTC_OFFSET,
    REGIONS,
)

NEVER = np.iinfo(np.int64).max  # churn_ts of users who do not churn in the window
CHANNELS: tuple[str, ...] = (*ORGANIC_CHANNELS, "campaign")
WEEKDAY_SIGNUP = np.array([0.9, 0.9, 0.95, 1.0, 1.1, 1.3, 1.25])


@dataclass
class Users:
    """Latent and observed traits of every user, one array entry per user."""

    key: np.ndarray  # pseudonymised user_key (object array of str)
    region: np.ndarray
    device: np.ndarray
    age: np.ndarray
    channel: np.ndarray
    signup_ts: np.ndarray
    churn_ts: np.ndarray  # NEVER when the user does not churn in the window
    activity: np.ndarray  # probability of being active on a day
    spend: np.ndarray  # spend propensity (lognormal)
    churn_hazard: np.ndarray  # daily churn probability
    shopping: np.ndarray  # appetite for live commerce
    interests: np.ndarray  # (n, categories) Dirichlet weights
    segment: np.ndarray
    top_category: np.ndarray

    def __len__(self) -> int:
        return len(self.key)


def _signup_days(config: SimConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Signup day per user: a backfilled base before the start, then seasonal growth."""
    n_initial = round(n * INITIAL_USER_SHARE) if config.days > 0 else n
    initial = rng.integers(-HISTORY_DAYS, 0, n_initial)
    weights = np.array([WEEKDAY_SIGNUP[day_weekday(config, d)] for d in range(config.days)], dtype=float)
    for first, last in campaign_windows(config):
        weights[first : last + 1] *= CAMPAIGN_LIFT
    new = rng.choice(config.days, size=n - n_initial, p=weights / weights.sum())
    days = np.concatenate([initial, new])
    rng.shuffle(days)
    return days


def _segments(
    activity: np.ndarray, spend: np.ndarray, hazard: np.ndarray, shopping: np.ndarray
) -> np.ndarray:
    """Segment index from latent traits; the first matching rule wins."""
    return np.select(
        [spend >= 3.0, shopping >= 0.45, hazard >= 0.015, activity >= 0.6],
        [0, 1, 2, 3],
        default=4,
    ).astype(np.int8)


def make_users(config: SimConfig) -> Users:
    """Draw every user's traits, signup time and churn time."""
    rng = rng_for(config, 1)
    n = config.users
    region = rng.choice(len(REGIONS), n, p=REGION_SHARE).astype(np.int8)
    device = rng.choice(len(DEVICES), n, p=DEVICE_SHARE).astype(np.int8)
    age = rng.choice(len(AGE_BANDS), n, p=AGE_SHARE).astype(np.int8)
    day = _signup_days(config, n, rng)
    signup_ts = config.start_epoch + day * DAY_S + rng.integers(0, DAY_S, n)

    in_campaign = np.zeros(n, dtype=bool)
    for first, last in campaign_windows(config):
        in_campaign |= (day >= first) & (day <= last)
    # Inside a window the extra (lift - 1) share of signups came through the campaign.
    from_campaign = in_campaign & (rng.random(n) < (CAMPAIGN_LIFT - 1) / CAMPAIGN_LIFT)
    channel = rng.choice(len(ORGANIC_CHANNELS), n, p=ORGANIC_SHARE).astype(np.int8)
    channel[from_campaign] = CHANNELS.index("campaign")

    activity = rng.beta(1.5, 3.0, n)
    spend = rng.lognormal(-0.5, 1.0, n)
    # Less active users are likelier to leave.
    hazard = np.clip(rng.lognormal(np.log(0.004), 0.8, n) * (1.5 - activity), 5e-4, 0.1)
    shopping = rng.beta(1.2, 4.0, n)
    interests = rng.dirichlet(np.full(len(CATEGORIES), 0.6), n).astype(np.float32)

    # Continuous-time churn with the daily hazard, starting once the user is on board.
    base = np.maximum(signup_ts, config.start_epoch)
    wait = rng.exponential(1.0, n) / -np.log1p(-hazard) * DAY_S
    churn_ts = base + wait.astype(np.int64)
    churn_ts = np.where(churn_ts < config.end_epoch, churn_ts, NEVER)

    ids = pd.Series([f"u{i + 1:07d}" for i in range(n)], dtype="str")
    key = pseudonymise(ids, config.pseudonym_key).to_numpy(dtype=object)
    return Users(
        key=key,
        region=region,
        device=device,
        age=age,
        channel=channel,
        signup_ts=signup_ts.astype(np.int64),
        churn_ts=churn_ts.astype(np.int64),
        activity=activity,
        spend=spend,
        churn_hazard=hazard,
        shopping=shopping,
        interests=interests,
        segment=_segments(activity, spend, hazard, shopping),
        top_category=interests.argmax(axis=1).astype(np.int8),
    )


def users_frame(users: Users, idx: np.ndarray) -> pd.DataFrame:
    """raw_users rows (signup events) for the given user indices."""
    return pd.DataFrame(
        {
            "event_id": "signup:" + pd.Series(users.key[idx], dtype="str"),
            "event_ts": users.signup_ts[idx],
            "user_key": users.key[idx],
            "region": np.asarray(REGIONS, dtype=object)[users.region[idx]],
            "device": np.asarray(DEVICES, dtype=object)[users.device[idx]],
            "age_band": np.asarray(AGE_BANDS, dtype=object)[users.age[idx]],
            "channel": np.asarray(CHANNELS, dtype=object)[users.channel[idx]],
        }
    )


def identity_frame(users: Users, lo: int, hi: int) -> pd.DataFrame:
    """identity_users rows: pseudonym to raw id and email."""
    raw = [f"u{i + 1:07d}" for i in range(lo, hi)]
    return pd.DataFrame(
        {
            "user_key": users.key[lo:hi],
            "user_id": raw,
            "email": [f"{r}@example.com" for r in raw],
        }
    )


def oracle_users_frame(users: Users, lo: int, hi: int) -> pd.DataFrame:
    """oracle_users rows: latent traits, churn time and segment."""
    churn = users.churn_ts[lo:hi]
    interests = users.interests[lo:hi].astype(np.float64).round(4)
    return pd.DataFrame(
        {
            "user_key": users.key[lo:hi],
            "activity": users.activity[lo:hi],
            "spend_propensity": users.spend[lo:hi],
            "churn_hazard": users.churn_hazard[lo:hi],
            "churned_ts": pd.Series(churn, dtype="Int64").mask(churn == NEVER),
            "segment": users.segment[lo:hi].astype(np.int64),
            "segment_name": np.asarray(SEGMENT_NAMES, dtype=object)[users.segment[lo:hi]],
            "top_category": np.asarray(CATEGORIES, dtype=object)[users.top_category[lo:hi]],
            "interests": [
                json.dumps(dict(zip(CATEGORIES, map(float, row), strict=True))) for row in interests
            ],
        }
    )


@dataclass
class Streamers:
    """Streamer traits and weekly schedules."""

    ids: np.ndarray
    category: np.ndarray
    region: np.ndarray
    quality: np.ndarray
    followers: np.ndarray  # follower count, grows with raw_follows
    start_hour: np.ndarray  # UTC hour the stream goes live
    live_hours: np.ndarray
    days_mask: np.ndarray  # bit k set = live on weekday k (Monday=0)
    is_commerce: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


# Local hour a streamer goes live: mostly late afternoon and evening.
_LIVE_START_LOCAL = np.array(
    [0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.3, 0.6, 1, 1.2, 1.5, 1.6, 2, 2, 2, 2.2, 3, 4.5, 6, 6, 5, 3, 1.5, 0.8]
)


def make_streamers(config: SimConfig) -> Streamers:
    """Draw streamer category, region, latent quality and schedule."""
    rng = rng_for(config, 2)
    n = config.streamers
    category = rng.integers(0, len(CATEGORIES), n).astype(np.int8)
    region = rng.choice(len(REGIONS), n, p=REGION_SHARE).astype(np.int8)
    quality = rng.lognormal(0.0, 0.5, n)
    followers = rng.lognormal(np.log(100.0), 1.0, n) * quality
    local = rng.choice(24, n, p=_LIVE_START_LOCAL / _LIVE_START_LOCAL.sum())
    offset = np.array([REGION_UTC_OFFSET[r] for r in REGIONS])[region]
    start_hour = (local - offset) % 24
    live_hours = rng.integers(2, 7, n)
    p_day = rng.uniform(0.4, 0.95, n)
    bits = rng.random((n, 7)) < p_day[:, None]
    bits[np.arange(n), rng.integers(0, 7, n)] = True  # everyone streams at least weekly
    days_mask = (bits * (1 << np.arange(7))).sum(axis=1)
    p_commerce = np.where(np.isin(category, [CATEGORIES.index(c) for c in ("beauty", "cooking")]), 0.55, 0.2)
    return Streamers(
        ids=np.array([f"s{i + 1:05d}" for i in range(n)], dtype=object),
        category=category,
        region=region,
        quality=quality,
        followers=followers,
        start_hour=start_hour.astype(np.int64),
        live_hours=live_hours.astype(np.int64),
        days_mask=days_mask.astype(np.int64),
        is_commerce=(rng.random(n) < p_commerce).astype(np.int64),
    )


def streamers_frame(config: SimConfig, st: Streamers) -> pd.DataFrame:
    """raw_streamers rows: every streamer is onboarded at the start."""
    return pd.DataFrame(
        {
            "event_id": "onboard:" + pd.Series(st.ids, dtype="str"),
            "event_ts": np.full(len(st), config.start_epoch, dtype=np.int64),
            "streamer_id": st.ids,
            "category": np.asarray(CATEGORIES, dtype=object)[st.category],
            "region": np.asarray(REGIONS, dtype=object)[st.region],
        }
    )


def oracle_streamers_frame(st: Streamers) -> pd.DataFrame:
    """oracle_streamers rows: latent quality and weekly schedule."""
    return pd.DataFrame(
        {
            "streamer_id": st.ids,
            "quality": st.quality,
            "start_hour": st.start_hour,
            "live_hours": st.live_hours,
            "days_mask": st.days_mask,
        }
    )


@dataclass
class Streams:
    """Every live stream of the window, ordered by start time."""

    ids: np.ndarray
    streamer: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def make_streams(config: SimConfig, st: Streamers) -> Streams:
    """Expand the weekly schedules into concrete streams, a few scheduled days skipped."""
    rng = rng_for(config, 3)
    day = np.repeat(np.arange(config.days), len(st))
    who = np.tile(np.arange(len(st)), config.days)
    weekday = (config.start.weekday() + day) % 7
    scheduled = (st.days_mask[who] >> weekday) & 1 == 1
    keep = scheduled & (rng.random(len(day)) >= 0.05)
    day, who = day[keep], who[keep]
    start = config.start_epoch + day * DAY_S + st.start_hour[who] * HOUR_S + rng.integers(0, 600, len(day))
    end = start + st.live_hours[who] * HOUR_S - rng.integers(0, 900, len(day))
    # Nothing is simulated past the horizon, so streams are cut there.
    end = np.minimum(end, config.end_epoch)
    ok = end - start >= 600
    start, end, day, who = start[ok], end[ok], day[ok], who[ok]
    order = np.lexsort((who, start))
    start, end, day, who = start[order], end[order], day[order], who[order]
    dates = pd.to_datetime(config.start_epoch + day * DAY_S, unit="s").strftime("%Y%m%d")
    ids = pd.Series(st.ids[who], dtype="str") + "-" + pd.Series(dates, dtype="str")
    return Streams(
        ids=ids.to_numpy(dtype=object),
        streamer=who.astype(np.int64),
        start=start.astype(np.int64),
        end=end.astype(np.int64),
    )


def streams_frame(st: Streamers, streams: Streams) -> pd.DataFrame:
    """raw_streams rows: one per live stream."""
    s = streams.streamer
    return pd.DataFrame(
        {
            "event_id": "stream:" + pd.Series(streams.ids, dtype="str"),
            "event_ts": streams.start,
            "stream_id": streams.ids,
            "streamer_id": st.ids[s],
            "category": np.asarray(CATEGORIES, dtype=object)[st.category[s]],
            "region": np.asarray(REGIONS, dtype=object)[st.region[s]],
            "is_commerce": st.is_commerce[s],
            "end_ts": streams.end,
        }
    )


@dataclass
class Ads:
    """The ad catalogue with each ad's latent quality and delivery weight."""

    ids: np.ndarray
    advertiser: np.ndarray
    category: np.ndarray
    is_cpc: np.ndarray
    bid: np.ndarray
    quality: np.ndarray
    weight: np.ndarray  # share of the ad server's delivery (budget)
    launch_day: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def make_ads(config: SimConfig) -> Ads:
    """Draw the ad catalogue; most ads launch on day one, the rest during the window."""
    rng = rng_for(config, 4)
    n = config.n_ads
    is_cpc = rng.random(n) < 0.4
    bid = np.where(is_cpc, rng.lognormal(np.log(0.6), 0.4, n), rng.lognormal(np.log(4.0), 0.4, n))
    launch = np.where(rng.random(n) < 0.7, 0, rng.integers(0, max(config.days, 1), n))
    return Ads(
        ids=np.array([f"ad{i + 1:04d}" for i in range(n)], dtype=object),
        advertiser=np.array([f"adv{k + 1:03d}" for k in rng.integers(0, max(n // 4, 1), n)], dtype=object),
        category=rng.integers(0, len(CATEGORIES), n).astype(np.int8),
        is_cpc=is_cpc,
        bid=bid.round(2),
        quality=rng.normal(0.0, 0.5, n),
        weight=rng.lognormal(0.0, 0.6, n),
        launch_day=launch.astype(np.int64),
    )


def ads_frame(config: SimConfig, ads: Ads, idx: np.ndarray) -> pd.DataFrame:
    """raw_ads rows for the given ads (entering the catalogue at midnight of launch)."""
    return pd.DataFrame(
        {
            "event_id": "ad:" + pd.Series(ads.ids[idx], dtype="str"),
            "event_ts": config.start_epoch + ads.launch_day[idx] * DAY_S,
            "ad_id": ads.ids[idx],
            "advertiser_id": ads.advertiser[idx],
            "ad_category": np.asarray(CATEGORIES, dtype=object)[ads.category[idx]],
            "bid_type": np.where(ads.is_cpc[idx], "cpc", "cpm").astype(object),
            "bid": ads.bid[idx],
        }
    )


@dataclass
class Products:
    """Live-commerce products, grouped by streamer (offset/count per streamer)."""

    ids: np.ndarray
    streamer: np.ndarray
    category: np.ndarray
    price: np.ndarray
    commission_rate: np.ndarray
    offset: np.ndarray  # per streamer: index of its first product
    count: np.ndarray  # per streamer: number of products (0 if not commerce)

    def __len__(self) -> int:
        return len(self.ids)


def make_products(config: SimConfig, st: Streamers) -> Products:
    """Give each commerce streamer 3-10 products with lognormal prices."""
    rng = rng_for(config, 5)
    count = np.where(st.is_commerce == 1, rng.integers(3, 11, len(st)), 0)
    offset = np.concatenate([[0], np.cumsum(count)[:-1]])
    streamer = np.repeat(np.arange(len(st)), count)
    n = len(streamer)
    category = rng.integers(0, len(PRODUCT_CATEGORIES), n)
    # Beauty and cooking streamers mostly sell their own kind of product.
    own = {CATEGORIES.index("beauty"): "beauty", CATEGORIES.index("cooking"): "food"}
    for cat, product_cat in own.items():
        mine = (st.category[streamer] == cat) & (rng.random(n) < 0.8)
        category[mine] = PRODUCT_CATEGORIES.index(product_cat)
    return Products(
        ids=np.array([f"p{i + 1:06d}" for i in range(n)], dtype=object),
        streamer=streamer.astype(np.int64),
        category=category.astype(np.int8),
        price=np.maximum(rng.lognormal(np.log(25.0), 0.8, n), 1.0).round(2),
        commission_rate=rng.uniform(0.05, 0.2, n).round(3),
        offset=offset.astype(np.int64),
        count=count.astype(np.int64),
    )


def products_frame(config: SimConfig, st: Streamers, pr: Products) -> pd.DataFrame:
    """raw_products rows: the catalogue is listed at the start."""
    return pd.DataFrame(
        {
            "event_id": "product:" + pd.Series(pr.ids, dtype="str"),
            "event_ts": np.full(len(pr), config.start_epoch, dtype=np.int64),
            "product_id": pr.ids,
            "streamer_id": st.ids[pr.streamer],
            "category": np.asarray(PRODUCT_CATEGORIES, dtype=object)[pr.category],
            "price": pr.price,
            "commission_rate": pr.commission_rate,
        }
    )
