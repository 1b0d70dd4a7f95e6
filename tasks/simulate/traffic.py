"""Hourly aggregates built across user chunks: regional traffic and ad delivery reports."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.simulate.config import DEVICE_BITRATE_MBPS, HOUR_S, SimConfig
from tasks.simulate.population import Ads
from tasks.vocabulary import REGIONS

CAPACITY_HEADROOM = 1.3  # serving capacity over the typical daily peak
CAPACITY_WINDOW_DAYS = 28  # capacity is sized on the daily peaks of a window this long


class TrafficAccumulator:
    """Watched seconds and bitrate-weighted seconds per (hour, region)."""

    def __init__(self, config: SimConfig, days: int | None = None) -> None:
        self.origin = config.start_epoch
        self.n_hours = (config.days if days is None else days) * 24
        self.seconds = np.zeros((self.n_hours, len(REGIONS)))
        self.megabits = np.zeros((self.n_hours, len(REGIONS)))

    def add(self, start: np.ndarray, end: np.ndarray, region: np.ndarray, device: np.ndarray) -> None:
        """Spread each session's seconds over the hours it overlaps."""
        bitrate = np.asarray(DEVICE_BITRATE_MBPS)[device]
        hour = (start - self.origin) // HOUR_S
        cells = self.n_hours * len(REGIONS)
        # Sessions are at most a stream long (hours), so a short loop over spans suffices.
        while len(start):
            h0 = self.origin + hour * HOUR_S
            overlap = np.clip(np.minimum(end, h0 + HOUR_S) - np.maximum(start, h0), 0, None)
            inside = (hour >= 0) & (hour < self.n_hours) & (overlap > 0)
            cell = hour[inside] * len(REGIONS) + region[inside]
            self.seconds += np.bincount(cell, overlap[inside], cells).reshape(self.seconds.shape)
            self.megabits += np.bincount(cell, overlap[inside] * bitrate[inside], cells).reshape(
                self.megabits.shape
            )
            more = end > h0 + HOUR_S
            start, end, region, bitrate = start[more], end[more], region[more], bitrate[more]
            hour = hour[more] + 1

    def frames(self, days: range | None = None) -> list[pd.DataFrame]:
        """raw_traffic rows of the given day indices (default: all), one frame per day, one row per
        region per hour. Capacity is sized on the daily peaks of the first CAPACITY_WINDOW_DAYS days,
        later on the trailing ones."""
        viewers = self.seconds / HOUR_S
        mbps = self.megabits / HOUR_S
        total = self.n_hours // 24
        days = range(total) if days is None else days
        daily_peak = viewers[: total * 24].reshape(total, 24, len(REGIONS)).max(axis=1)
        out = []
        for day in days:
            # Headroom over a busy day's peak per region, in the first window or the trailing one.
            end = max(day + 1, CAPACITY_WINDOW_DAYS)
            window = daily_peak[end - CAPACITY_WINDOW_DAYS : end]
            capacity = np.maximum(np.ceil(CAPACITY_HEADROOM * np.quantile(window, 0.9, axis=0)), 1.0)
            hours = np.arange(day * 24, day * 24 + 24)
            region = np.tile(np.asarray(REGIONS, dtype=object), 24)
            event_ts = np.repeat(self.origin + hours * HOUR_S, len(REGIONS))
            out.append(
                pd.DataFrame(
                    {
                        "event_id": pd.Series(region, dtype="str") + ":" + pd.Series(event_ts).astype("str"),
                        "event_ts": event_ts,
                        "region": region,
                        "concurrent_viewers": viewers[hours].ravel().round(3),
                        "bandwidth_mbps": mbps[hours].ravel().round(3),
                        "capacity_viewers": np.tile(capacity, 24),
                    }
                )
            )
        return out


class DeliveryAccumulator:
    """Impressions, clicks and conversions per (hour, ad) for the ad server's report."""

    def __init__(self, config: SimConfig, ads: Ads, days: int | None = None) -> None:
        self.origin = config.start_epoch
        self.n_hours = (config.days if days is None else days) * 24
        self.ads = ads
        shape = (self.n_hours, len(ads))
        self.impressions = np.zeros(shape, dtype=np.int64)
        self.clicks = np.zeros(shape, dtype=np.int64)
        self.conversions = np.zeros(shape, dtype=np.int64)

    def add(self, ts: np.ndarray, ad: np.ndarray, clicked: np.ndarray, converted: np.ndarray) -> None:
        """Count impressions and outcomes in their hour."""
        hour = (ts - self.origin) // HOUR_S
        inside = hour < self.n_hours
        cell = hour[inside] * len(self.ads) + ad[inside]
        clicked, converted = clicked[inside], converted[inside]
        size = self.impressions.size
        shape = self.impressions.shape
        self.impressions += np.bincount(cell, minlength=size).reshape(shape)
        self.clicks += np.bincount(cell, clicked, size).astype(np.int64).reshape(shape)
        self.conversions += np.bincount(cell, converted, size).astype(np.int64).reshape(shape)

    def frames(self, days: range | None = None) -> list[pd.DataFrame]:
        """raw_ad_delivery rows of the given day indices (default: all), one frame per day, cells
        with impressions."""
        out = []
        for day in range(self.n_hours // 24) if days is None else days:
            rows = slice(day * 24, day * 24 + 24)
            hour, ad = np.nonzero(self.impressions[rows])
            hour = hour + day * 24
            imps = self.impressions[hour, ad]
            clicks = self.clicks[hour, ad]
            bid = self.ads.bid[ad]
            spend = np.where(self.ads.is_cpc[ad], bid * clicks, bid * imps / 1000.0)
            ts = self.origin + hour * HOUR_S
            ids = pd.Series(self.ads.ids[ad], dtype="str")
            out.append(
                pd.DataFrame(
                    {
                        "event_id": ids + ":" + pd.Series(ts).astype("str"),
                        "event_ts": ts.astype(np.int64),
                        "ad_id": self.ads.ids[ad],
                        "impressions": imps,
                        "clicks": clicks,
                        "conversions": self.conversions[hour, ad],
                        "ctr": clicks / imps,
                        "spend": spend.round(4),
                    }
                )
            )
        return out
