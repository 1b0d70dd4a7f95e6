"""Money made during sessions: ads, live commerce, gifts, memberships and paid content."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.simulate.activity import Sessions
from tasks.simulate.config import (
    DAY_S,
    HOUR_S,
    MEMBERSHIP_FEE,
    MEMBERSHIP_PERIOD_DAYS,
    SimConfig,
)
from tasks.simulate.population import Ads, Products, Streamers, Users

AD_BREAK_S = 480.0  # one ad slot per eight minutes watched, on average
# Logit shift of the click probability per device (ios, android, web, tv).
DEVICE_CLICK_EFFECT = np.array([0.15, 0.0, -0.2, -0.5])


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-z))


def true_p_click(
    match: np.ndarray,
    ad_quality: np.ndarray,
    position: np.ndarray,
    hour: np.ndarray,
    device: np.ndarray,
    activity: np.ndarray,
) -> np.ndarray:
    """True click probability: a known logistic model of user, ad and context."""
    z = (
        -3.6
        + 3.0 * match  # the user's interest in the ad's category
        + 0.6 * ad_quality
        - 0.3 * (position - 1)  # lower slots are seen less
        + 0.35 * np.cos(2 * np.pi * (hour - 20) / 24)  # UTC hour of the impression
        + DEVICE_CLICK_EFFECT[device]
        + 0.8 * (activity - 0.33)
    )
    return sigmoid(z)


def true_p_convert(match: np.ndarray, ad_quality: np.ndarray, spend: np.ndarray) -> np.ndarray:
    """True probability of a conversion given a click."""
    return sigmoid(-1.8 + 2.0 * match + 0.4 * ad_quality + 0.5 * np.log(spend))


@dataclass
class Impressions:
    """Ad impressions with outcomes and their true probabilities."""

    session: np.ndarray  # index into the day's sessions
    ad: np.ndarray
    ts: np.ndarray
    position: np.ndarray
    hour: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    p_click: np.ndarray
    p_convert: np.ndarray

    def __len__(self) -> int:
        return len(self.ad)


def ad_impressions(
    config: SimConfig,
    day: int,
    sessions: Sessions,
    users: Users,
    ads: Ads,
    rng: np.random.Generator,
) -> Impressions:
    """Impressions during sessions (count ∝ duration) and their click/convert outcomes."""
    dur = sessions.end - sessions.start
    n_imp = rng.poisson(dur / AD_BREAK_S)
    sess = np.repeat(np.arange(len(sessions)), n_imp)
    n = len(sess)
    ts = sessions.start[sess] + (rng.random(n) * dur[sess]).astype(np.int64)
    # The ad server picks among launched ads by budget weight.
    weight = np.where(ads.launch_day <= day, ads.weight, 0.0)
    cum = np.cumsum(weight)
    ad = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(ads) - 1)
    position = rng.integers(1, 6, n)
    hour = (ts % DAY_S) // HOUR_S
    u = sessions.user[sess]
    match = users.interests[u, ads.category[ad]].astype(np.float64)
    p_click = true_p_click(match, ads.quality[ad], position, hour, users.device[u], users.activity[u])
    p_convert = true_p_convert(match, ads.quality[ad], users.spend[u])
    clicked = rng.random(n) < p_click
    converted = clicked & (rng.random(n) < p_convert)
    order = np.argsort(ts, kind="stable")
    return Impressions(
        session=sess[order],
        ad=ad[order],
        ts=ts[order],
        position=position[order],
        hour=hour[order],
        clicked=clicked[order].astype(np.int64),
        converted=converted[order].astype(np.int64),
        p_click=p_click[order],
        p_convert=p_convert[order],
    )


def ad_revenue(imp: Impressions, ads: Ads) -> tuple[np.ndarray, np.ndarray]:
    """Earning impressions and their amounts: CPM pays per impression, CPC per click."""
    cpc = ads.is_cpc[imp.ad]
    earns = np.flatnonzero(~cpc | (imp.clicked == 1))
    amount = np.where(cpc[earns], ads.bid[imp.ad[earns]], ads.bid[imp.ad[earns]] / 1000.0)
    return earns, amount


@dataclass
class Commerce:
    """Product views and the orders that followed some of them."""

    view_session: np.ndarray
    view_product: np.ndarray
    view_ts: np.ndarray
    order_view: np.ndarray  # index into the views
    order_ts: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray
    commission: np.ndarray


def commerce(sessions: Sessions, users: Users, products: Products, rng: np.random.Generator) -> Commerce:
    """Product views in commerce streams and the orders they lead to."""
    n_products = products.count[sessions.streamer]
    dur = sessions.end - sessions.start
    lam = np.where(n_products > 0, dur / 600.0 * (0.3 + 2.0 * users.shopping[sessions.user]), 0.0)
    view_session = np.repeat(np.arange(len(sessions)), rng.poisson(lam))
    n = len(view_session)
    s = sessions.streamer[view_session]
    product = products.offset[s] + (rng.random(n) * products.count[s]).astype(np.int64)
    view_ts = sessions.start[view_session] + (rng.random(n) * dur[view_session]).astype(np.int64)
    u = sessions.user[view_session]
    price = products.price[product]
    p_order = 1.0 / (
        1.0
        + np.exp(
            -(-3.5 + 0.6 * np.log(users.spend[u]) + 3.0 * users.shopping[u] - 0.4 * np.log(price / 25.0))
        )
    )
    order_view = np.flatnonzero(rng.random(n) < p_order)
    left = sessions.end[view_session[order_view]] - view_ts[order_view]
    order_ts = view_ts[order_view] + (rng.random(len(order_view)) * left).astype(np.int64)
    quantity = rng.geometric(0.7, len(order_view)).astype(np.int64)
    amount = (quantity * price[order_view]).round(2)
    commission = (amount * products.commission_rate[product[order_view]]).round(2)
    return Commerce(
        view_session=view_session,
        view_product=product,
        view_ts=view_ts,
        order_view=order_view,
        order_ts=order_ts,
        quantity=quantity,
        amount=amount,
        commission=commission,
    )


MAX_GIFT = 5_000.0  # the largest single gift a user can send


def gifts(
    sessions: Sessions, users: Users, st: Streamers, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gifts (session index, ts, amount): rate from spend and quality, heavy-tailed size."""
    dur = sessions.end - sessions.start
    lam = 0.15 * users.spend[sessions.user] * st.quality[sessions.streamer] * dur / 1800.0
    sess = np.repeat(np.arange(len(sessions)), rng.poisson(lam))
    n = len(sess)
    ts = sessions.start[sess] + (rng.random(n) * dur[sess]).astype(np.int64)
    # Most gifts are small lognormal tips; a tenth come from a Pareto tail.
    small = rng.lognormal(np.log(2.0), 0.7, n)
    big = (rng.pareto(1.2, n) + 1.0) * 10.0
    amount = np.where(rng.random(n) < 0.1, big, small)
    amount = np.maximum(amount * np.sqrt(users.spend[sessions.user[sess]]), 0.1)
    # Platforms cap a single gift (the priciest virtual gift); an uncapped Pareto(1.2) tail has no
    # variance and once drew a 4,010,258 gift, 99.5 % of a 5,000-user platform's holdout revenue.
    return sess, ts, np.minimum(amount, MAX_GIFT).round(2)


