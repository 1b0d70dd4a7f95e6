"""Estimator building blocks: input cleaning, a category-affinity feature and the boosted pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from xgboost import XGBClassifier

MISSING = "missing"  # the category a missing categorical value is encoded as

# Hyper-parameters of the booster, overridable per spec through ModelSpec.params.
BOOSTER_DEFAULTS: dict[str, Any] = {
    "n_estimators": 800,
    "learning_rate": 0.05,
    "max_depth": 4,
    "min_child_weight": 2.0,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "reg_lambda": 1.0,
    "early_stopping_rounds": 50,
}


class FrameCleaner(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Select the model's input columns in order: numbers as float64 (NaN), categories as text."""

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = ()) -> None:
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: Any = None) -> FrameCleaner:
        """Check the columns are present; nothing is learned."""
        self._check(X)
        self.n_features_in_ = len(self.numeric) + len(self.categorical)
        return self

    def _check(self, X: pd.DataFrame) -> None:
        missing = [c for c in [*self.numeric, *self.categorical] if c not in X.columns]
        if missing:
            raise ValueError(f"model input lacks columns {missing}")

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The cleaned input frame; every other column (keys, labels) is dropped."""
        self._check(X)
        out = {c: pd.to_numeric(X[c]).to_numpy("float64", na_value=np.nan) for c in self.numeric}
        for c in self.categorical:
            values = X[c].astype(object)
            out[c] = np.asarray(values.where(values.notna(), MISSING).astype(str), dtype=object)
        return pd.DataFrame(out, index=X.index)


class CategoryShare(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Add the row's share for the category named in another column (user interest in the ad's category)."""

    def __init__(
        self, category: str = "", shares: Mapping[str, str] | None = None, output: str = "category_share"
    ) -> None:
        self.category = category
        self.shares = shares
        self.output = output

    def fit(self, X: pd.DataFrame, y: Any = None) -> CategoryShare:
        """Nothing is learned."""
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The frame with the output column added (NaN for an unknown category or no share)."""
        shares = dict(self.shares or {})
        value = np.full(len(X), np.nan)
        categories = X[self.category].to_numpy()
        for category, column in shares.items():
            rows = categories == category
            value[rows] = X[column].to_numpy("float64", na_value=np.nan)[rows]
        return X.assign(**{self.output: value})


class Columns(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Keep the named columns, in order (a model that reads fewer inputs than its spec retrieves)."""

    def __init__(self, columns: Sequence[str] = ()) -> None:
        self.columns = columns

    def fit(self, X: pd.DataFrame, y: Any = None) -> Columns:
        """Check the columns are present; nothing is learned (n_features_in_ marks it fitted)."""
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise ValueError(f"model input lacks columns {missing}")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The frame cut to the named columns."""
        return X[list(self.columns)]


def make_boosted_pipeline(
    params: Mapping[str, Any],
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    affinity: CategoryShare | None = None,
    increasing: Sequence[str] = (),
    keep: Sequence[str] | None = None,
) -> Pipeline:
    """inputs → (affinity) → (keep) → one-hot categories → XGBoost (hist, 2 threads, early stopping).

    ``keep``: the only columns the booster reads, chosen after the affinity step (None: all).
    """
    booster_params = {**BOOSTER_DEFAULTS, **{k: v for k, v in params.items() if k != "seed"}}
    monotone = {c: 1 for c in increasing}  # domain knowledge: more past response, more response
    steps: list[tuple[str, Any]] = [("inputs", FrameCleaner(tuple(numeric), tuple(categorical)))]
    if affinity is not None:
        steps.append(("affinity", affinity))
    if keep is not None:
        steps.append(("keep", Columns(tuple(keep))))
        categorical = [c for c in categorical if c in keep]
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(categorical))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    steps.append(("encode", encode))
    booster = XGBClassifier(
        objective="binary:logistic",
        eval_metric="logloss",
        tree_method="hist",
        n_jobs=2,
        random_state=int(params.get("seed", 0)),
        monotone_constraints=monotone or None,
        **booster_params,
    )
    steps.append(("booster", booster))
    return Pipeline(steps)
