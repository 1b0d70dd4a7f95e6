"""product_recs' re-ranker: XGBoost ``rank:ndcg`` over candidate rows, a scikit-learn estimator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from xgboost import XGBRanker

GROUP = "query_id"  # the column that groups candidate rows into one query (user, cut-off)

RANKER_DEFAULTS: dict[str, Any] = {
    "n_estimators": 400,
    "learning_rate": 0.05,
    "max_depth": 4,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "early_stopping_rounds": 40,
    # One sampled pair per relevant row, averaged: on sparse purchase labels it beat top-k pairs.
    "lambdarank_pair_method": "mean",
    "lambdarank_num_pair_per_sample": 1,
}


PRIOR_FLOOR = 1e-6  # the prior's value where it is missing or zero (a product on no shelf)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


class ProductRanker(BaseEstimator):  # type: ignore[misc]
    """XGBoost rank:ndcg over candidate rows grouped by ``query_id``; scores in (0, 1) by a sigmoid.

    ``params`` (XGBoost settings over RANKER_DEFAULTS, plus ``seed`` and ``n_jobs``) and
    ``group_column`` are stored as given; ``fit`` sets ``features_``, ``model_`` and
    ``best_iteration_``. It drops queries without a bought candidate (they carry no ranking
    signal) and sorts rows by query, as XGBoost requires; ``eval_set`` drives early stopping on
    NDCG@10.

    With ``params["prior"]`` naming a feature column, the boosting starts from log(prior) as
    every row's base margin and the trees learn corrections to it: on a few hundred buyers a day
    a ranking learnt from scratch is noisy (early stopping after a handful of trees), while the
    prior (the expected share of the user's purchases) is already a good ranking.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, group_column: str = GROUP) -> None:
        self.params = params
        self.group_column = group_column

    @property
    def best_iteration(self) -> int | None:
        """The early-stopped iteration (None before fitting or without early stopping)."""
        return getattr(self, "best_iteration_", None)

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.features_ if c not in X.columns]
        if missing:
            raise ValueError(f"ranker input lacks columns {missing}")
        return pd.DataFrame(
            {c: pd.to_numeric(X[c]).to_numpy("float64", na_value=np.nan) for c in self.features_},
            index=X.index,
        )

    def _grouped(self, X: pd.DataFrame, y: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        labels = np.asarray(y, dtype="float64")
        qid = X[self.group_column].to_numpy("int64")
        positive = pd.Series(labels).groupby(qid).transform("max").to_numpy() > 0
        order = np.argsort(qid[positive], kind="stable")
        rows = np.flatnonzero(positive)[order]
        return self._matrix(X.iloc[rows]), labels[rows], qid[rows]

    def fit(
        self, X: pd.DataFrame, y: Any, eval_set: Sequence[tuple[pd.DataFrame, Any]] | None = None
    ) -> ProductRanker:
        """Fit the ranker; early stopping on the first eval_set pair when it holds a bought candidate."""
        if self.group_column not in X.columns:
            raise ValueError(f"ranker input lacks the query column {self.group_column!r}")
        given = dict(self.params or {})
        self.features_ = [c for c in X.columns if c != self.group_column]
        x_train, y_train, q_train = self._grouped(X, y)
        if len(y_train) == 0:
            raise ValueError("no query with a bought candidate to learn from")
        params = {**RANKER_DEFAULTS, **{k: v for k, v in given.items() if k not in ("seed", "prior")}}
        evals = []
        if eval_set:
            x_valid, y_valid, q_valid = self._grouped(*eval_set[0])
            if len(y_valid):
                evals = [(x_valid, y_valid, q_valid)]
        if not evals:
            params["early_stopping_rounds"] = None
        model = XGBRanker(
            objective="rank:ndcg",
            eval_metric="ndcg@10",
            tree_method="hist",
            n_jobs=int(given.get("n_jobs", 1)),
            random_state=int(given.get("seed", 0)),
            **params,
        )
        kwargs: dict[str, Any] = {"qid": q_train, "verbose": False}
        if self._prior() is not None:
            kwargs["base_margin"] = self._margin(x_train)
        if evals:
            kwargs["eval_set"] = [(e[0], e[1]) for e in evals]
            kwargs["eval_qid"] = [e[2] for e in evals]
            if self._prior() is not None:
                kwargs["base_margin_eval_set"] = [self._margin(e[0]) for e in evals]
        model.fit(x_train, y_train, **kwargs)
        self.model_ = model
        best = getattr(model, "best_iteration", None) if evals else None
        self.best_iteration_ = None if best is None else int(best)
        return self

    def _prior(self) -> str | None:
        prior = (self.params or {}).get("prior")
        return None if prior is None else str(prior)

    def _margin(self, X: pd.DataFrame) -> np.ndarray | None:
        """log(prior) per row (the floor where it is missing), or None without a prior."""
        prior = self._prior()
        if prior is None:
            return None
        if prior not in X.columns:
            raise ValueError(f"ranker input lacks the prior column {prior!r}")
        values = pd.to_numeric(X[prior]).to_numpy("float64", na_value=np.nan)
        return np.log(np.maximum(np.nan_to_num(values, nan=0.0), PRIOR_FLOOR))

    def _fitted(self) -> XGBRanker:
        model = getattr(self, "model_", None)
        if model is None:
            raise ValueError("ProductRanker is not fitted")
        return model

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Raw ranking margins (best iteration when early-stopped)."""
        model = self._fitted()
        matrix = self._matrix(X)
        return np.asarray(model.predict(matrix, base_margin=self._margin(matrix)), dtype="float64")

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Scores in (0, 1): the sigmoid of the margin, so order within a query is the ranker's."""
        return _sigmoid(self.decision_function(X))

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """The prediction frame the lifecycle reads: one "prediction" column."""
        return pd.DataFrame({"prediction": self.predict(X)}, index=X.index)

    def get_booster(self) -> Any:
        """The fitted booster (for feature-importance pictures)."""
        return self._fitted().get_booster()


def make_estimator(params: Mapping[str, Any]) -> ProductRanker:
    """A fresh re-ranker for the spec's params."""
    return ProductRanker(params)
