"""Behavioural tests of a trained ad_ctr (directional and invariance), Made-With-ML style."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.models.catalog import get_spec
from tasks.models.evaluation import predict
from tests.models.conftest import Warehouse


@pytest.mark.parametrize(
    ("column", "factor"),
    [("user_ads__ad_clicks_28d", 3), ("user_ads__ad_ctr_smoothed_28d", 3), ("user_ads__ad_clicks_7d", 3)],
)
def test_more_past_clicks_means_higher_ctr(warehouse: Warehouse, column: str, factor: int) -> None:
    spec = get_spec("ad_ctr")
    rows = warehouse.trained.holdout.copy()
    rows[column] = rows[column].fillna(0)
    before = predict(spec, warehouse.trained.pipeline, rows)
    more = rows.copy()
    more[column] = (rows[column] + 0.01) * factor
    after = predict(spec, warehouse.trained.pipeline, more)
    assert (after >= before - 1e-9).all()
    assert after.mean() >= before.mean()


def test_user_key_is_not_an_input(warehouse: Warehouse) -> None:
    spec = get_spec("ad_ctr")
    assert "user_key" not in spec.input_columns
    rows = warehouse.trained.holdout
    renamed = rows.assign(user_key=[f"other-{i}" for i in range(len(rows))], example_id="x")
    np.testing.assert_array_equal(
        predict(spec, warehouse.trained.pipeline, rows), predict(spec, warehouse.trained.pipeline, renamed)
    )
