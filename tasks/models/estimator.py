"""The estimator contract: the one interface training and evaluation call, whatever the model.

An estimator is fitted on the training split (with the validation split for early stopping) and
answers with a prediction *frame*. Every estimator class follows scikit-learn's conventions too:
parameters stored unchanged in ``__init__``, fitted state in attributes ending in ``_``, and
``get_params``/``sklearn.base.clone`` work (inherit ``sklearn.base.BaseEstimator``).

A plain scikit-learn pipeline, classifier or regressor does not know the contract; training and
evaluation wrap it in :class:`SklearnEstimator` (see :func:`as_estimator`). The wrapper shares the
model's objects, so fitting through it fits the model in place, and the model itself, not the
wrapper, is what is logged to MLflow: a consumer loads a plain pipeline and calls
``predict_proba`` on it as before.

Two capabilities are optional and declared here as well: ``best_iteration`` (an early-stopped
booster's chosen iteration) and ``fitted_params()`` (what the fit itself chose, e.g. the number of
segments); training records both with the run's parameters (see :func:`fit_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from xgboost import XGBModel

from tasks.models.spec import TaskKind

EvalSet = Sequence[tuple[pd.DataFrame, Any]]


@runtime_checkable
class Estimator(Protocol):
    """What training and evaluation require of a model: ``fit`` and ``predict_frame``."""

    def fit(self, X: pd.DataFrame, y: Any, eval_set: EvalSet | None = None) -> Any:
        """Fit on the inputs ``X`` (the spec's input columns, in order) and labels ``y``.

        ``eval_set`` holds (inputs, labels) pairs of the validation split, the first of which an
        estimator that early-stops judges its iterations on; one that cannot use it ignores it.
        Fitting is deterministic for the seed in the estimator's parameters. Returns the estimator.
        """
        ...

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """One row per row of ``X``: a float ``prediction`` column (the positive-class probability
        of a classifier, the point forecast, the ranking score, the segment id, the allocated
        capacity…), optionally ``lower``/``upper`` (an interval) and any other columns the
        metrics of the model's kind read (embeddings, quantiles…)."""
        ...


@runtime_checkable
class EarlyStopped(Protocol):
    """An estimator that reports the boosting iteration early stopping chose."""

    @property
    def best_iteration(self) -> int | None:
        """The chosen iteration, or None when the fit did not early-stop."""
        ...


@runtime_checkable
class ReportsFit(Protocol):
    """An estimator that reports what its fit chose, to be logged with the run's parameters."""

    def fitted_params(self) -> dict[str, Any]:
        """Parameter name -> value chosen by the fit (e.g. the number of segments)."""
        ...


def _booster_best_iteration(booster: XGBModel) -> int | None:
    """An XGBoost model's early-stopped iteration (xgboost raises when there was no early stopping)."""
    try:
        return int(booster.best_iteration)
    except AttributeError:
        return None


class SklearnEstimator:
    """The contract for a plain scikit-learn pipeline, classifier or regressor.

    ``fit`` early-stops an XGBoost final step on the validation split: the preprocessing steps
    are fitted on the training split, then the booster on their output with the transformed
    validation split as its ``eval_set``. Any other model is fitted whole, without the validation
    split. ``predict_frame`` gives the positive-class probability (``predict_proba[:, 1]``) for a
    binary model and ``predict`` (its last column, when it gives several) for any other kind.
    """

    def __init__(self, model: Any, kind: TaskKind) -> None:
        self.model = model
        self.kind = kind

    @property
    def _final(self) -> Any:
        return self.model.steps[-1][1] if isinstance(self.model, Pipeline) else self.model

    def fit(self, X: pd.DataFrame, y: Any, eval_set: EvalSet | None = None) -> SklearnEstimator:
        """Fit the wrapped model in place (see the class docstring)."""
        final = self._final
        if not eval_set or not isinstance(final, XGBModel):
            self.model.fit(X, y)
        elif not isinstance(self.model, Pipeline):
            final.fit(X, y, eval_set=list(eval_set))
        elif len(self.model.steps) < 2:
            self.model.fit(X, y)
        else:
            prep = self.model[:-1]  # shares its step objects with the pipeline: fitted in place
            x_train = prep.fit_transform(X, y)
            valid = [(prep.transform(x), v) for x, v in eval_set]
            final.fit(x_train, y, eval_set=valid, verbose=False)
        return self

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """The ``prediction`` column (see the class docstring)."""
        if self.kind == "binary":
            values = np.asarray(self.model.predict_proba(X)[:, 1], dtype="float64")
        else:
            raw = np.asarray(self.model.predict(X), dtype="float64")
            values = raw.reshape(len(X), -1)[:, -1] if raw.ndim > 1 else raw
        return pd.DataFrame({"prediction": values})

    @property
    def best_iteration(self) -> int | None:
        """The XGBoost final step's early-stopped iteration; None for any other model."""
        final = self._final
        return _booster_best_iteration(final) if isinstance(final, XGBModel) else None


def as_estimator(model: Any, kind: TaskKind) -> Estimator:
    """The model itself when it follows the contract, else the model wrapped in SklearnEstimator."""
    if isinstance(model, Estimator):
        return model
    return SklearnEstimator(model, kind)


def fit_summary(estimator: Estimator) -> dict[str, Any]:
    """What a fit chose: ``best_iteration`` (None without early stopping), then ``fitted_params()``."""
    best = estimator.best_iteration if isinstance(estimator, EarlyStopped) else None
    chosen = estimator.fitted_params() if isinstance(estimator, ReportsFit) else {}
    return {"best_iteration": None if best is None else int(best), **chosen}
