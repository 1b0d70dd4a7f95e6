"""Reference profiles: bins, sketch, frequencies, and the JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.monitoring.profile import (
    OTHER,
    CategoricalProfile,
    FrameProfile,
    NumericProfile,
    column_from_dict,
    profile_column,
    profile_frame,
)


def _frame(n: int = 20_000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 2.0, n)
    x[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "count": rng.poisson(0.3, n),
            "flag": (rng.random(n) < 0.95).astype("int64"),
            "constant": np.full(n, 7.5),
            "empty": pd.Series([None] * n, dtype="float64"),
            "region": pd.Series(rng.choice(["eu", "us", "apac"], n, p=[0.5, 0.3, 0.2])).where(
                rng.random(n) > 0.1
            ),
            "active": rng.random(n) < 0.4,
        }
    )


def test_profile_round_trips_through_json_without_nan_or_infinity() -> None:
    profile = profile_frame(_frame(), categorical=["count"])
    text = json.dumps(profile.to_dict(), allow_nan=False)  # raises on NaN / infinity
    assert FrameProfile.from_dict(json.loads(text)) == profile
    assert len(text) < 60_000  # a profile, not the rows


def test_numeric_bins_are_reference_deciles_with_open_ends() -> None:
    frame = _frame()
    x = profile_frame(frame, ["x"]).columns["x"]
    assert isinstance(x, NumericProfile)
    values = frame["x"].dropna().to_numpy()
    assert x.count == len(values) and x.nulls == frame["x"].isna().sum()
    assert x.null_share == pytest.approx(frame["x"].isna().mean())
    assert x.mean == pytest.approx(values.mean()) and x.std == pytest.approx(values.std())
    # min, nine deciles, max: 11 edges, 12 bins, the outer two (beyond the training range) ~empty
    assert len(x.edges) == 11 and len(x.shares) == 12
    assert x.edges[0] == values.min() and x.edges[-1] == values.max()
    np.testing.assert_allclose(x.edges[1:-1], np.quantile(values, np.arange(1, 10) / 10))
    assert x.shares[0] == pytest.approx(1 / len(values)) and x.shares[-1] == 0
    np.testing.assert_allclose(x.shares[1:-1], [0.1 - 1 / len(values)] + [0.1] * 9, atol=2e-4)
    assert sum(x.shares) == pytest.approx(1.0)
    np.testing.assert_allclose(x.quantiles, np.quantile(values, (np.arange(100) + 0.5) / 100))


def test_discrete_and_constant_columns_keep_their_values_apart() -> None:
    profile = profile_frame(_frame(), ["flag", "constant", "count"])
    flag, constant, count = (profile.columns[c] for c in ("flag", "constant", "count"))
    assert isinstance(flag, NumericProfile) and isinstance(constant, NumericProfile)
    assert flag.edges == (0.0, 1.0)  # zeros, ones, above one
    assert flag.shares[0] == pytest.approx(0.05, abs=0.01) and flag.shares[2] == 0
    assert constant.edges[1] == 7.5 and constant.edges[0] < 7.5  # below, equal, above
    assert constant.shares == (0.0, 1.0, 0.0) and constant.std == 0.0
    assert isinstance(count, NumericProfile) and count.edges[0] == 0.0 and count.shares[0] > 0.6


def test_all_null_column_has_no_distribution() -> None:
    empty = profile_frame(_frame(), ["empty"]).columns["empty"]
    assert isinstance(empty, NumericProfile)
    assert empty.count == 0 and empty.null_share == 1.0
    assert empty.mean is None and empty.edges == () and empty.quantiles == ()


def test_categorical_frequencies_with_top_k_and_other_bucket() -> None:
    frame = _frame()
    region = profile_frame(frame, ["region"]).columns["region"]
    assert isinstance(region, CategoricalProfile)
    shares = frame["region"].value_counts(normalize=True)
    assert region.frequencies == pytest.approx(shares.to_dict())
    assert region.null_share == pytest.approx(frame["region"].isna().mean())
    assert region.complete and region.other_share == 0
    top1 = profile_column(frame["region"], top_k=1)
    assert isinstance(top1, CategoricalProfile)
    assert list(top1.frequencies) == ["eu"] and not top1.complete
    assert top1.other_share == pytest.approx(1 - shares["eu"])
    assert OTHER not in top1.frequencies
    active = profile_frame(frame, ["active"]).columns["active"]  # booleans are categories
    assert isinstance(active, CategoricalProfile) and set(active.frequencies) == {"True", "False"}


def test_prediction_column_profile_round_trips() -> None:
    scores = pd.Series(np.random.default_rng(0).beta(2, 5, 5_000), name="score")
    profile = profile_column(scores)
    assert profile.name == "score" and profile.kind == "numeric"
    assert column_from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    labels = profile_column(pd.Series(["a", "b", "a"]), name="segment")
    assert labels.kind == "categorical" and labels.name == "segment"


def test_unknown_columns_and_formats_are_refused() -> None:
    with pytest.raises(KeyError, match="nope"):
        profile_frame(_frame(), ["x", "nope"])
    data = profile_frame(_frame(), ["x"]).to_dict()
    with pytest.raises(ValueError, match="format"):
        FrameProfile.from_dict({**data, "format": 99})
