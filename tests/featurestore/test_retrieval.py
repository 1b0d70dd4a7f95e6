"""Point-in-time retrieval: an as-of reference (F1), no leakage (F2), train = serve (F4), allowlist (S1)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, event, inspect

from tasks.db import insert_frame, write_tx
from tasks.featurestore import (
    Feature,
    FeatureView,
    InvalidDefinition,
    UnknownFeature,
    UnknownView,
    ViewNotMaterialized,
    backfill,
    feature_table,
    get_historical_features,
    get_online_features,
    register_view,
)
from tasks.warehouse import UnknownTable
from tests.featurestore.helpers import DAY, days, epoch, gift, gift_view, load, set_status

PIT_SQL = "SELECT user_key, 0 AS feature_ts, 0 AS value, 0.0 AS half, '' AS label FROM raw_gifts"


def pit_view(ttl_s: int, name: str = "pit") -> FeatureView:
    """A view whose rows tests write directly; its SQL is never run."""
    return FeatureView(
        name=f"{name}_{ttl_s}",
        entity="user",
        features=(Feature("value", "int"), Feature("half", "float"), Feature("label", "str")),
        ttl_s=ttl_s,
        sources=("raw_gifts",),
        sql=PIT_SQL,
    )


PIT_VIEWS = {v.name: v for v in (pit_view(0), pit_view(3), pit_view(10))}


def _write_rows(engine: Engine, view: FeatureView, rows: list[tuple[str, int, int]]) -> None:
    """Replace a view's feature rows with (key, feature_ts, created_ts) rows valued by position."""
    table = feature_table(view)
    frame = pd.DataFrame(
        {
            "user_key": [r[0] for r in rows],
            "feature_ts": [r[1] for r in rows],
            "created_ts": [r[2] for r in rows],
            "partition_date": [DAY] * len(rows),
            "value": list(range(len(rows))),
            "half": [i / 2 for i in range(len(rows))],
            "label": [f"v{i}" for i in range(len(rows))],
        }
    )
    with write_tx(engine) as conn:
        register_view(conn, view, registered_ts=0)
        conn.execute(delete(table))
        insert_frame(conn, table, frame, ignore_existing=False)


def plain(column: pd.Series) -> list[Any]:
    """Column values with every missing marker as None."""
    return [None if pd.isna(v) else v for v in column.tolist()]


def as_of_reference(
    rows: list[tuple[str, int, int]], key: str, event_ts: int, ttl: int, created_before_event: bool
) -> int | None:
    """The pure-Python definition: latest (feature_ts, created_ts) row visible at event_ts."""
    visible = [
        (ft, ct, i)
        for i, (k, ft, ct) in enumerate(rows)
        if k == key
        and ft <= event_ts
        and (ttl == 0 or ft >= event_ts - ttl)
        and (not created_before_event or ct <= event_ts)
    ]
    return max(visible)[2] if visible else None


feature_rows = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, 20), st.integers(0, 25)),
    max_size=20,
    unique_by=lambda r: r,  # (key, feature_ts, created_ts) is the table's key
)
entity_rows = st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 25)), max_size=12)


@settings(
    max_examples=25,
    deadline=None,
    database=None,  # no .hypothesis folder in the shared tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=feature_rows,
    entities=entity_rows,
    ttl=st.sampled_from([0, 3, 10]),
    created_before_event=st.booleans(),
)
def test_sql_join_equals_python_as_of_reference(
    engine: Engine,
    rows: list[tuple[str, int, int]],
    entities: list[tuple[str, int]],
    ttl: int,
    created_before_event: bool,
) -> None:
    view = PIT_VIEWS[f"pit_{ttl}"]
    _write_rows(engine, view, rows)
    entity_df = pd.DataFrame(
        entities, columns=["user_key", "event_ts"], index=[f"r{i}" for i in range(len(entities))]
    )
    refs = [f"{view.name}:value", f"{view.name}:half", f"{view.name}:label"]
    got = get_historical_features(
        engine, entity_df, refs, created_before_event=created_before_event, views=PIT_VIEWS
    )
    assert list(got.index) == list(entity_df.index)
    assert list(got.columns) == ["user_key", "event_ts", *(r.replace(":", "__") for r in refs)]
    for (key, ts), (_, row) in zip(entities, got.iterrows(), strict=True):
        expected = as_of_reference(rows, key, ts, ttl, created_before_event)
        if expected is None:
            assert row.iloc[2:].isna().all()
        else:
            assert (row.iloc[2], row.iloc[3], row.iloc[4]) == (expected, expected / 2, f"v{expected}")


