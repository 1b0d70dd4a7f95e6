"""The day-by-day, chunk-by-chunk driver that turns the model into raw and oracle tables.

A run simulates the local days of its period plus one (whose early hours in UTC belong to the
last day), and at least the days serving capacity is sized on, with users and streams drawn two
days ahead; it writes only events inside its window. So every landed UTC day is complete and
the same whatever the run's length.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd

from tasks.simulate import activity, monetization
from tasks.simulate.config import DAY_S, GIFT_PLATFORM_SHARE, Shift, SimConfig, rng_for
from tasks.simulate.population import (
    Ads,
    Products,
    Streamers,
    Streams,
    Users,
    ads_frame,
    identity_frame,
    make_ads,
    make_products,
    make_streamers,
    make_streams,
    make_users,
    oracle_streamers_frame,
    oracle_users_frame,
    products_frame,
    streamers_frame,
    streams_frame,
    users_frame,
)
from tasks.simulate.sink import Emitter, Sink
from tasks.simulate.traffic import CAPACITY_WINDOW_DAYS, DeliveryAccumulator, TrafficAccumulator
from tasks.vocabulary import CATEGORIES, DEVICES, REGIONS

Progress = Callable[[str, int, int], None]

_REGIONS = np.asarray(REGIONS, dtype=object)
_DEVICES = np.asarray(DEVICES, dtype=object)
_CATEGORIES = np.asarray(CATEGORIES, dtype=object)


def _strs(values: np.ndarray) -> pd.Series:
    """An object array of str as a pandas string Series (for vectorised concatenation)."""
    return pd.Series(values, dtype="str")


def _revenue(
    source: str,
    ref_ids: pd.Series,
    ts: np.ndarray,
    amount: np.ndarray,
    user_key: np.ndarray,
    streamer_id: np.ndarray,
) -> pd.DataFrame:
    """raw_revenue lines; each earning event yields at most one line, keyed by its id."""
    ref = ref_ids.reset_index(drop=True)
    return pd.DataFrame(
        {
            "event_id": "rev:" + ref,
            "event_ts": ts,
            "source": source,
            "amount": np.asarray(amount, dtype=np.float64).round(4),
            "user_key": user_key,
            "streamer_id": streamer_id,
            "ref_event_id": ref,
        }
    )


AHEAD_DAYS = 2  # users and streams are drawn this many days past the period


class _Run:
    """State of one simulation run: population, catalogues, accumulators and writers."""

    def __init__(self, config: SimConfig, sink: Sink, emit_from: int | None) -> None:
        self.config = config
        self.sim_days = max(config.days + 1, CAPACITY_WINDOW_DAYS)  # local days simulated
        horizon = self.sim_days + AHEAD_DAYS
        self.out = Emitter(sink, config.seed, emit_from, config.end_epoch)
        self.users: Users = make_users(config, horizon)
        self.streamers: Streamers = make_streamers(config)
        self.streams: Streams = make_streams(config, self.streamers, horizon)
        self.ads: Ads = make_ads(config)
        self.products: Products = make_products(config, self.streamers)
        self.live = activity.LiveIndex(config, self.streams, horizon)
        self.viewers = activity.ViewerState.empty(len(self.users))
        self.members = monetization.MembershipState.initial(config, self.users, self.streamers)
        self.traffic = TrafficAccumulator(config, horizon)
        self.delivery = DeliveryAccumulator(config, self.ads, horizon)
        self.region_boost: np.ndarray | None = None

    def chunks(self) -> list[tuple[int, int]]:
        """User index ranges simulated together."""
        step, n = max(self.config.chunk_users, 1), len(self.users)
        return [(lo, min(lo + step, n)) for lo in range(0, n, step)]

    def emitted_days(self) -> range:
        """Day indices this run writes."""
        cfg, lo = self.config, self.out.lo
        first = 0 if lo is None else max((lo - cfg.start_epoch) // DAY_S, 0)
        return range(first, cfg.days)

    def write_population(self) -> None:
        """Catalogues, signups, identities, oracle traits and planted shifts."""
        cfg, out = self.config, self.out
        out.emit("raw_streamers", streamers_frame(cfg, self.streamers))
        if out.lo is None:
            out.write("oracle_streamers", oracle_streamers_frame(self.streamers))
        out.emit("raw_streams", streams_frame(self.streamers, self.streams))
        order = np.argsort(self.ads.launch_day, kind="stable")
        out.emit("raw_ads", ads_frame(cfg, self.ads, order))
        out.emit("raw_products", products_frame(cfg, self.streamers, self.products))
        signup = self.users.signup_ts
        landed = out.inside(signup) | ((signup < cfg.start_epoch) & (out.lo is None))
        for lo, hi in self.chunks():
            idx = lo + np.argsort(signup[lo:hi], kind="stable")
            out.emit("raw_users", users_frame(self.users, idx))
            idx = np.arange(lo, hi)[landed[lo:hi]]
            out.write("identity_users", identity_frame(self.users, idx))
            out.write("oracle_users", oracle_users_frame(self.users, idx))
        out.write("oracle_shifts", shifts_frame(cfg.shifts))

    def plant_shifts(self, day: int) -> None:
        """Apply the shifts that start on this day index (or before the first day, on day 0)."""
        for shift in self.config.shifts:
            if max(self.config.day_of(shift.start), 0) != day:
                continue
            if shift.kind == "interests":
                # A share of users move half their interest to the target category.
                moved = self.users.lot < shift.size
                toward = np.zeros(len(CATEGORIES), dtype=np.float32)
                toward[CATEGORIES.index(shift.target)] = 1.0
                self.users.interests[moved] = 0.5 * self.users.interests[moved] + 0.5 * toward
            elif shift.kind == "prices":
                self.products.price = (self.products.price * shift.size).round(2)
            elif shift.kind == "traffic":
                boost = np.ones(len(REGIONS)) if self.region_boost is None else self.region_boost
                boost[REGIONS.index(shift.target)] *= shift.size
                self.region_boost = boost
            elif shift.kind == "ad-mix":
                target = self.ads.category == CATEGORIES.index(shift.target)
                self.ads.weight = np.where(target, self.ads.weight * shift.size, self.ads.weight)

    def simulate_day(self, day: int, chunk: int, lo: int, hi: int) -> None:
        """Everything users [lo, hi) do on one day."""
        cfg, out, users, st = self.config, self.out, self.users, self.streamers
        rng = rng_for(cfg, 100, day, chunk)
        sess = activity.simulate_sessions(
            cfg, day, lo, hi, users, st, self.streams, self.live, self.viewers, rng, self.region_boost
        )
        activity.remember(self.viewers, sess)
        keys = users.key[sess.user]
        streamer_ids = st.ids[sess.streamer]
        stream_ids = self.streams.ids[sess.stream]
        sess_ids = out.ids("ws", sess.start)
        out.emit(
            "raw_watch_sessions",
            pd.DataFrame(
                {
                    "event_id": sess_ids,
                    "event_ts": sess.start,
                    "user_key": keys,
                    "stream_id": stream_ids,
                    "streamer_id": streamer_ids,
                    "category": _CATEGORIES[st.category[sess.streamer]],
                    "region": _REGIONS[users.region[sess.user]],
                    "device": _DEVICES[users.device[sess.user]],
                    "end_ts": sess.end,
                    "duration_s": sess.end - sess.start,
                }
            ),
        )
        self.traffic.add(sess.start, sess.end, users.region[sess.user], users.device[sess.user])

        f_user, f_streamer, f_ts = activity.follows(sess, st, self.viewers, rng)
        out.emit(
            "raw_follows",
            pd.DataFrame(
                {
                    "event_id": out.ids("fo", f_ts),
                    "event_ts": f_ts,
                    "user_key": users.key[f_user],
                    "streamer_id": st.ids[f_streamer],
                }
            ),
        )
        revenue = [
            self._ads(day, sess, keys, streamer_ids, stream_ids, rng),
            self._commerce(sess, keys, streamer_ids, stream_ids, rng),
            self._gifts(sess, keys, streamer_ids, stream_ids, rng),
            self._memberships(day, lo, hi, sess, rng),
            self._paid_content(sess, keys, streamer_ids, rng),
        ]
        lines = [r for r in revenue if not r.empty]
        if lines:
            ledger = pd.concat(lines, ignore_index=True)
            out.emit("raw_revenue", ledger.sort_values("event_ts", kind="stable"))

    def _ads(
        self,
        day: int,
        sess: activity.Sessions,
        keys: np.ndarray,
        streamer_ids: np.ndarray,
        stream_ids: np.ndarray,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        """Ad impressions, their oracle probabilities and the ad revenue lines."""
        out, users, ads = self.out, self.users, self.ads
        imp = monetization.ad_impressions(self.config, day, sess, users, ads, rng)
        ids = out.ids("imp", imp.ts)
        u = sess.user[imp.session]
        out.emit(
            "raw_ad_impressions",
            pd.DataFrame(
                {
                    "event_id": ids,
                    "event_ts": imp.ts,
                    "user_key": keys[imp.session],
                    "ad_id": ads.ids[imp.ad],
                    "stream_id": stream_ids[imp.session],
                    "position": imp.position,
                    "hour": imp.hour,
                    "device": _DEVICES[users.device[u]],
                    "region": _REGIONS[users.region[u]],
                    "clicked": imp.clicked,
                    "converted": imp.converted,
                }
            ),
        )
        oracle = pd.DataFrame(
            {
                "event_id": ids,
                "event_date": pd.to_datetime(imp.ts, unit="s").date,
                "p_click": imp.p_click,
                "p_convert": imp.p_convert,
            }
        )
        # Split like the raw table so each write holds one day.
        day_idx = np.where(out.inside(imp.ts), imp.ts // DAY_S, -1)
        for d in np.unique(day_idx[day_idx >= 0]):
            out.write("oracle_ad_impressions", oracle.loc[day_idx == d])
        self.delivery.add(imp.ts, imp.ad, imp.clicked, imp.converted)
        earns, amount = monetization.ad_revenue(imp, ads)
        return _revenue(
            "ad",
            ids.iloc[earns],
            imp.ts[earns],
            amount,
            keys[imp.session[earns]],
            streamer_ids[imp.session[earns]],
        )

    def _commerce(
        self,
        sess: activity.Sessions,
        keys: np.ndarray,
        streamer_ids: np.ndarray,
        stream_ids: np.ndarray,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        """Product views, orders and commission revenue."""
        out, pr = self.out, self.products
        com = monetization.commerce(sess, self.users, pr, rng)
        vs = com.view_session
        order = np.argsort(com.view_ts, kind="stable")
        out.emit(
            "raw_product_views",
            pd.DataFrame(
                {
                    "event_id": out.ids("pv", com.view_ts[order]),
                    "event_ts": com.view_ts[order],
                    "user_key": keys[vs][order],
                    "product_id": pr.ids[com.view_product][order],
                    "stream_id": stream_ids[vs][order],
                    "streamer_id": streamer_ids[vs][order],
                }
            ),
        )
        os_ = vs[com.order_view]
        order = np.argsort(com.order_ts, kind="stable")
        ids = out.ids("ord", com.order_ts[order])
        refs = ids.str.replace("ord-", "SO-", regex=False)  # the shop's order number
        product = com.view_product[com.order_view]
        out.emit(
            "raw_orders",
            pd.DataFrame(
                {
                    "event_id": ids,
                    "event_ts": com.order_ts[order],
                    "order_ref": refs,
                    "user_key": keys[os_][order],
                    "product_id": pr.ids[product][order],
                    "stream_id": stream_ids[os_][order],
                    "streamer_id": streamer_ids[os_][order],
                    "region": _REGIONS[self.users.region[sess.user[os_]]][order],
                    "quantity": com.quantity[order],
                    "unit_price": pr.price[product][order],
                    "amount": com.amount[order],
                    "commission": com.commission[order],
                }
            ),
        )
        return _revenue(
            "commerce",
            ids,
            com.order_ts[order],
            com.commission[order],
            keys[os_][order],
            streamer_ids[os_][order],
        )

    def _gifts(
        self,
        sess: activity.Sessions,
        keys: np.ndarray,
        streamer_ids: np.ndarray,
        stream_ids: np.ndarray,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        """Gifts and the platform's share of them."""
        g_sess, g_ts, amount = monetization.gifts(sess, self.users, self.streamers, rng)
        order = np.argsort(g_ts, kind="stable")
        g_sess, g_ts, amount = g_sess[order], g_ts[order], amount[order]
        share = (amount * GIFT_PLATFORM_SHARE).round(2)
        ids = self.out.ids("gift", g_ts)
        self.out.emit(
            "raw_gifts",
            pd.DataFrame(
                {
                    "event_id": ids,
                    "event_ts": g_ts,
                    "user_key": keys[g_sess],
                    "streamer_id": streamer_ids[g_sess],
                    "stream_id": stream_ids[g_sess],
                    "amount": amount,
                    "platform_share": share,
                }
            ),
        )
        return _revenue("gift", ids, g_ts, share, keys[g_sess], streamer_ids[g_sess])

    def _memberships(
        self, day: int, lo: int, hi: int, sess: activity.Sessions, rng: np.random.Generator
    ) -> pd.DataFrame:
        """Membership actions and the fees they earn."""
        ev = monetization.memberships(
            self.config, day, lo, hi, sess, self.users, self.streamers, self.members, rng
        )
        ids = self.out.ids("mem", ev.ts)
        keys = self.users.key[ev.user]
        streamer_ids = self.streamers.ids[ev.streamer]
        self.out.emit(
            "raw_memberships",
            pd.DataFrame(
                {
                    "event_id": ids,
                    "event_ts": ev.ts,
                    "user_key": keys,
                    "streamer_id": streamer_ids,
                    "action": np.asarray(monetization.MEMBERSHIP_ACTIONS, dtype=object)[ev.action],
                    "plan": "monthly",
                    "fee": ev.fee,
                }
            ),
        )
        paid = np.flatnonzero(ev.fee > 0)
        return _revenue(
            "membership", ids.iloc[paid], ev.ts[paid], ev.fee[paid], keys[paid], streamer_ids[paid]
        )

    def _paid_content(
        self,
        sess: activity.Sessions,
        keys: np.ndarray,
        streamer_ids: np.ndarray,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        """Paid content purchases and their revenue."""
        p_sess, p_ts, item, price = monetization.paid_content(sess, self.users, rng)
        order = np.argsort(p_ts, kind="stable")
        p_sess, p_ts, item, price = p_sess[order], p_ts[order], item[order], price[order]
        ids = self.out.ids("pc", p_ts)
        content = _strs(streamer_ids[p_sess]) + "-c" + pd.Series(item).astype("str").str.zfill(2)
        self.out.emit(
            "raw_paid_content",
            pd.DataFrame(
                {
                    "event_id": ids,
                    "event_ts": p_ts,
                    "user_key": keys[p_sess],
                    "content_id": content,
                    "streamer_id": streamer_ids[p_sess],
                    "price": price,
                }
            ),
        )
        return _revenue("paid_content", ids, p_ts, price, keys[p_sess], streamer_ids[p_sess])

    def write_aggregates(self) -> None:
        """Hourly ad delivery and regional traffic, complete once every chunk has run."""
        for frame in self.delivery.frames(self.emitted_days()):
            self.out.write("raw_ad_delivery", frame)
        for frame in self.traffic.frames(self.emitted_days()):
            self.out.write("raw_traffic", frame)


def shifts_frame(shifts: tuple[Shift, ...]) -> pd.DataFrame:
    """oracle_shifts rows: kind, first day and parameters of every planted shift."""
    return pd.DataFrame(
        {
            "kind": [s.kind for s in shifts],
            "from_date": [s.start for s in shifts],
            "params": [json.dumps(s.params(), sort_keys=True) for s in shifts],
        },
        columns=["kind", "from_date", "params"],
    )


def simulate_platform(
    config: SimConfig, sink: Sink, progress: Progress | None = None, emit_from: int | None = None
) -> dict[str, int]:
    """Generate the platform; call sink.write(table, frame) repeatedly; return rows written per table.

    emit_from (UTC epoch seconds) writes only events from then on: the days are simulated from
    the start all the same, so a continued platform lands exactly what a longer run would have.
    """
    run = _Run(config, sink, emit_from)
    run.write_population()
    for day in range(run.sim_days):
        run.plant_shifts(day)
        for chunk, (lo, hi) in enumerate(run.chunks()):
            run.simulate_day(day, chunk, lo, hi)
        if progress is not None and day < config.days:
            progress("simulate", day + 1, config.days)
    run.write_aggregates()
    if progress is not None:
        progress("aggregate", 1, 1)
    return dict(run.out.rows)
