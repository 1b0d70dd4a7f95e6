"""subscription_propensity: will this user subscribe (buy a membership) in the next 14 days?

Label 1 when the user has a ``subscribe`` action in ``raw_memberships`` in [T, T + 14 d) (renewals
are not purchases decided in the horizon). Examples, scoring and oracle: see
tasks/models/families/purchase_propensity.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from tasks.models.families.purchase_propensity import (
    FEATURES,
    HORIZON_DAYS,
    INCREASING,
    PARAMS,
    SPEND_CAP,
    SUBSCRIBE_RATE,
    purchase_labels,
    purchase_truth,
)
from tasks.models.families.snapshots import USER_CONTEXT, EventCount, user_scoring_frame
from tasks.models.families.user_outcomes import (
    CLASSIFIER_METRICS,
    SPLIT,
    USER_SLICES,
    classifier_policy,
    user_estimator,
)
from tasks.models.families.user_truth import user_oracle
from tasks.models.plots import outcome_classifier_plots
from tasks.models.spec import BaseRate, LabelWindow, ModelSpec, Sampling, ScoringTarget

SUBSCRIBE = EventCount("raw_memberships", "user_key", where=("action", "subscribe"))


def subscription_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """subscription_propensity examples: label = a membership subscribe in the next 14 days."""
    return purchase_labels(conn, window, SUBSCRIBE)


def subscription_truth(rows: pd.DataFrame, state: pd.DataFrame) -> dict[str, np.ndarray]:
    """True P(subscribe in 14 days); members (by their observed state at T) do not subscribe."""
    spend = np.minimum(state["spend"].to_numpy("float64"), SPEND_CAP)
    sessions = 1 + 2 * state["activity"].to_numpy("float64")
    rate = 1 - (1 - SUBSCRIBE_RATE * spend) ** sessions
    member = rows.get("user_membership__membership_active")
    if member is not None:
        rate = np.where(pd.to_numeric(member).fillna(0).to_numpy("float64") > 0, 0.0, rate)
    return purchase_truth(rows, state, rate)


subscription_propensity = ModelSpec(
    name="subscription_propensity",
    kind="binary",
    description=(
        "Will this user buy a membership (subscribe) in the next 14 days? One example per (user active "
        "in the last 28 days, day at 00:00 UTC)."
    ),
    build_labels=subscription_labels,
    feature_refs=FEATURES,
    context_features=USER_CONTEXT,
    categorical=(),
    make_estimator=user_estimator(FEATURES, INCREASING),
    params=PARAMS,
    baseline=BaseRate(),
    metrics=CLASSIFIER_METRICS,
    primary_metric="auc",
    slices=USER_SLICES,
    policy=classifier_policy(auc_floor=0.65, ece_ceiling=0.03),
    scoring=ScoringTarget(entity="user", key="user_key"),
    label_sources=("raw_memberships", "raw_watch_sessions", "raw_users"),
    horizon_days=HORIZON_DAYS,
    training_days=28,
    split=SPLIT,
    score_cron="10 5 * * *",
    oracle=user_oracle(subscription_truth),
    resample_by="user_key",  # a user has several snapshots in the holdout
    build_scoring_frame=user_scoring_frame,
    plots=outcome_classifier_plots,
    # Subscriptions are rare among user-days: beyond the cap every subscriber snapshot is kept and a
    # share of the others, the probabilities corrected back to the population's.
    sampling=Sampling("negatives"),
)
