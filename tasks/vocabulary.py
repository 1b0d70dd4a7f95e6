"""The vocabulary the platform shares: the values a category, region, device... column can hold.

Production code (feature views, planners, models) and the simulator both import these, so there
is one definition of each; the simulator adds only its own behaviour (shares, rates, curves).
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "gaming",
    "music",
    "just_chatting",
    "sports",
    "cooking",
    "beauty",
    "education",
    "travel",
)  # live-stream (and ad) content categories
REGIONS: tuple[str, ...] = ("na", "eu", "latam", "sea", "india", "mena")
# Whole-hour offsets from UTC, enough for a diurnal pattern; india is really +5:30.
REGION_UTC_OFFSET: dict[str, int] = {
    "na": -5,
    "eu": 1,
    "latam": -3,
    "sea": 7,
    "india": 5,
    "mena": 3,
}
DEVICES: tuple[str, ...] = ("ios", "android", "web", "tv")
AGE_BANDS: tuple[str, ...] = ("13-17", "18-24", "25-34", "35-44", "45-54", "55+")
ORGANIC_CHANNELS: tuple[str, ...] = ("organic", "referral", "paid_social")  # non-campaign signups
PRODUCT_CATEGORIES: tuple[str, ...] = (
    "fashion",
    "beauty",
    "electronics",
    "home",
    "food",
    "toys",
)  # shop product categories
