"""ad_cvr's booster: it reads only the conversion drivers, and each of them can only raise the probability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.featurestore.views import CATEGORY_VOCABULARY
from tasks.models.catalog import get_spec
from tasks.models.estimator import as_estimator
from tasks.models.evaluation import predict
from tasks.models.families.ad_impressions import CONVERSION_INPUTS

SPEND = "user_commerce__spend_28d"


def _clicks(n: int, seed: int) -> pd.DataFrame:
    """Clicked impressions whose conversions follow the category share and spend (a small truth)."""
    spec = get_spec("ad_cvr")
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.random(n) for c in spec.input_columns})
    frame["device"] = rng.choice(["ios", "android", "web"], n)
    frame["user_profile__age_band"] = rng.choice(["18-24", "25-34"], n)
    frame["ad_category"] = rng.choice(list(CATEGORY_VOCABULARY), n)
    frame[SPEND] = rng.lognormal(0.0, 1.0, n)
    share = np.choose(
        pd.Categorical(frame["ad_category"], categories=list(CATEGORY_VOCABULARY)).codes,
        [frame[f"user_category_mix__{c}_share_28d"].to_numpy() for c in CATEGORY_VOCABULARY],
    )
    p = 1 / (1 + np.exp(-(-1.8 + 2.0 * share + 0.5 * np.log(frame[SPEND].to_numpy()))))
    return frame.assign(label=(rng.random(n) < p).astype("int64"))


@pytest.fixture(scope="module")
def fitted() -> object:
    spec = get_spec("ad_cvr")
    train, valid = _clicks(3000, 1), _clicks(800, 2)
    model = spec.make_estimator({**spec.params, "seed": spec.seed})
    as_estimator(model, "binary").fit(
        train[spec.input_columns], train["label"], eval_set=[(valid[spec.input_columns], valid["label"])]
    )
    return model


def test_booster_reads_only_the_conversion_inputs(fitted: object) -> None:
    spec = get_spec("ad_cvr")
    assert list(fitted.steps[-1][1].get_booster().feature_names) == list(CONVERSION_INPUTS)  # type: ignore[attr-defined]
    rows = _clicks(500, 3)
    other = rows.assign(position=9, hour=3, device="web", user_watch__watch_minutes_28d=1e6)
    np.testing.assert_array_equal(predict(spec, fitted, rows), predict(spec, fitted, other))


@pytest.mark.parametrize("column", [SPEND, "user_commerce__orders_28d", "ad_activity__ctr_7d"])
def test_more_of_a_driver_never_lowers_the_probability(fitted: object, column: str) -> None:
    spec = get_spec("ad_cvr")
    rows = _clicks(500, 4)
    before = predict(spec, fitted, rows)
    after = predict(spec, fitted, rows.assign(**{column: rows[column] * 3 + 0.01}))
    assert (after >= before - 1e-9).all()


def test_validation_week_is_judged_by_an_earlier_fit() -> None:
    assert get_spec("ad_cvr").forward_cross_fit
    assert not get_spec("ad_ctr").forward_cross_fit  # its holdout decides every bound alone
