"""ad_ctr: will this impression be clicked?

Examples are the impressions of validated partitions (tasks/models/families/ad_impressions.py);
scoring gives one per-user score for the reference impression described there.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Connection

from tasks.models.evaluation import binary_oracle
from tasks.models.families.ad_impressions import (
    CATEGORICAL,
    CLICK_HISTORY_INCREASING,
    CONTEXT,
    CTR_FEATURES,
    LABEL_SOURCES,
    METRICS,
    REFERENCE_CONTEXT,
    SLICES,
    impression_estimator,
    impression_labels,
    impression_policy,
)
from tasks.models.spec import BaseRate, LabelWindow, ModelSpec, Sampling, ScoringTarget


def ctr_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """ad_ctr examples: every impression, label = clicked."""
    return impression_labels(conn, window, clicked_only=False)


ad_ctr = ModelSpec(
    name="ad_ctr",
    kind="binary",
    description="Will this impression be clicked? One example per impression, label = clicked.",
    build_labels=ctr_labels,
    feature_refs=CTR_FEATURES,
    context_features=CONTEXT,
    categorical=CATEGORICAL,
    make_estimator=impression_estimator(CTR_FEATURES, CLICK_HISTORY_INCREASING),
    params={"max_depth": 2, "learning_rate": 0.05, "n_estimators": 800},
    baseline=BaseRate(),
    metrics=METRICS,
    primary_metric="auc",
    slices=SLICES,
    policy=impression_policy(auc_floor=0.62, ece_ceiling=0.01, max_ne=0.99),
    scoring=ScoringTarget(entity="user", key="user_key", context=REFERENCE_CONTEXT),
    label_sources=LABEL_SOURCES,
    training_days=21,
    oracle=binary_oracle("oracle_ad_impressions", "p_click"),
    # Clicks are a few percent of impressions: beyond the cap every click is kept and a share of
    # the unclicked impressions, the probabilities corrected back to the population's.
    sampling=Sampling("negatives"),
)
