"""Impression-level ad models (ad_ctr, ad_cvr): their examples, inputs, estimator and policy shape.

Labels come from ``raw_ad_impressions`` (validated partitions only); the ad's category from
``raw_ads`` and each user's signup time (for the new-vs-returning slice) from ``raw_users``,
both validated partitions only. Batch scoring produces a per-user ad propensity used for
targeting: one score per user for a reference impression (slot 1, 20:00 UTC, the user's own
device, an ad of the user's most-watched category with no delivery history yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from sqlalchemy import Connection, and_, case, func, literal, select

from tasks.dates import partition_day
from tasks.featurestore.definitions import DAY_S
from tasks.featurestore.views import CATEGORY_VOCABULARY
from tasks.models.context import FeatureValue, TopChoice
from tasks.models.families.tabular import CategoryShare, make_boosted_pipeline
from tasks.models.spec import (
    ChangeThreshold,
    LabelWindow,
    PromotionPolicy,
    SignificanceRule,
    ValueThreshold,
)
from tasks.warehouse import raw_table, validated_dates

NEW_USER_DAYS = 7  # a user younger than this at the impression is "new"
METRICS = ("auc", "log_loss", "normalized_entropy", "ece", "pred_obs_ratio")
SLICES = ("region", "device", "user_type")
LABEL_SOURCES = ("raw_ad_impressions", "raw_ads", "raw_users")

_SHARES = {c: f"user_category_mix__{c}_share_28d" for c in CATEGORY_VOCABULARY}

USER_FEATURES: tuple[str, ...] = (
    "user_ads:ad_impressions_7d",
    "user_ads:ad_impressions_28d",
    "user_ads:ad_clicks_7d",
    "user_ads:ad_clicks_28d",
    "user_ads:ad_ctr_smoothed_7d",
    "user_ads:ad_ctr_smoothed_28d",
    "user_watch:watch_minutes_7d",
    "user_watch:watch_minutes_28d",
    "user_watch:sessions_7d",
    "user_watch:sessions_28d",
    "user_watch:distinct_streamers_28d",
    "user_watch:days_since_active_28d",
    *(f"user_category_mix:{c}_share_28d" for c in CATEGORY_VOCABULARY),
    "user_profile:age_band",
    "user_profile:days_since_signup",
)
SPEND_FEATURES: tuple[str, ...] = (
    "user_commerce:orders_28d",
    "user_commerce:spend_28d",
    "user_commerce:product_views_28d",
    "user_gifts:gifts_count_28d",
    "user_gifts:gifts_sum_28d",
    "user_membership:membership_active",
    "user_paid_content:paid_content_purchases_28d",
    "user_paid_content:paid_content_spend_28d",
)
AD_FEATURES: tuple[str, ...] = ("ad_activity:impressions_7d", "ad_activity:clicks_7d", "ad_activity:ctr_7d")
CONTEXT = ("position", "hour", "device", "ad_category")
CATEGORICAL = ("device", "ad_category", "user_profile__age_band")

# The reference impression a per-user score is given for. ad_id None: an ad with no delivery
# history (the ad_activity features come back missing, as for a newly launched ad).
REFERENCE_CONTEXT: dict[str, Any] = {
    "ad_id": None,
    "position": 1,
    "hour": 20,
    "device": FeatureValue("user_profile:device"),
    "ad_category": TopChoice(tuple((c, f"user_category_mix:{c}_share_28d") for c in CATEGORY_VOCABULARY)),
}


def impression_labels(conn: Connection, window: LabelWindow, *, clicked_only: bool) -> pd.DataFrame:
    """One row per impression (or per clicked impression) of validated partitions in the window."""
    imp, ads, users = (raw_table(t) for t in LABEL_SOURCES)
    category = (
        select(ads.c.ad_id, func.min(ads.c.ad_category).label("ad_category"))
        .where(ads.c.event_date.in_(validated_dates(ads.name)))
        .group_by(ads.c.ad_id)
        .subquery()
    )
    signup = (
        select(users.c.user_key, func.min(users.c.event_ts).label("signup_ts"))
        .where(users.c.event_date.in_(validated_dates(users.name)))
        .group_by(users.c.user_key)
        .subquery()
    )
    user_type = case(
        (signup.c.signup_ts.is_(None), literal("unknown")),
        (imp.c.event_ts - signup.c.signup_ts < NEW_USER_DAYS * DAY_S, literal("new")),
        else_=literal("returning"),
    )
    label = imp.c.converted if clicked_only else imp.c.clicked
    last_ts = window.end_ts - window.horizon_s  # an example's label must be known by end_ts
    query = (
        select(
            imp.c.event_id.label("example_id"),
            imp.c.user_key,
            imp.c.ad_id,
            imp.c.event_ts,
            label.label("label"),
            imp.c.position,
            imp.c.hour,
            func.coalesce(imp.c.device, literal("unknown")).label("device"),
            func.coalesce(category.c.ad_category, literal("unknown")).label("ad_category"),
            imp.c.region,
            user_type.label("user_type"),
        )
        .select_from(
            imp.outerjoin(category, category.c.ad_id == imp.c.ad_id).outerjoin(
                signup, signup.c.user_key == imp.c.user_key
            )
        )
        .where(
            and_(
                imp.c.event_date.between(
                    partition_day(window.start_ts), partition_day(last_ts)
                ),  # partition pruning
                imp.c.event_date.in_(validated_dates(imp.name)),
                imp.c.event_ts >= window.start_ts,
                imp.c.event_ts < last_ts,
            )
        )
        .order_by(imp.c.event_ts, imp.c.event_id)
    )
    if clicked_only:
        query = query.where(imp.c.clicked == 1)
    result = conn.execute(query)
    frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for column in ("event_ts", "label", "position", "hour"):
        frame[column] = frame[column].astype("int64")
    return frame


def _columns(refs: tuple[str, ...]) -> list[str]:
    return [r.replace(":", "__") for r in refs]


def impression_estimator(
    refs: tuple[str, ...], increasing: tuple[str, ...], keep: tuple[str, ...] | None = None
) -> Any:
    """A boosted-tree factory over the features, the impression context and the ad-category affinity
    (``keep``: only these of them, see make_boosted_pipeline)."""
    numeric = [c for c in [*_columns(refs), *CONTEXT] if c not in CATEGORICAL]

    def make(params: Mapping[str, Any]) -> Any:
        affinity = CategoryShare("ad_category", _SHARES, "ad_category_share")
        return make_boosted_pipeline(
            params,
            numeric=numeric,
            categorical=CATEGORICAL,
            affinity=affinity,
            increasing=increasing,
            keep=keep,
        )

    return make


def impression_policy(auc_floor: float, ece_ceiling: float, max_ne: float) -> PromotionPolicy:
    """Value floors, must beat the base rate on log loss (significantly), bounded drift vs the champion.

    Holdout sizes each bound needs (impressions for ad_ctr, clicks for ad_cvr) for its 95 % interval to
    clear it at the demo platform's values: auc 5,900 / 1,760, ece 620 / 340, normalized_entropy
    2,700 / 810, pred_obs_ratio 4,500 / 540. The demo's ad_ctr holdout (19,500) decides every bound;
    ad_cvr's (760 clicks from the longest label window, about 1,460 judged with its forward
    cross-fit) leaves auc and normalized_entropy undecided.
    """
    return PromotionPolicy(
        value_thresholds=(
            ValueThreshold("auc", lower=auc_floor),
            ValueThreshold("ece", upper=ece_ceiling),
            ValueThreshold("normalized_entropy", upper=max_ne),
            ValueThreshold("pred_obs_ratio", lower=0.8, upper=1.2),
        ),
        change_thresholds=(
            ChangeThreshold("auc", slack=-0.005),
            ChangeThreshold("log_loss", slack=-0.002),
            ChangeThreshold("auc", slack=-0.02, slice="region"),  # a critical slice
        ),
        significance=(SignificanceRule("log_loss", against="baseline", confidence=0.95),),
        beat_baseline=("log_loss",),
    )


CTR_FEATURES = (*USER_FEATURES, *AD_FEATURES)
CVR_FEATURES = (*USER_FEATURES, *SPEND_FEATURES, *AD_FEATURES)
# What ad_cvr's booster reads: the known drivers of a conversion given a click, each through the
# inputs that measure it - the user's interest in the ad's category (its watch share), the user's
# spending (orders, gifts, paid content, membership) and the ad's appeal (its recent CTR), plus the
# user's response to ads. A conversion follows a click, so the click's context (slot, hour, device)
# and the user's watch volume are left out; every input can only raise the conversion probability
# (monotone). With about 1,200 clicks a week, 8 inputs instead of 40 keep the trees on the signal.
# Measured on the demo platform (5,000 users, three simulated histories, forward cross-fitted):
# the paired 95 % interval of log loss minus the base rate's lies below 0 on all three, against
# two of three with the 40 inputs; AUC within 0.006 of theirs.
CONVERSION_INPUTS = (
    "ad_category_share",
    "user_commerce__spend_28d",
    "user_commerce__orders_28d",
    "user_gifts__gifts_sum_28d",
    "user_paid_content__paid_content_spend_28d",
    "user_membership__membership_active",
    "ad_activity__ctr_7d",
    "user_ads__ad_ctr_smoothed_28d",
)
CLICK_HISTORY_INCREASING = (
    "user_ads__ad_clicks_7d",
    "user_ads__ad_clicks_28d",
    "user_ads__ad_ctr_smoothed_7d",
    "user_ads__ad_ctr_smoothed_28d",
    "ad_category_share",
)
