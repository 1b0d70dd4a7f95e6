"""churn: will this user be inactive (no live stream watched) for the next 14 days?

Examples are daily user snapshots (tasks/models/families/snapshots.py): one row per (user, day T at
00:00 UTC) for users who watched at least once in the 28 days before T; label 1 when the user
watches nothing in [T, T + 14 d). Scoring covers the same population at as_of's 00:00 UTC.

Oracle (evaluation only): the simulator's probability of 14 silent days given the user's latent
state at T — already churned, else daily churn hazard and daily activity
(tasks/models/families/user_truth.py).
Also reported: the AUC of ranking by the churn hazard alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from tasks.featurestore.definitions import DAY_S
from tasks.models.families.snapshots import (
    USER_CONTEXT,
    entity_split,
    snapshot_times,
    user_scoring_frame,
    user_snapshots,
)
from tasks.models.families.user_outcomes import (
    CLASSIFIER_METRICS,
    SPLIT,
    USER_SLICES,
    classifier_policy,
    user_estimator,
)
from tasks.models.families.user_truth import churned_at, p_inactive, user_oracle
from tasks.models.plots import outcome_classifier_plots
from tasks.models.spec import BaseRate, LabelWindow, ModelSpec, Sampling, ScoringTarget

HORIZON_DAYS = 14
LABEL_SOURCES = ("raw_watch_sessions", "raw_users")

FEATURES: tuple[str, ...] = (
    "user_watch:watch_minutes_1d",
    "user_watch:watch_minutes_7d",
    "user_watch:watch_minutes_28d",
    "user_watch:sessions_1d",
    "user_watch:sessions_7d",
    "user_watch:sessions_28d",
    "user_watch:distinct_streamers_7d",
    "user_watch:distinct_streamers_28d",
    "user_watch:days_since_active_28d",
    "user_profile:days_since_signup",
    "user_membership:membership_active",
    "user_gifts:gifts_count_28d",
    "user_paid_content:paid_content_purchases_28d",
)
# Domain knowledge: the longer a user has been silent, the likelier the silence goes on.
INCREASING = ("user_watch__days_since_active_28d",)


def churn_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """Daily snapshots of active users; label = no session in the next 14 days."""
    horizon = LabelWindow(window.start_ts, window.end_ts, HORIZON_DAYS * DAY_S)
    frame = user_snapshots(conn, snapshot_times(horizon), horizon_days=HORIZON_DAYS)
    frame["label"] = (frame["future_active_days"] == 0).astype("int64")
    return entity_split(frame.drop(columns=["future_active_days", "future_events"]), "user_key", SPLIT[0])


def churn_truth(rows: pd.DataFrame, state: pd.DataFrame) -> dict[str, np.ndarray]:
    """True P(14 silent days) at each snapshot, and the churn hazard as a second ranking."""
    ts = rows["event_ts"].to_numpy("int64")
    hazard = state["hazard"].to_numpy("float64")
    truth = p_inactive(state["activity"].to_numpy("float64"), hazard, churned_at(state, ts), ts, HORIZON_DAYS)
    return {"oracle": truth, "hazard": hazard}


churn = ModelSpec(
    name="churn",
    kind="binary",
    description=(
        "Will this user watch nothing in the next 14 days? One example per (user active in the last "
        "28 days, day at 00:00 UTC); label = no session in [T, T + 14 d)."
    ),
    build_labels=churn_labels,
    feature_refs=FEATURES,
    context_features=USER_CONTEXT,
    categorical=(),
    make_estimator=user_estimator(FEATURES, INCREASING),
    params={"max_depth": 3, "learning_rate": 0.05, "n_estimators": 400, "min_child_weight": 5.0},
    baseline=BaseRate(),
    metrics=CLASSIFIER_METRICS,
    primary_metric="auc",
    slices=USER_SLICES,
    policy=classifier_policy(auc_floor=0.70, ece_ceiling=0.03),
    scoring=ScoringTarget(entity="user", key="user_key"),
    label_sources=LABEL_SOURCES,
    horizon_days=HORIZON_DAYS,
    training_days=28,
    split=SPLIT,
    retrain_cron="0 3 * * 1",
    score_cron="0 5 * * *",
    oracle=user_oracle(churn_truth),
    resample_by="user_key",  # a user has several snapshots in the holdout
    build_scoring_frame=user_scoring_frame,
    plots=outcome_classifier_plots,
    # About one user-day in ten churns, too many for dropping negatives to buy much: beyond the cap
    # whole users are kept (every snapshot of a kept user), the unit the holdout's bootstrap counts.
    sampling=Sampling("entity", column="user_key"),
)
