"""Feature view declarations: version hashes, names, windows (pure, no database)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import pandas as pd
import pytest

from tasks.featurestore import BuildWindow, Feature, FeatureView, UnknownFeature, UnknownView, get_view
from tasks.featurestore.definitions import parse_ref
from tests.featurestore.helpers import epoch, gift_view


def share_a(frames: Mapping[str, pd.DataFrame], window: BuildWindow) -> pd.DataFrame:
    return frames["raw_gifts"][["user_key"]].assign(x=1.0)


def share_b(frames: Mapping[str, pd.DataFrame], window: BuildWindow) -> pd.DataFrame:
    return frames["raw_gifts"][["user_key"]].assign(x=2.0)


def _pandas_view(transform: object) -> FeatureView:
    return FeatureView("p", "user", (Feature("x"),), 0, ("raw_gifts",), transform=transform)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"ttl_s": 1},
        {"features": (Feature("gifts_count", "float"), Feature("gifts_sum", "float"))},
        {"sql": f"{gift_view().sql} "},
        {"lookback_days": 3},
        {"entity": "streamer"},
    ],
)
def test_semantic_changes_give_a_new_version(change: dict[str, object]) -> None:
    view = gift_view()
    assert dataclasses.replace(view, **change).version != view.version  # type: ignore[arg-type]


def test_version_ignores_owner_and_description_and_names_the_table() -> None:
    view = gift_view()
    same = dataclasses.replace(view, owner="someone", description="other words")
    assert same.version == view.version == gift_view().version
    assert view.table_name == f"fs_test_gifts__{view.version[:8]}"
    assert '"kind": "sql"' in view.definition_json()


def test_a_transform_is_versioned_by_its_source_code() -> None:
    assert _pandas_view(share_a).version != _pandas_view(share_b).version
    assert "assign(x=1.0)" in _pandas_view(share_a).definition_json()


def test_refs_resolve_only_to_declared_views_and_features() -> None:
    views = {"test_gifts": gift_view()}
    view, feature = parse_ref("test_gifts:gifts_sum", views)
    assert (view.name, feature) == ("test_gifts", Feature("gifts_sum", "float"))
    with pytest.raises(UnknownView, match="unknown feature view"):
        parse_ref("nope:gifts_sum", views)
    with pytest.raises(UnknownFeature, match="has no feature"):
        parse_ref("test_gifts:nope", views)
    with pytest.raises(UnknownView):
        get_view("user_watch; DROP TABLE raw_gifts;--")
    assert get_view("user_watch").entity == "user"


def test_build_window_bounds() -> None:
    window = BuildWindow.of(dt.date(2026, 1, 10), 7)
    assert (window.part_start, window.part_end) == (epoch(dt.date(2026, 1, 10)), epoch(dt.date(2026, 1, 11)))
    assert window.window_start == epoch(dt.date(2026, 1, 4))
    assert window.first_date == dt.date(2026, 1, 4)
    assert window.params()["partition_date"] == dt.date(2026, 1, 10)
