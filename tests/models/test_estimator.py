"""The estimator contract: every catalog estimator follows it (and scikit-learn's conventions), the
adapter for plain scikit-learn models, and the typed baselines."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from tasks.models.catalog import MODELS
from tasks.models.estimator import Estimator, SklearnEstimator, as_estimator, fit_summary
from tasks.models.evaluation import baseline_frame, baseline_names, predict_frame
from tasks.models.families.tabular import CategoryShare, FrameCleaner, make_boosted_pipeline
from tasks.models.spec import BaseRate, ColumnBaseline


def _same(a: Any, b: Any) -> bool:
    """Structural equality of parameter values: estimators by type and parameters, arrays by value."""
    if hasattr(a, "get_params") and not isinstance(a, type):
        return type(a) is type(b) and _same(a.get_params(deep=False), b.get_params(deep=False))
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True  # e.g. XGBoost's missing=nan
    try:
        equal = a == b
        if isinstance(equal, bool):
            return equal
    except (TypeError, ValueError):
        pass
    return pickle.dumps(a) == pickle.dumps(b)


# Every spec, none skipped: ProductRanker, LiveStreamRanker, CapacityPlanner and the forecasters are
# brought to scikit-learn's conventions by the work on their own modules and pass once it is done.
@pytest.mark.parametrize("name", sorted(MODELS))
def test_catalog_estimator_follows_the_contract_and_clones(name: str) -> None:
    spec = MODELS[name]
    model = spec.make_estimator({**spec.params, "seed": spec.seed})
    estimator = as_estimator(model, spec.kind)
    assert isinstance(estimator, Estimator)
    assert "eval_set" in inspect.signature(estimator.fit).parameters
    if isinstance(estimator, SklearnEstimator):  # a plain scikit-learn model, read through the adapter
        assert estimator.model is model and isinstance(model, Pipeline)
    copy = clone(model)
    assert copy is not model and type(copy) is type(model)
    assert _same(copy.get_params(deep=False), model.get_params(deep=False))
    assert _same(clone(copy).get_params(), copy.get_params())


@pytest.mark.parametrize(
    "transformer", [FrameCleaner(("a",), ("c",)), CategoryShare("c", {"x": "a"}, "share")]
)
def test_tabular_transformers_clone_unchanged(transformer: Any) -> None:
    copy = clone(transformer)
    assert _same(copy.get_params(), transformer.get_params())


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["u", "v"], n)})
    y = (x["a"] + 0.5 * (x["c"] == "u") + rng.normal(scale=0.7, size=n) > 0).astype(int).to_numpy()
    return x, y


def test_adapter_fits_the_pipeline_in_place_with_early_stopping() -> None:
    x, y = _frame(600, 1)
    xv, yv = _frame(200, 2)
    params = {"n_estimators": 300, "learning_rate": 0.3, "early_stopping_rounds": 5, "seed": 3}
    pipeline = make_boosted_pipeline(params, numeric=("a", "b"), categorical=("c",))
    adapter = as_estimator(pipeline, "binary")
    assert isinstance(adapter, SklearnEstimator) and adapter.fit(x, y, eval_set=[(xv, yv)]) is adapter
    out = adapter.predict_frame(xv)
    assert list(out.columns) == ["prediction"]
    # The wrapped pipeline itself (what MLflow logs and a consumer loads) is the fitted model.
    np.testing.assert_array_equal(out["prediction"].to_numpy(), pipeline.predict_proba(xv)[:, 1])
    best = fit_summary(adapter)["best_iteration"]
    assert best is not None and best < 299  # stopped early on the validation split
    # Without a validation split the booster is fitted whole and early stopping is off.
    whole = make_boosted_pipeline(
        {**params, "early_stopping_rounds": None}, numeric=("a", "b"), categorical=("c",)
    )
    assert fit_summary(as_estimator(whole, "binary").fit(x, y)) == {"best_iteration": None}


def test_adapter_regression_predicts_with_predict() -> None:
    x, y = _frame(100, 4)
    model = LinearRegression()
    adapter = as_estimator(model, "regression").fit(x[["a", "b"]], y, eval_set=[(x[["a", "b"]], y)])
    np.testing.assert_allclose(
        adapter.predict_frame(x[["a", "b"]])["prediction"], model.predict(x[["a", "b"]])
    )
    assert fit_summary(adapter) == {"best_iteration": None}


def test_a_contract_estimator_is_used_as_it_is() -> None:
    spec = MODELS["user_segments"]
    model = spec.make_estimator({**spec.params, "seed": spec.seed})
    assert as_estimator(model, spec.kind) is model


def test_typed_baselines_keep_their_stored_names() -> None:
    assert str(BaseRate()) == "base_rate"
    assert str(ColumnBaseline("snaive_7d")) == "column:snaive_7d"
    assert ColumnBaseline("snaive_7d") == ColumnBaseline("snaive_7d") != ColumnBaseline("snaive_24h")
    for spec in MODELS.values():
        assert all(isinstance(b, BaseRate | ColumnBaseline) for b in baseline_names(spec))


def test_baseline_frames() -> None:
    spec = MODELS["traffic_forecast"]
    train = pd.DataFrame({"label": [1.0, 3.0]})
    holdout = pd.DataFrame({"label": [0.0, 0.0, 0.0], "s": [1.0, 2.0, 3.0], "s_lower": [0.0, 1.0, 2.0]})
    assert baseline_frame(spec, BaseRate(), train, holdout)["prediction"].tolist() == [2.0, 2.0, 2.0]
    column = baseline_frame(spec, ColumnBaseline("s"), train, holdout)
    assert column.to_dict("list") == {"prediction": [1.0, 2.0, 3.0], "lower": [0.0, 1.0, 2.0]}
    with pytest.raises(ValueError, match="'t' is not in the label frame"):
        baseline_frame(spec, ColumnBaseline("t"), train, holdout)
    with pytest.raises(TypeError, match="not a baseline declaration"):  # names are never parsed
        baseline_frame(spec, "column:s", train, holdout)  # type: ignore[arg-type]


def test_predict_frame_checks_the_contract_output() -> None:
    class Short:
        """Follows the contract, but answers one row short."""

        def fit(self, X: pd.DataFrame, y: Any, eval_set: Any = None) -> Short:
            return self

        def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"prediction": np.zeros(len(X) - 1)})

    spec = MODELS["ad_ctr"]
    frame = pd.DataFrame({c: [0.0, 1.0] for c in spec.input_columns})
    with pytest.raises(ValueError, match="a 'prediction' per row"):
        predict_frame(spec, Short(), frame)
