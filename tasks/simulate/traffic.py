"""Hourly aggregates built across user chunks: regional traffic and ad delivery reports."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.simulate.config import DEVICE_BITRATE_MBPS, HOUR_S, SimConfig
from tasks.simulate.population import Ads
from tasks.vocabulary import REGIONS

CAPACITY_HEADROOM = 1.3  # serving capacity over the typical daily peak


class TrafficAccumulator:
    """Watched seconds and bitrate-weighted seconds per (hour, region)."""

    def __init__(self, config: SimConfig) -> None:
        self.origin = config.start_epoch
        self.n_hours = config.days * 24
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

    def frames(self) -> list[pd.DataFrame]:
        """raw_traffic rows, one frame per day, one row per region per hour."""
        viewers = self.seconds / HOUR_S
        mbps = self.megabits / HOUR_S
        days = max(self.n_hours // 24, 1)
        daily_peak = viewers[: days * 24].reshape(days, 24, len(REGIONS)).max(axis=1)
        # Sized once per region from the simulated load: headroom over a busy day's peak.
        capacity = np.ceil(CAPACITY_HEADROOM * np.quantile(daily_peak, 0.9, axis=0))
        capacity = np.maximum(capacity, 1.0)
        ts = self.origin + np.arange(self.n_hours) * HOUR_S
        region = np.tile(np.asarray(REGIONS, dtype=object), self.n_hours)
        event_ts = np.repeat(ts, len(REGIONS))
        frame = pd.DataFrame(
            {
                "event_id": pd.Series(region, dtype="str") + ":" + pd.Series(event_ts).astype("str"),
                "event_ts": event_ts,
                "region": region,
                "concurrent_viewers": viewers.ravel().round(3),
                "bandwidth_mbps": mbps.ravel().round(3),
                "capacity_viewers": np.tile(capacity, self.n_hours),
            }
        )
        per_day = 24 * len(REGIONS)
        return [frame.iloc[i : i + per_day].reset_index(drop=True) for i in range(0, len(frame), per_day)]


class DeliveryAccumulator:
    """Impressions, clicks and conversions per (hour, ad) for the ad server's report."""

    def __init__(self, config: SimConfig, ads: Ads) -> None:
        self.origin = config.start_epoch
        self.n_hours = config.days * 24
        self.ads = ads
        shape = (self.n_hours, len(ads))
        self.impressions = np.zeros(shape, dtype=np.int64)
        self.clicks = np.zeros(shape, dtype=np.int64)
        self.conversions = np.zeros(shape, dtype=np.int64)

    def add(self, ts: np.ndarray, ad: np.ndarray, clicked: np.ndarray, converted: np.ndarray) -> None:
        """Count impressions and outcomes in their hour."""
        cell = ((ts - self.origin) // HOUR_S) * len(self.ads) + ad
        size = self.impressions.size
        shape = self.impressions.shape
        self.impressions += np.bincount(cell, minlength=size).reshape(shape)
        self.clicks += np.bincount(cell, clicked, size).astype(np.int64).reshape(shape)
        self.conversions += np.bincount(cell, converted, size).astype(np.int64).reshape(shape)

    def frames(self) -> list[pd.DataFrame]:
        """raw_ad_delivery rows, one frame per day, only (hour, ad) cells with impressions."""
        out = []
        for day in range(self.n_hours // 24):
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
