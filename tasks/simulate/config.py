"""Simulation configuration, planted shifts, platform constants and deterministic random generators.

Nothing a day produces depends on how many days a run covers: signups, campaigns, streams and ad
launches are drawn per calendar day from the seed, so a day is the same in a short run, a long
run, or a run that continues an earlier one (tasks/simulate/platform.py).
"""

from __future__ import annotations

import datetime
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
GROWTH_DAYS = 28  # `users` counts the initial base plus about this many days of signups
CAMPAIGN_LIFT = 3.0  # signup multiplier inside a marketing campaign window
CAMPAIGN_EVERY = 10  # one campaign per block of this many days
CAMPAIGN_DAYS = 4  # length of a campaign
AD_LAUNCH_DAYS = 28  # ads that do not launch on day one launch within this many days
MEMBERSHIP_FEE = 4.99
MEMBERSHIP_PERIOD_DAYS = 30
GIFT_PLATFORM_SHARE = 0.3


SHIFT_KINDS: tuple[str, ...] = ("interests", "prices", "traffic", "ad-mix")
# What `size` means per kind, and its default: share of users who move half their interest to
# the target category; multiplier of product prices; of one region's sessions; of one ad
# category's budget.
SHIFT_SIZE: dict[str, float] = {"interests": 0.5, "prices": 1.5, "traffic": 2.0, "ad-mix": 5.0}
# `target` per kind: the category interests move to, the region whose traffic changes, the ad
# category whose budget changes (prices: none).
SHIFT_TARGET: dict[str, str] = {"interests": "music", "prices": "", "traffic": "na", "ad-mix": "gaming"}


@dataclass(frozen=True)
class Shift:
    """A change planted from one day on: kind, first day (UTC), size and target (see SHIFT_SIZE)."""

    kind: str
    start: datetime.date
    size: float
    target: str = ""

    def params(self) -> dict[str, float | str]:
        """The parameters recorded in oracle_shifts."""
        return {"size": self.size, "target": self.target}


def make_shift(
    kind: str, start: datetime.date, size: float | None = None, target: str | None = None
) -> Shift:
    """A shift with the kind's default size and target; ValueError on an unknown kind or target."""
    from tasks.vocabulary import CATEGORIES, REGIONS

    if kind not in SHIFT_KINDS:
        raise ValueError(f"unknown shift {kind!r}; one of {', '.join(SHIFT_KINDS)}")
    chosen = SHIFT_TARGET[kind] if target is None else target
    allowed = {"interests": CATEGORIES, "traffic": REGIONS, "ad-mix": CATEGORIES}.get(kind, ("",))
    if chosen not in allowed:
        raise ValueError(f"shift {kind}: target must be one of {', '.join(allowed) or 'nothing'}")
    chosen_size = SHIFT_SIZE[kind] if size is None else float(size)
    if not chosen_size > 0 or (kind == "interests" and chosen_size > 1):
        raise ValueError(f"shift {kind}: size {chosen_size} out of range")
    return Shift(kind=kind, start=start, size=chosen_size, target=chosen)


@dataclass(frozen=True)
class SimConfig:
    """Size, seed and calendar of one simulated platform."""

    users: int = 2000  # the base at the start plus about GROWTH_DAYS days of signups
    streamers: int = 120
    days: int = 28
    seed: int = 7
    start: datetime.date = datetime.date(2026, 1, 5)  # first simulated day (UTC)
    chunk_users: int = 200_000  # users simulated per chunk to bound memory
    pseudonym_key: bytes = b"liveyield-dev-key"
    shifts: tuple[Shift, ...] = ()

    @property
    def start_epoch(self) -> int:
        """UTC epoch seconds of midnight on the first simulated day."""
        moment = datetime.datetime.combine(self.start, datetime.time(), datetime.UTC)
        return int(moment.timestamp())

    @property
    def end_epoch(self) -> int:
        """UTC epoch seconds just after the last simulated day."""
        return self.start_epoch + self.days * DAY_S

    def day_of(self, date: datetime.date) -> int:
        """Day index of a date relative to the start."""
        return (date - self.start).days

    @property
    def n_ads(self) -> int:
        """Size of the ad catalogue (50-200, growing with the streamer count)."""
        return int(np.clip(20 + self.streamers // 2, 50, 200))


def rng_for(config: SimConfig, *tags: int) -> np.random.Generator:
    """A generator derived from the seed and a fixed tag path, so stages never share draws."""
    return np.random.default_rng([config.seed, *tags])


def campaign_windows(config: SimConfig, days: int | None = None) -> list[tuple[int, int]]:
    """Marketing campaigns as [first_day, last_day] day indices (inclusive) that start in the first
    `days` days (default: the configured period); one per CAMPAIGN_EVERY-day block."""
    horizon = config.days if days is None else days
    windows = []
    for block in range(0, max(horizon, 0), CAMPAIGN_EVERY):
        first = block + int(rng_for(config, 900, block).integers(0, CAMPAIGN_EVERY - CAMPAIGN_DAYS + 1))
        if first < horizon:
            windows.append((first, first + CAMPAIGN_DAYS - 1))
    return windows


def in_campaign(config: SimConfig, day: int) -> bool:
    """Whether a campaign runs on a day index."""
    block = day - day % CAMPAIGN_EVERY
    first = block + int(rng_for(config, 900, block).integers(0, CAMPAIGN_EVERY - CAMPAIGN_DAYS + 1))
    return first <= day < first + CAMPAIGN_DAYS


def day_weekday(config: SimConfig, day: int) -> int:
    """Weekday (Monday=0) of a day index relative to the start."""
    return (config.start.weekday() + day) % 7
