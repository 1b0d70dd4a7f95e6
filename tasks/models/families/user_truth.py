"""The simulator's truth about users, turned into true outcome probabilities (evaluation only).

Only the ``oracle`` callables of the user models read this; labels, features and scoring never
do. Each probability follows the simulator's generative story (tasks/simulate) from the user's
latent state at the snapshot T — daily activity ``a`` (x1.2 at weekends), daily churn hazard
``h``, spend propensity ``s``, and whether the user had already churned by T — with days treated
as independent: a user alive and active on day d of the horizon does the model's thing with a
per-active-day probability ``r``. Real data has no oracle rows and gets an empty report.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sqlalchemy import Engine, select

from tasks.featurestore.definitions import DAY_S
from tasks.schema import oracle_users

WEEKEND_ACTIVITY = 1.2  # tasks/simulate/activity.py
KEY_CHUNK = 5_000  # bound parameters per IN list
Array = np.ndarray


def read_user_truth(engine: Engine, keys: pd.Series) -> pd.DataFrame:
    """oracle_users rows (activity, spend_propensity, churn_hazard, churned_ts) for the given keys."""
    unique = sorted(set(keys.astype(str)))
    t = oracle_users
    parts = []
    with engine.connect() as conn:
        for i in range(0, len(unique), KEY_CHUNK):
            query = select(t.c.user_key, t.c.activity, t.c.spend_propensity, t.c.churn_hazard, t.c.churned_ts)
            rows = conn.execute(query.where(t.c.user_key.in_(unique[i : i + KEY_CHUNK]))).fetchall()
            parts.append(
                pd.DataFrame(rows, columns=["user_key", "activity", "spend", "hazard", "churned_ts"])
            )
    columns = ["user_key", "activity", "spend", "hazard", "churned_ts"]
    truth = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return truth.set_index("user_key")


def _daily_activity(activity: Array, event_ts: Array, day: int) -> Array:
    weekday = ((event_ts // DAY_S + day + 3) % 7).astype(np.int64)  # 1970-01-01 was a Thursday
    return np.minimum(activity * np.where(weekday >= 5, WEEKEND_ACTIVITY, 1.0), 1.0)


def p_inactive(activity: Array, hazard: Array, churned: Array, event_ts: Array, horizon_days: int) -> Array:
    """P(no session in the horizon): churn on day d (active before it, maybe that morning) or never."""
    alive = np.ones_like(activity)
    silent = np.ones_like(activity)
    total = np.zeros_like(activity)
    for day in range(horizon_days):
        a = _daily_activity(activity, event_ts, day)
        total += alive * hazard * silent * (1 - a / 2)  # churning mid-day: half a day's chance to show
        alive = alive * (1 - hazard)
        silent = silent * (1 - a)
    total += alive * silent
    return np.where(churned, 1.0, total)


def p_any_event(
    activity: Array, hazard: Array, churned: Array, event_ts: Array, horizon_days: int, rate: Array
) -> Array:
    """P(at least one event in the horizon) at ``rate`` per day the user is alive and active."""
    none = np.ones_like(activity)
    alive = np.ones_like(activity)
    for day in range(horizon_days):
        none = none * (1 - alive * _daily_activity(activity, event_ts, day) * rate)
        alive = alive * (1 - hazard)
    return np.where(churned, 0.0, 1 - none)


def _auc(y: Array, score: Array) -> float:
    """ROC AUC; NaN with one class only."""
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


TruthFn = Callable[[pd.DataFrame, pd.DataFrame], dict[str, Array]]


def user_oracle(truth_fn: TruthFn) -> Callable[[Engine, pd.DataFrame, pd.DataFrame], dict[str, float]]:
    """An oracle: AUC of the true probability (and of other truth scores) next to the model's."""

    def oracle(engine: Engine, holdout: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, float]:
        if holdout.empty:
            return {}
        truth = read_user_truth(engine, holdout["user_key"]).reindex(holdout["user_key"].astype(str))
        known = truth["activity"].notna().to_numpy()
        if not known.any():
            return {}
        rows, state = holdout[known], truth[known]
        scores = truth_fn(rows, state)
        y = rows["label"].to_numpy("float64")
        model = predictions["prediction"].to_numpy("float64")[known]
        report = {"n": float(known.sum()), "coverage": float(known.mean()), "model_auc": _auc(y, model)}
        for name, score in scores.items():
            report[f"{name}_auc"] = _auc(y, score)
        report["auc_ratio"] = report["model_auc"] / report["oracle_auc"]
        # Distance to the truth itself: mean absolute error of the predicted probability.
        report["prob_mae"] = float(np.mean(np.abs(model - scores["oracle"])))
        return report

    return oracle


def churned_at(state: pd.DataFrame, event_ts: Array) -> Array:
    """Whether each user had already churned at the snapshot (latent: no event says so)."""
    churned_ts = pd.to_numeric(state["churned_ts"], errors="coerce").to_numpy("float64")
    return np.asarray(~np.isnan(churned_ts) & (churned_ts <= event_ts), dtype=bool)
