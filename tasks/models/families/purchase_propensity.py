"""Purchase propensities (subscription_propensity, paid_content_propensity): shared examples and truth.

* ``subscription_propensity``: label 1 when the user has a ``subscribe`` action in
  ``raw_memberships`` in [T, T + 14 d) (renewals are not purchases decided in the horizon).
* ``paid_content_propensity``: label 1 when the user has a ``raw_paid_content`` purchase in
  [T, T + 14 d).

Examples are the daily user snapshots churn uses (tasks/models/families/snapshots.py): one row per
(user who watched in the 28 days before T, day T at 00:00 UTC). Scoring covers the same
population at as_of's 00:00 UTC.

Oracle (evaluation only): the simulator's probability of at least one purchase in the horizon
from the user's latent state at T (tasks/models/families/user_truth.py): a per-active-day purchase rate
driven by the spend propensity (subscriptions: 0.003 x min(spend, 5) per session, about
1 + 2 x activity sessions an active day, none while already a member; paid content: 0.015 x
min(spend, 5) an active day), over the days the user stays and is active. Also reported: the
AUC of ranking by the spend propensity alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from tasks.featurestore.definitions import DAY_S
from tasks.models.families.snapshots import (
    EventCount,
    entity_split,
    snapshot_times,
    user_snapshots,
)
from tasks.models.families.user_outcomes import SPLIT
from tasks.models.families.user_truth import churned_at, p_any_event
from tasks.models.spec import LabelWindow

HORIZON_DAYS = 14
# Per-session subscription chance per unit of capped spend (tasks/simulate/monetization.py).
SUBSCRIBE_RATE, PAID_CONTENT_RATE, SPEND_CAP = 0.003, 0.015, 5.0

ACTIVITY_FEATURES: tuple[str, ...] = (
    "user_watch:watch_minutes_7d",
    "user_watch:watch_minutes_28d",
    "user_watch:sessions_7d",
    "user_watch:sessions_28d",
    "user_watch:distinct_streamers_28d",
    "user_watch:days_since_active_28d",
    "user_profile:days_since_signup",
)
SPEND_FEATURES: tuple[str, ...] = (
    "user_gifts:gifts_count_7d",
    "user_gifts:gifts_count_28d",
    "user_gifts:gifts_sum_28d",
    "user_commerce:orders_28d",
    "user_commerce:spend_28d",
    "user_commerce:product_views_28d",
    "user_membership:membership_active",
    "user_membership:membership_fees_28d",
    "user_paid_content:paid_content_purchases_28d",
    "user_paid_content:paid_content_spend_28d",
)
FEATURES = (*ACTIVITY_FEATURES, *SPEND_FEATURES)
# Domain knowledge: more past spending signals a higher spend propensity.
INCREASING = (
    "user_gifts__gifts_count_28d",
    "user_commerce__orders_28d",
    "user_paid_content__paid_content_purchases_28d",
)
PARAMS = {"max_depth": 3, "learning_rate": 0.05, "n_estimators": 400, "min_child_weight": 5.0}


def purchase_labels(conn: Connection, window: LabelWindow, outcome: EventCount) -> pd.DataFrame:
    """Daily snapshots of active users; label = at least one outcome event in the next 14 days."""
    horizon = LabelWindow(window.start_ts, window.end_ts, HORIZON_DAYS * DAY_S)
    frame = user_snapshots(conn, snapshot_times(horizon), horizon_days=HORIZON_DAYS, outcome=outcome)
    frame["label"] = (frame["future_events"] > 0).astype("int64")
    return entity_split(frame.drop(columns=["future_active_days", "future_events"]), "user_key", SPLIT[0])


def purchase_truth(rows: pd.DataFrame, state: pd.DataFrame, rate: np.ndarray) -> dict[str, np.ndarray]:
    ts = rows["event_ts"].to_numpy("int64")
    truth = p_any_event(
        state["activity"].to_numpy("float64"),
        state["hazard"].to_numpy("float64"),
        churned_at(state, ts),
        ts,
        HORIZON_DAYS,
        rate,
    )
    return {"oracle": truth, "spend": state["spend"].to_numpy("float64")}
