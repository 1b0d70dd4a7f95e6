"""gift_revenue: each streamer's gift (tipping) revenue over the next 7 days.

Examples are daily streamer snapshots (tasks/models/families/snapshots.py): one row per (streamer
onboarded before T, day T at 00:00 UTC); label = the sum of ``raw_gifts.amount`` sent to the
streamer in [T, T + 7 d). Tips are heavy-tailed (a tenth come from a Pareto tail) and many
streamer-weeks earn nothing, so the booster fits a Tweedie objective (power 1.5, log link): a
point mass at zero plus a skewed positive part, predicting the expected revenue.

Baselines: the last 7 days' revenue (label-frame column ``gifts_last_7d``) and the 28-day run
rate, 7 x the daily average over the last 28 days floored at 1 (``gifts_run_rate_7d``). The
first predicts zero for a streamer quiet last week, which the deviance punishes without bound
(its deviance is huge and beating it says little), so the gate also requires beating the second
on deviance and on ranking (normalised Gini). No oracle: the
simulator keeps no true expected revenue per streamer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sqlalchemy import Connection
from xgboost import XGBRegressor

from tasks.featurestore.definitions import DAY_S
from tasks.models.families.snapshots import (
    STREAMER_CONTEXT,
    entity_split,
    snapshot_times,
    streamer_scoring_frame,
    streamer_snapshots,
)
from tasks.models.families.tabular import BOOSTER_DEFAULTS, FrameCleaner
from tasks.models.plots import revenue_plots
from tasks.models.spec import (
    ChangeThreshold,
    ColumnBaseline,
    LabelWindow,
    ModelSpec,
    PromotionPolicy,
    Sampling,
    ScoringTarget,
    SignificanceRule,
    ValueThreshold,
)

HORIZON_DAYS = 7
SPLIT = (0.6, 0.15, 0.25)  # by streamer and time, as the user outcome models (families/user_outcomes.py)
TWEEDIE_POWER = 1.5  # the same power as the tweedie_deviance metric
MAX_SCORE = 1e12  # scores are revenues: non-negative, no natural upper bound
FEATURES: tuple[str, ...] = (
    "streamer_activity:unique_viewers_7d",
    "streamer_activity:watch_minutes_7d",
    "streamer_activity:gifts_count_7d",
    "streamer_activity:followers_gained_7d",
    "streamer_activity:live_hours_7d",
    "streamer_followers:followers_total",
)
CONTEXT = (*STREAMER_CONTEXT, "category")
CATEGORICAL = ("category",)
# Domain knowledge: a bigger audience and steadier tipping mean more tips next week.
INCREASING = ("streamer_activity__unique_viewers_7d", "gift_count_28d", "gifts_per_day_28d")
METRICS = ("tweedie_deviance", "gini_normalized", "rmse_log1p", "pred_obs_ratio", "rmse", "mae")


def gift_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """Daily streamer snapshots; label = gift revenue in the next 7 days."""
    horizon = LabelWindow(window.start_ts, window.end_ts, HORIZON_DAYS * DAY_S)
    frame = streamer_snapshots(conn, snapshot_times(horizon), horizon_days=HORIZON_DAYS)
    return entity_split(frame.rename(columns={"future_gifts": "label"}), "streamer_id", SPLIT[0])


def make_tweedie_pipeline(params: Mapping[str, Any]) -> Pipeline:
    """inputs → one-hot category → XGBoost regressor with a Tweedie objective (early stopping)."""
    booster_params = {**BOOSTER_DEFAULTS, **{k: v for k, v in params.items() if k != "seed"}}
    numeric = [*(r.replace(":", "__") for r in FEATURES), *STREAMER_CONTEXT]
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(CATEGORICAL))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    booster = XGBRegressor(
        objective="reg:tweedie",
        tweedie_variance_power=TWEEDIE_POWER,
        eval_metric=f"tweedie-nloglik@{TWEEDIE_POWER}",
        tree_method="hist",
        n_jobs=2,
        random_state=int(params.get("seed", 0)),
        monotone_constraints={c: 1 for c in INCREASING},
        **booster_params,
    )
    return Pipeline(
        [("inputs", FrameCleaner(tuple(numeric), CATEGORICAL)), ("encode", encode), ("booster", booster)]
    )


RUN_RATE = ColumnBaseline("gifts_run_rate_7d")  # 7 x the 28-day daily average (floored)

gift_revenue = ModelSpec(
    name="gift_revenue",
    kind="regression",
    description=(
        "Each streamer's gift (tipping) revenue over the next 7 days. One example per (streamer, day at "
        "00:00 UTC); label = gift amount in [T, T + 7 d)."
    ),
    build_labels=gift_labels,
    feature_refs=FEATURES,
    context_features=CONTEXT,
    categorical=CATEGORICAL,
    make_estimator=make_tweedie_pipeline,
    params={"max_depth": 3, "learning_rate": 0.05, "n_estimators": 400, "min_child_weight": 5.0},
    baseline=ColumnBaseline("gifts_last_7d"),
    extra_baselines=(RUN_RATE,),
    metrics=METRICS,
    primary_metric="tweedie_deviance",
    slices=("category", "region"),
    policy=PromotionPolicy(
        value_thresholds=(
            # Decided at the demo's values with 22 and 740 holdout streamers (resampled as units; the
            # demo's cross-fitted holdout has 312, so the calibration band is undecided there).
            ValueThreshold("gini_normalized", lower=0.5),
            ValueThreshold("pred_obs_ratio", lower=0.7, upper=1.3),
        ),
        change_thresholds=(
            ChangeThreshold("tweedie_deviance", slack=-1.0),
            ChangeThreshold("gini_normalized", slack=-0.03),
        ),
        # Significance against the run rate: last week's gifts (the primary baseline) predict 0 for
        # every streamer who was silent last week, an infinite Tweedie deviance on any who then
        # earn, so "better than it" holds for any model and proves nothing.
        significance=(SignificanceRule("tweedie_deviance", against=str(RUN_RATE), confidence=0.95),),
        # Not rmse_log1p: a mean (Tweedie) forecast sits above the typical week of a skewed
        # streamer, so a median-like naive rate can win on log error while losing on revenue.
        beat_baseline=("tweedie_deviance", "gini_normalized"),
    ),
    scoring=ScoringTarget(entity="streamer", key="streamer_id", score_range=(0.0, MAX_SCORE)),
    label_sources=("raw_gifts", "raw_streamers", "raw_streams"),
    horizon_days=HORIZON_DAYS,
    training_days=28,
    resample_by="streamer_id",  # a streamer has several snapshots in the holdout
    split=SPLIT,
    score_cron="20 5 * * *",
    build_scoring_frame=streamer_scoring_frame,
    plots=revenue_plots,
    # A regression: beyond the cap whole streamers are kept (every snapshot of a kept streamer), which
    # keeps the revenue distribution and needs no correction.
    sampling=Sampling("entity", column="streamer_id"),
)