def test_equal_timestamps_take_the_latest_created_and_ttl_edges_are_inclusive(engine: Engine) -> None:
    view = PIT_VIEWS["pit_10"]
    rows = [("a", 10, 10), ("a", 10, 12), ("a", 10, 11), ("b", 5, 5)]
    _write_rows(engine, view, rows)
    entity_df = pd.DataFrame({"user_key": ["a", "b", "b", "b", "a"], "event_ts": [10, 15, 16, 4, 11]})
    latest = get_historical_features(
        engine, entity_df, ["pit_10:value"], created_before_event=False, views=PIT_VIEWS
    )
    # a@10 sees the created_ts=12 row (index 1); b@15 is exactly ttl away (kept); b@16 is one past it.
    assert plain(latest["pit_10__value"]) == [1, 3, None, None, 1]
    known = get_historical_features(engine, entity_df, ["pit_10:value"], views=PIT_VIEWS)  # the default
    assert plain(known["pit_10__value"]) == [0, 3, None, None, 2]  # only rows known at each event


def _gift_days(engine: Engine, view: FeatureView, n: int = 4) -> None:
    with write_tx(engine) as conn:
        load(
            conn,
            "raw_gifts",
            [
                gift(u, epoch(d, h), float(i + 1))
                for i, d in enumerate(days(DAY, n))
                for u, h in (("u1", 3), ("u2", 20))
            ],
        )
        set_status(conn, "raw_gifts", days(DAY, n))
    backfill(engine, view, DAY, days(DAY, n)[-1], created_ts=epoch(DAY, 24 * n + 1))


def test_planted_future_feature_never_reaches_a_training_row(engine: Engine) -> None:
    # Materialised: the gifts of day D become true at D+1 00:00, so a label at D 12:00 must
    # see day D-1's count only, although day D's rows (including 20:00) are in the table.
    view = gift_view(lookback=1)
    _gift_days(engine, view)
    labels = pd.DataFrame({"user_key": ["u1", "u2"], "event_ts": [epoch(days(DAY, 3)[2], 12)] * 2})
    got = get_historical_features(engine, labels, [f"{view.name}:gifts_sum"], views={view.name: view})
    assert got[f"{view.name}__gifts_sum"].tolist() == [2.0, 2.0]  # day 2's sum, not day 3's 3.0

    # Planted rows: a value from the future, and a version rebuilt for late rows after the label.
    planted = pit_view(0, name="leak")
    rows = [("u1", 90, 90), ("u1", 101, 101), ("u1", 95, 200)]  # legit, future, late rows
    _write_rows(engine, planted, rows)
    labels = pd.DataFrame({"user_key": ["u1"] * 3, "event_ts": [100, 100, 96]})
    views = {planted.name: planted}
    train = get_historical_features(engine, labels, ["leak_0:value"], views=views)  # as training reads
    assert 1 not in plain(train["leak_0__value"])  # the future row never appears
    assert plain(train["leak_0__value"]) == [0, 0, 0]  # nor the version known after the label
    loose = get_historical_features(engine, labels, ["leak_0:value"], created_before_event=False, views=views)
    assert 1 not in plain(loose["leak_0__value"])
    assert plain(loose["leak_0__value"]) == [2, 2, 2]