@dataclass
class MembershipState:
    """Each user's current membership (streamer or -1) and next renewal time."""

    streamer: np.ndarray
    renew_ts: np.ndarray

    @classmethod
    def initial(cls, config: SimConfig, users: Users, st: Streamers) -> MembershipState:
        """Some users who joined before the start are already members of a streamer."""
        rng = np.random.default_rng([config.seed, 6])
        n_all = len(users)
        base = np.flatnonzero(users.signup_ts < config.start_epoch)  # the base comes first
        n = len(base)
        spend, top = users.spend[base], users.top_category[base]
        member = rng.random(n) < 0.02 * np.minimum(spend, 4.0)
        # Members back a streamer of their favourite category when there is one.
        by_cat = [np.flatnonzero(st.category == c) for c in range(users.interests.shape[1])]
        pick = rng.integers(0, len(st), n)
        for c, cands in enumerate(by_cat):
            mine = top == c
            if len(cands):
                pick[mine] = cands[rng.integers(0, len(cands), int(mine.sum()))]
        period = MEMBERSHIP_PERIOD_DAYS * DAY_S
        streamer = np.full(n_all, -1, dtype=np.int64)
        renew_ts = np.full(n_all, config.start_epoch, dtype=np.int64)
        streamer[base] = np.where(member, pick, -1)
        renew_ts[base] = config.start_epoch + rng.integers(0, period, n)
        return cls(streamer=streamer, renew_ts=renew_ts)


