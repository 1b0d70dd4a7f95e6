"""Entity inputs are profiled over distinct entities, not over a ranking frame's (user, candidate)
rows; the reference records the keys it used, and an older reference still loads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from tasks.models import catalog
from tasks.models.catalog import stream_recs as sr
from tasks.monitoring.drift import DRIFT, OK, compare_frame
from tasks.monitoring.profile import entity_rows, profile_frame
from tasks.monitoring.reference import Reference, ReferencePair, input_keys, profile_pair

STREAMERS = 50
KEYS = {"popularity": "streamer_id", "activity": "user_key"}


def _candidates(star_users: int, seed: int = 1) -> pd.DataFrame:
    """A ranking frame at one request time: 50 live streamers, their popularity 1..50 (the same on
    every row of a streamer); the first, the star, is a candidate of ``star_users`` users, every
    other streamer of one user each. ``affinity`` is a (user, streamer) input: per row."""
    rng = np.random.default_rng(seed)
    streamers = [f"s{i:02d}" for i in range(STREAMERS)]
    rows = [("s00", f"u{j:03d}") for j in range(star_users)]
    rows += [(s, f"u{i:03d}") for i, s in enumerate(streamers[1:])]
    frame = pd.DataFrame(rows, columns=["streamer_id", "user_key"], dtype=object)
    frame["popularity"] = frame["streamer_id"].str[1:].astype("int64").astype("float64") + 1.0
    frame["activity"] = frame["user_key"].str[1:].astype("int64").astype("float64")
    frame["affinity"] = rng.random(len(frame))
    frame["event_ts"] = np.int64(1_770_000_000)
    return frame


def test_a_candidate_repeated_100_times_counts_once() -> None:
    """The same 50 streamers with the same popularity: once each in the reference, the star a
    candidate of 100 users in the current frame. Per row the star's value is 2/3 of the rows and
    the popularity drifts; over distinct streamers it is the same distribution (PSI 0)."""
    reference_frame, current = _candidates(1), _candidates(100)
    assert (current["streamer_id"] == "s00").sum() == 100 and len(current) == 149
    columns = ["popularity", "activity", "affinity"]

    per_row = compare_frame(profile_frame(reference_frame, columns), current)
    assert per_row.features["popularity"] == DRIFT

    reference = profile_frame(reference_frame, columns, keys=KEYS)
    assert reference.columns["popularity"].rows == STREAMERS
    report = compare_frame(reference, current, keys=KEYS)
    psi = {r.feature: r.value for r in report.results if r.statistic == "psi"}
    assert report.features["popularity"] == OK and psi["popularity"] == pytest.approx(0.0, abs=1e-9)
    # The user side: each distinct user once (u000 is a user of two candidates, counted once).
    activity = next(r for r in report.results if r.feature == "activity" and r.statistic == "null_share")
    assert reference.columns["activity"].rows == STREAMERS - 1 and "of 100" in activity.detail
    # A pair input and a frame without the key stay per row: the star's 100 rows count 100 times.
    assert len(entity_rows(current, "no_such_key")) == len(current)
    rows = next(r for r in report.results if r.feature == "affinity" and r.statistic == "null_share")
    assert "of 149" in rows.detail


def test_entity_rows_keep_each_request_time_and_each_missing_key() -> None:
    """A training frame spans request times: a streamer at two times is two entity rows; rows
    whose key is missing (a scheduled stream without an id) are each kept."""
    frame = pd.DataFrame(
        {
            "stream_id": ["a", "a", "a", None, None, "b"],
            "event_ts": [1, 1, 2, 2, 2, 2],
            "x": [1.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    assert entity_rows(frame, "stream_id")["x"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert entity_rows(frame.drop(columns="event_ts"), "stream_id")["x"].tolist() == [1.0, 3.0, 4.0, 5.0]


def test_the_reference_records_the_keys_it_applied_and_a_format_1_reference_loads() -> None:
    """Keys whose column the frame lacks are not applied (nor recorded); the reference's JSON keeps
    each pair's keys; a format-1 reference (before keys) loads with none, so both sides of its
    comparison stay per row, as it was profiled; an unknown format is refused."""
    frame = _candidates(100)
    keys = {**KEYS, "affinity": "product_id"}  # no product_id column: per row
    pair = profile_pair(frame, pd.Series(frame["affinity"]), ["popularity", "activity", "affinity"], (), keys)
    assert pair.keys == KEYS
    reference = Reference("m", "2026-01-05T00:00:00+00:00", ("popularity",), (), pair, pair, "")
    data = reference.to_dict()
    assert data["format"] == 2 and Reference.from_dict(data) == reference
    old = {**data, "format": 1, "training": {k: v for k, v in data["training"].items() if k != "keys"}}
    loaded = Reference.from_dict(old)
    assert loaded.training.keys == {} and loaded.serving == pair
    with pytest.raises(ValueError, match="format"):
        Reference.from_dict({**data, "format": 99})
    assert isinstance(loaded.training, ReferencePair)


def test_stream_recs_keys_are_its_streamer_and_user_inputs() -> None:
    """The keys come from the feature store's entities: a view input's view, a context input's
    declared entity; pair inputs have none. A spec declaring an entity for an input that is not one
    of its context inputs, or an unknown entity, is refused."""
    keys = input_keys(catalog.get_spec("stream_recs"))
    assert keys["streamer_activity__live_hours_7d"] == "streamer_id"
    assert {c for c, k in keys.items() if k == "streamer_id"} == {
        "streamer_activity__live_hours_7d",
        *sr.STREAMER_INPUTS,
    }
    assert keys["user_sessions_28d"] == "user_key"
    assert not {"pair_sessions_7d", "category_share_28d", "same_region"} & set(keys)
    product = input_keys(catalog.get_spec("product_recs"))
    assert product["product_popularity__orders_7d"] == product["log_price"] == "product_id"
    with pytest.raises(ValueError, match="input_entities"):
        dataclasses.replace(sr.stream_recs, input_entities={"live_hours": "planet"})
    with pytest.raises(ValueError, match="input_entities"):
        dataclasses.replace(sr.stream_recs, input_entities={"not_an_input": "streamer"})