def test_online_features_are_the_point_in_time_join_at_as_of(engine: Engine) -> None:
    """get_online_features is the point-in-time join with every row's event_ts at as_of (it calls it),
    so what is checked here is the TTL at serving time: a view past its TTL comes back missing, a
    TTL-0 view keeps its last value, an unknown key gets nulls. Parity of whole training and scoring
    frames (F4) is tested on the models' own builders (tests/models/families/test_user_outcome_flows.py)."""
    sums, lagged = gift_view(lookback=1), gift_view(name="test_gifts_3d", lookback=3, ttl_s=0)
    views = {sums.name: sums, lagged.name: lagged}
    _gift_days(engine, sums)
    backfill(engine, lagged, DAY, days(DAY, 4)[-1], created_ts=epoch(DAY, 200))
    refs = ["test_gifts:gifts_count", "test_gifts:gifts_sum", "test_gifts_3d:gifts_sum"]
    keys = pd.DataFrame({"user_key": ["u2", "u1", "ghost", "u1"]})
    for t in (epoch(DAY, 30), epoch(DAY, 72), epoch(DAY, 200)):
        training = get_historical_features(engine, keys.assign(event_ts=t), refs, views=views)
        scoring = get_online_features(engine, keys, refs, as_of=t, views=views)
        pd.testing.assert_frame_equal(training.drop(columns="event_ts"), scoring)
    assert scoring["test_gifts__gifts_sum"].isna().all()  # a day past its TTL
    assert plain(scoring["test_gifts_3d__gifts_sum"]) == [9.0, 9.0, None, 9.0]  # TTL 0: days 2-4


def test_several_entities_and_the_constant_platform_key(engine: Engine) -> None:
    platform = FeatureView(
        name="platform_gifts",
        entity="platform",
        features=(Feature("gifts_total", "float"),),
        ttl_s=0,
        sources=("raw_gifts",),
        sql=(
            "SELECT 'all' AS platform, CAST(:part_end AS BIGINT) AS feature_ts, SUM(amount) AS gifts_total "
            "FROM raw_gifts WHERE event_date = :partition_date"
        ),
    )
    user = gift_view()
    _gift_days(engine, user, n=2)
    backfill(engine, platform, DAY, days(DAY, 2)[-1], created_ts=0)
    views = {v.name: v for v in (user, platform)}
    entity_df = pd.DataFrame({"user_key": ["u1", None], "event_ts": [epoch(DAY, 48), epoch(DAY, 30)]})
    got = get_historical_features(
        engine, entity_df, ["platform_gifts:gifts_total", "test_gifts:gifts_count"], views=views
    )
    assert plain(got["platform_gifts__gifts_total"]) == [4.0, 2.0]
    assert plain(got["test_gifts__gifts_count"]) == [1, None]


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("x; DROP TABLE raw_gifts;--:value", UnknownView),
        ("test_gifts:x; DROP TABLE raw_gifts;--", UnknownFeature),
        ("test_gifts", UnknownFeature),
        ("fs_registry:view", UnknownView),
    ],
)
def test_undeclared_names_are_refused_before_any_sql(
    engine: Engine, ref: str, error: type[Exception]
) -> None:
    views = {"test_gifts": gift_view()}
    before = sorted(inspect(engine).get_table_names())
    seen = _statements(engine)
    entity_df = pd.DataFrame({"user_key": ["u1"], "event_ts": [1], "x; DROP TABLE raw_gifts;--": [1]})
    with pytest.raises(error):
        get_historical_features(engine, entity_df, [ref], views=views)
    with pytest.raises(error):
        get_online_features(engine, entity_df[["user_key"]], [ref], as_of=1, views=views)
    assert seen == []
    assert sorted(inspect(engine).get_table_names()) == before


def test_bad_definitions_and_unmaterialised_views_are_refused(engine: Engine) -> None:
    with pytest.raises(UnknownTable):
        FeatureView("v", "user", (Feature("f"),), 0, ("raw_gifts; DROP TABLE raw_gifts;--",), sql="SELECT 1")
    with pytest.raises(InvalidDefinition):
        FeatureView("v; DROP TABLE t;--", "user", (Feature("f"),), 0, ("raw_gifts",), sql="SELECT 1")
    with pytest.raises(InvalidDefinition):
        FeatureView("v", "user", (Feature("f; DROP TABLE t"),), 0, ("raw_gifts",), sql="SELECT 1")
    view = gift_view()
    with pytest.raises(ValueError, match="key column"):
        get_historical_features(
            engine, pd.DataFrame({"event_ts": [1]}), ["test_gifts:gifts_sum"], views={view.name: view}
        )
    with pytest.raises(ViewNotMaterialized):
        get_historical_features(
            engine,
            pd.DataFrame({"user_key": ["u"], "event_ts": [1]}),
            ["test_gifts:gifts_sum"],
            views={view.name: view},
        )
