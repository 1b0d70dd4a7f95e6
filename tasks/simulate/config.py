"""Simulation configuration, platform constants and deterministic random generators."""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass

import numpy as np

DAY_S = 86_400
HOUR_S = 3_600

REGION_SHARE: tuple[float, ...] = (0.22, 0.2, 0.15, 0.18, 0.15, 0.1)  # in REGIONS order
DEVICE_SHARE: tuple[float, ...] = (0.3, 0.4, 0.2, 0.1)  # in DEVICES order
# Stream bitrate by viewing device; the regional mix lands at roughly 2.5-4 Mbps.
DEVICE_BITRATE_MBPS: tuple[float, ...] = (2.5, 2.5, 3.5, 5.0)
AGE_SHARE: tuple[float, ...] = (0.08, 0.3, 0.3, 0.17, 0.1, 0.05)  # in AGE_BANDS order
ORGANIC_SHARE: tuple[float, ...] = (0.6, 0.2, 0.2)  # in ORGANIC_CHANNELS order
SEGMENT_NAMES: tuple[str, ...] = (
    "whale",
    "shopper",
    "at_risk",
    "power_viewer",
    "casual_viewer",
)

# Local-time share of viewing starts per hour: quiet at night, evening prime time.
DIURNAL_LOCAL: np.ndarray = np.array(
    [
        3,
        2,
        1,
        0.6,
        0.4,
        0.4,
        0.7,
        1.2,
        1.6,
        2,
        2.4,
        2.8,
        3.2,
        3.2,
        3.2,
        3.4,
        3.8,
        4.6,
        6,
        7.5,
        8.5,
        8,
        6.5,
        4.5,
    ],
    dtype=np.float64,
)
DIURNAL_LOCAL = DIURNAL_LOCAL / DIURNAL_LOCAL.sum()

HISTORY_DAYS = 28  # users who exist at the start signed up over this many prior days
INITIAL_USER_SHARE = 0.4
CAMPAIGN_LIFT = 3.0  # signup multiplier inside a marketing campaign window
MEMBERSHIP_FEE = 4.99
MEMBERSHIP_PERIOD_DAYS = 30
GIFT_PLATFORM_SHARE = 0.3


@dataclass(frozen=True)
class SimConfig:
    """Size, seed and calendar of one simulated platform."""

    users: int = 2000
    streamers: int = 120
    days: int = 28
    seed: int = 7
    start: datetime.date = datetime.date(2026, 1, 5)  # first simulated day (UTC)
    chunk_users: int = 200_000  # users simulated per chunk to bound memory
    pseudonym_key: bytes = b"liveyield-dev-key"

    @property
    def start_epoch(self) -> int:
        """UTC epoch seconds of midnight on the first simulated day."""
        moment = datetime.datetime.combine(self.start, datetime.time(), datetime.UTC)
        return int(moment.timestamp())

    @property
    def end_epoch(self) -> int:
        """UTC epoch seconds just after the last simulated day."""
        return self.start_epoch + self.days * DAY_S

    @property
    def n_ads(self) -> int:
        """Size of the ad catalogue (50-200, growing with the streamer count)."""
        return int(np.clip(20 + self.streamers // 2, 50, 200))


def rng_for(config: SimConfig, *tags: int) -> np.random.Generator:
    """A generator derived from the seed and a fixed tag path, so stages never share draws."""
    return np.random.default_rng([config.seed, *tags])


def campaign_windows(config: SimConfig) -> list[tuple[int, int]]:
    """Marketing campaigns as [first_day, last_day] day indices (inclusive)."""
    n = 2 if config.days < 21 else 3
    rng = rng_for(config, 900)
    bounds = np.linspace(0, config.days, n + 1).astype(int)
    windows = []
    for lo, hi in itertools.pairwise(bounds):
        seg = int(hi - lo)
        if seg <= 0:
            continue
        length = max(1, min(4, seg // 2))
        first = int(lo + rng.integers(0, seg - length + 1))
        windows.append((first, first + length - 1))
    return windows


def day_weekday(config: SimConfig, day: int) -> int:
    """Weekday (Monday=0) of a day index relative to the start."""
    return (config.start.weekday() + day) % 7
