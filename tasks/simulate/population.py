"""Users, streamers, their schedules and streams, and the ad and product catalogues."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.pseudonym import pseudonymise
from tasks.simulate.config import (
    AD_LAUNCH_DAYS,
    AGE_SHARE,
    CAMPAIGN_DAYS,
    CAMPAIGN_EVERY,
    CAMPAIGN_LIFT,
    DAY_S,
    DEVICE_SHARE,
    GROWTH_DAYS,
    HISTORY_DAYS,
    HOUR_S,
    INITIAL_USER_SHARE,
    ORGANIC_SHARE,
    REGION_SHARE,
    SEGMENT_NAMES,
    SimConfig,
    day_weekday,
    in_campaign,
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
    churn_ts: np.ndarray  # when the user leaves (may lie after the simulated period)
    activity: np.ndarray  # probability of being active on a day
    spend: np.ndarray  # spend propensity (lognormal)
    churn_hazard: np.ndarray  # daily churn probability
    shopping: np.ndarray  # appetite for live commerce
    interests: np.ndarray  # (n, categories) Dirichlet weights
    segment: np.ndarray
    top_category: np.ndarray
    lot: np.ndarray  # uniform draw that decides who a planted shift reaches

    def __len__(self) -> int:
        return len(self.key)


def _daily_signups(config: SimConfig, day: int, rng: np.random.Generator) -> int:
    """How many users sign up on a day index: weekday pattern, lifted inside campaigns."""
    expected_lift = 1.0 + (CAMPAIGN_LIFT - 1.0) * CAMPAIGN_DAYS / CAMPAIGN_EVERY
    rate = config.users * (1 - INITIAL_USER_SHARE) / (GROWTH_DAYS * WEEKDAY_SIGNUP.mean() * expected_lift)
    rate *= WEEKDAY_SIGNUP[day_weekday(config, day)] * (CAMPAIGN_LIFT if in_campaign(config, day) else 1.0)
    return int(rng.poisson(rate))


def _segments(
    activity: np.ndarray, spend: np.ndarray, hazard: np.ndarray, shopping: np.ndarray
) -> np.ndarray:
    """Segment index from latent traits; the first matching rule wins."""
    return np.select(
        [spend >= 3.0, shopping >= 0.45, hazard >= 0.015, activity >= 0.6],
        [0, 1, 2, 3],
        default=4,
    ).astype(np.int8)


def _draw_users(config: SimConfig, day: int | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Traits of the users who sign up on a day index (None: the base that exists at the start)."""
    if day is None:
        n = round(config.users * INITIAL_USER_SHARE)
        signup_day = rng.integers(-HISTORY_DAYS, 0, n)
        campaign = np.zeros(n, dtype=bool)
    else:
        n = _daily_signups(config, day, rng)
        signup_day = np.full(n, day)
        # Inside a window the extra (lift - 1) share of signups came through the campaign.
        lifted = in_campaign(config, day)
        campaign = lifted & (rng.random(n) < (CAMPAIGN_LIFT - 1) / CAMPAIGN_LIFT)
    channel = rng.choice(len(ORGANIC_CHANNELS), n, p=ORGANIC_SHARE).astype(np.int8)
    channel[campaign] = CHANNELS.index("campaign")
    activity = rng.beta(1.5, 3.0, n)
    return {
        "region": rng.choice(len(REGIONS), n, p=REGION_SHARE).astype(np.int8),
        "device": rng.choice(len(DEVICES), n, p=DEVICE_SHARE).astype(np.int8),
        "age": rng.choice(len(AGE_BANDS), n, p=AGE_SHARE).astype(np.int8),
        "signup_ts": config.start_epoch + signup_day * DAY_S + rng.integers(0, DAY_S, n),
        "channel": channel,
        "activity": activity,
        "spend": rng.lognormal(-0.5, 1.0, n),
        # Less active users are likelier to leave.
        "churn_hazard": np.clip(rng.lognormal(np.log(0.004), 0.8, n) * (1.5 - activity), 5e-4, 0.1),
        "shopping": rng.beta(1.2, 4.0, n),
        "interests": rng.dirichlet(np.full(len(CATEGORIES), 0.6), n).astype(np.float32),
        "wait": rng.exponential(1.0, n),
        "lot": rng.random(n),  # decides who a planted shift reaches
    }