@dataclass
class MembershipEvents:
    """Membership actions of one chunk and day."""

    user: np.ndarray
    streamer: np.ndarray
    ts: np.ndarray
    action: np.ndarray  # 0 subscribe, 1 renew, 2 cancel
    fee: np.ndarray


MEMBERSHIP_ACTIONS: tuple[str, ...] = ("subscribe", "renew", "cancel")


def memberships(
    config: SimConfig,
    day: int,
    lo: int,
    hi: int,
    sessions: Sessions,
    users: Users,
    st: Streamers,
    state: MembershipState,
    rng: np.random.Generator,
) -> MembershipEvents:
    """Renewals and cancellations due today, then new subscriptions from today's sessions."""
    day_start = config.start_epoch + day * DAY_S
    period = MEMBERSHIP_PERIOD_DAYS * DAY_S
    idx = np.arange(lo, hi)
    idx = idx[state.streamer[idx] >= 0]
    due = idx[(state.renew_ts[idx] >= day_start) & (state.renew_ts[idx] < day_start + DAY_S)]
    # A churned user's membership lapses silently: churned users leave no events.
    lapsed = due[state.renew_ts[due] >= users.churn_ts[due]]
    due = due[state.renew_ts[due] < users.churn_ts[due]]
    cancel_due = rng.random(len(due)) < 0.12
    others = np.setdiff1d(idx, np.concatenate([due, lapsed]), assume_unique=True)
    quit_ts = day_start + rng.integers(0, DAY_S, len(others))
    quitting = (rng.random(len(others)) < 0.004) & (quit_ts < users.churn_ts[others])
    quits, quit_ts = others[quitting], quit_ts[quitting]

    renew_users, cancel_users = due[~cancel_due], due[cancel_due]
    events_user = [renew_users, cancel_users, quits]
    events_streamer = [state.streamer[renew_users], state.streamer[cancel_users], state.streamer[quits]]
    events_ts = [state.renew_ts[renew_users], state.renew_ts[cancel_users], quit_ts]
    events_action = [np.full(len(renew_users), 1), np.full(len(cancel_users), 2), np.full(len(quits), 2)]
    state.renew_ts[renew_users] += period
    state.streamer[np.concatenate([cancel_users, quits, lapsed])] = -1

    # New subscriptions: at most one per non-member per day, from a watched streamer.
    free = state.streamer[sessions.user] < 0
    p = 0.003 * np.minimum(users.spend[sessions.user], 5.0) * st.quality[sessions.streamer]
    hit = np.flatnonzero(free & (rng.random(len(sessions)) < p))
    _, first = np.unique(sessions.user[hit], return_index=True)
    hit = hit[first]
    dur = sessions.end[hit] - sessions.start[hit]
    sub_ts = sessions.start[hit] + (rng.random(len(hit)) * dur).astype(np.int64)
    sub_users = sessions.user[hit]
    state.streamer[sub_users] = sessions.streamer[hit]
    state.renew_ts[sub_users] = sub_ts + period
    events_user.append(sub_users)
    events_streamer.append(sessions.streamer[hit])
    events_ts.append(sub_ts)
    events_action.append(np.zeros(len(hit), dtype=np.int64))

    action = np.concatenate(events_action).astype(np.int64)
    ts = np.concatenate(events_ts).astype(np.int64)
    order = np.argsort(ts, kind="stable")
    return MembershipEvents(
        user=np.concatenate(events_user).astype(np.int64)[order],
        streamer=np.concatenate(events_streamer).astype(np.int64)[order],
        ts=ts[order],
        action=action[order],
        fee=np.where(action == 2, 0.0, MEMBERSHIP_FEE)[order],
    )


PAID_CONTENT_PRICES = np.array([1.99, 2.99, 4.99, 9.99])


def paid_content(
    sessions: Sessions, users: Users, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paid content bought during a user's first session of the day (session, ts, item, price)."""
    _, first = np.unique(sessions.user, return_index=True)
    p = 0.015 * np.minimum(users.spend[sessions.user[first]], 5.0)
    sess = first[rng.random(len(first)) < p]
    sess = np.sort(sess)
    dur = sessions.end[sess] - sessions.start[sess]
    ts = sessions.start[sess] + (rng.random(len(sess)) * dur).astype(np.int64)
    item = rng.integers(0, 20, len(sess))
    price = PAID_CONTENT_PRICES[rng.integers(0, len(PAID_CONTENT_PRICES), len(sess))]
    return sess, ts, item, price
