"""paid_content_propensity: will this user buy paid content in the next 14 days?

Label 1 when the user has a ``raw_paid_content`` purchase in [T, T + 14 d). Examples, scoring
and oracle: see tasks/models/families/purchase_propensity.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from tasks.models.families.purchase_propensity import (
    FEATURES,
    HORIZON_DAYS,
    INCREASING,
    PAID_CONTENT_RATE,
    PARAMS,
    SPEND_CAP,
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

PAID_CONTENT = EventCount("raw_paid_content", "user_key")


def paid_content_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """paid_content_propensity examples: label = a paid-content purchase in the next 14 days."""
    return purchase_labels(conn, window, PAID_CONTENT)


def paid_content_truth(rows: pd.DataFrame, state: pd.DataFrame) -> dict[str, np.ndarray]:
    """True P(paid-content purchase in 14 days)."""
    rate = PAID_CONTENT_RATE * np.minimum(state["spend"].to_numpy("float64"), SPEND_CAP)
    return purchase_truth(rows, state, rate)


paid_content_propensity = ModelSpec(
    name="paid_content_propensity",
    kind="binary",
    description=(
        "Will this user buy paid content in the next 14 days? One example per (user active in the "
        "last 28 days, day at 00:00 UTC)."
    ),
    build_labels=paid_content_labels,
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
    label_sources=("raw_paid_content", "raw_watch_sessions", "raw_users"),
    horizon_days=HORIZON_DAYS,
    training_days=28,
    split=SPLIT,
    score_cron="10 5 * * *",
    oracle=user_oracle(paid_content_truth),
    resample_by="user_key",  # a user has several snapshots in the holdout
    build_scoring_frame=user_scoring_frame,
    plots=outcome_classifier_plots,
    # Purchases are rare among user-days: beyond the cap every purchase snapshot is kept and a share
    # of the others, the probabilities corrected back to the population's.
    sampling=Sampling("negatives"),
)