def make_users(config: SimConfig, days: int | None = None) -> Users:
    """The base users and everyone who signs up in the first `days` days (default: the period)."""
    horizon = config.days if days is None else days
    batches = [_draw_users(config, None, rng_for(config, 1))]
    batches += [_draw_users(config, d, rng_for(config, 1, d)) for d in range(horizon)]
    drawn = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    n = len(drawn["activity"])
    signup_ts = drawn["signup_ts"].astype(np.int64)
    hazard = drawn["churn_hazard"]
    # Continuous-time churn with the daily hazard, starting once the user is on board.
    base = np.maximum(signup_ts, config.start_epoch)
    churn_ts = base + (drawn["wait"] / -np.log1p(-hazard) * DAY_S).astype(np.int64)
    ids = pd.Series([f"u{i + 1:07d}" for i in range(n)], dtype="str")
    key = pseudonymise(ids, config.pseudonym_key).to_numpy(dtype=object)
    activity, spend, shopping, interests = (drawn[c] for c in ("activity", "spend", "shopping", "interests"))
    return Users(
        key=key,
        region=drawn["region"],
        device=drawn["device"],
        age=drawn["age"],
        channel=drawn["channel"],
        signup_ts=signup_ts,
        churn_ts=churn_ts.astype(np.int64),
        activity=activity,
        spend=spend,
        churn_hazard=hazard,
        shopping=shopping,
        interests=interests,
        segment=_segments(activity, spend, hazard, shopping),
        top_category=interests.argmax(axis=1).astype(np.int8),
        lot=drawn["lot"],
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


def identity_frame(users: Users, idx: np.ndarray) -> pd.DataFrame:
    """identity_users rows: pseudonym to raw id and email."""
    raw = [f"u{i + 1:07d}" for i in idx]
    return pd.DataFrame(
        {
            "user_key": users.key[idx],
            "user_id": raw,
            "email": [f"{r}@example.com" for r in raw],
        }
    )


def oracle_users_frame(users: Users, idx: np.ndarray) -> pd.DataFrame:
    """oracle_users rows: latent traits (as drawn at signup), churn time and segment."""
    interests = users.interests[idx].astype(np.float64).round(4)
    return pd.DataFrame(
        {
            "user_key": users.key[idx],
            "activity": users.activity[idx],
            "spend_propensity": users.spend[idx],
            "churn_hazard": users.churn_hazard[idx],
            "churned_ts": pd.Series(users.churn_ts[idx], dtype="Int64"),
            "segment": users.segment[idx].astype(np.int64),
            "segment_name": np.asarray(SEGMENT_NAMES, dtype=object)[users.segment[idx]],
            "top_category": np.asarray(CATEGORIES, dtype=object)[users.top_category[idx]],
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


def make_streams(config: SimConfig, st: Streamers, days: int | None = None) -> Streams:
    """Expand the weekly schedules into concrete streams of the first `days` days (default: the
    period), a few scheduled days skipped; each day's streams come from that day's draws."""
    horizon = config.days if days is None else days
    parts = [_day_streams(config, st, d) for d in range(horizon)]
    start, end, day, who = (np.concatenate([p[i] for p in parts]) for i in range(4)) if parts else ([],) * 4
    start, end, day, who = (np.asarray(a, dtype=np.int64) for a in (start, end, day, who))
    order = np.lexsort((who, start))
    start, end, day, who = start[order], end[order], day[order], who[order]
    dates = pd.to_datetime(config.start_epoch + day * DAY_S, unit="s").strftime("%Y%m%d")
    ids = pd.Series(st.ids[who], dtype="str") + "-" + pd.Series(dates, dtype="str")
    return Streams(ids=ids.to_numpy(dtype=object), streamer=who, start=start, end=end)


def _day_streams(
    config: SimConfig, st: Streamers, day: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, day, streamer) of the streams that go live on one day index."""
    rng = rng_for(config, 3, day)
    weekday = day_weekday(config, day)
    who = np.flatnonzero((st.days_mask >> weekday) & 1 == 1)
    who = who[rng.random(len(who)) >= 0.05]
    start = config.start_epoch + day * DAY_S + st.start_hour[who] * HOUR_S + rng.integers(0, 600, len(who))
    end = start + st.live_hours[who] * HOUR_S - rng.integers(0, 900, len(who))
    ok = end - start >= 600
    return start[ok], end[ok], np.full(int(ok.sum()), day), who[ok]


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
    """Draw the ad catalogue; most ads launch on day one, the rest over the first weeks."""
    rng = rng_for(config, 4)
    n = config.n_ads
    is_cpc = rng.random(n) < 0.4
    bid = np.where(is_cpc, rng.lognormal(np.log(0.6), 0.4, n), rng.lognormal(np.log(4.0), 0.4, n))
    launch = np.where(rng.random(n) < 0.7, 0, rng.integers(0, AD_LAUNCH_DAYS, n))
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
