"""Continuing a simulated platform: the continued days are those one longer run lands, checksummed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.schema import RAW_TABLES
from tasks.settings import Settings
from tasks.simulate import SimConfig, simulate_platform
from tasks.simulate.config import make_shift
from tasks.simulate.platform import (
    PlatformStateError,
    continue_platform,
    last_day,
    load_state,
    save_state,
)
from tests.simulate.test_simulate import MemorySink

DAY_S = 86_400
SMALL = SimConfig(users=300, streamers=20, days=6, seed=21, chunk_users=120)


def _per_day(sink: MemorySink) -> dict[tuple[str, int], str]:
    """A checksum of every (raw table, UTC day) the sink received, rows in order."""
    out = {}
    for name in RAW_TABLES:
        frame = sink.table(name)
        if frame.empty:
            continue
        day = frame["event_ts"] // DAY_S
        for d, part in frame.groupby(day, sort=True):
            hashed = pd.util.hash_pandas_object(part.reset_index(drop=True), index=False).to_numpy()
            out[(name, int(d))] = hashlib.sha256(hashed.tobytes()).hexdigest()
    return out


def _settings(home: Path) -> Settings:
    return Settings(home=home, db_url="sqlite://", mlflow_tracking_uri="sqlite://", prefect_api_url=None)


def test_four_days_then_two_more_land_what_six_days_at_once_land(tmp_path: Path) -> None:
    whole = MemorySink()
    simulate_platform(SMALL, whole)
    settings = _settings(tmp_path)
    first = MemorySink()
    short = dataclasses.replace(SMALL, days=4)
    simulate_platform(short, first)
    save_state(settings, short)

    second = MemorySink()
    starts: list[int | None] = []

    def land(config: SimConfig, emit_from: int | None) -> dict[str, int]:
        starts.append(emit_from)
        return simulate_platform(config, second, emit_from=emit_from)

    config, rows = continue_platform(settings, load_state(settings), land, days=2)
    assert config == SMALL and load_state(settings) == SMALL
    assert starts == [short.end_epoch] and sum(rows.values()) > 0

    expected = _per_day(whole)
    before, after = _per_day(first), _per_day(second)
    end_day = short.end_epoch // DAY_S
    assert all(day >= end_day for _, day in after), "a continued run wrote an earlier day again"
    # The two continued days, table by table, and the four first days: identical to the long run.
    assert {k: v for k, v in expected.items() if k[1] >= end_day} == after
    assert {k: v for k, v in expected.items() if k[1] < end_day} == before
    assert {name for name, day in after if day == end_day + 1} >= {"raw_watch_sessions", "raw_traffic"}


def test_continued_days_keep_the_same_users_and_streamers() -> None:
    first, second = MemorySink(), MemorySink()
    short = dataclasses.replace(SMALL, days=4)
    simulate_platform(short, first)
    simulate_platform(SMALL, second, emit_from=short.end_epoch)
    known_users = set(first.table("raw_users")["user_key"]) | set(second.table("raw_users")["user_key"])
    sessions = second.table("raw_watch_sessions")
    assert set(sessions["user_key"]) <= known_users
    assert set(sessions["user_key"]) & set(first.table("raw_users")["user_key"])  # returning users
    assert set(sessions["streamer_id"]) <= set(first.table("raw_streamers")["streamer_id"])
    assert second.table("raw_streamers").empty  # onboarded once, on the first run
    # Identities and truth rows come for the new signups only.
    assert set(second.table("identity_users")["user_key"]).isdisjoint(
        first.table("identity_users")["user_key"]
    )


def test_continuing_a_home_never_simulated_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlatformStateError, match="no simulated platform"):
        load_state(_settings(tmp_path))


def test_until_must_lie_after_the_last_simulated_day(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    save_state(settings, SMALL)
    calls: list[int | None] = []

    def land(config: SimConfig, emit_from: int | None) -> dict[str, int]:
        calls.append(emit_from)
        return {}

    for until in (last_day(SMALL), last_day(SMALL) - dt.timedelta(days=3)):
        with pytest.raises(PlatformStateError, match="not after the last simulated day"):
            continue_platform(settings, SMALL, land, until=until)
    assert calls == [] and load_state(settings) == SMALL
    config, _ = continue_platform(settings, SMALL, land, until=last_day(SMALL) + dt.timedelta(days=3))
    assert config.days == SMALL.days + 3 and load_state(settings).days == SMALL.days + 3


# Ids the simulator numbers: prefix, seed, the event's UTC day (yyyymmdd), a number within the day.
NUMBERED = {
    "raw_watch_sessions": "ws",
    "raw_follows": "fo",
    "raw_ad_impressions": "imp",
    "raw_product_views": "pv",
    "raw_orders": "ord",
    "raw_gifts": "gift",
    "raw_memberships": "mem",
    "raw_paid_content": "pc",
}


def _utc_days(event_ts: pd.Series) -> pd.Series:
    return pd.Series(pd.to_datetime(event_ts.to_numpy() // DAY_S, unit="D").strftime("%Y%m%d"))


@pytest.mark.parametrize("kind", ["interests", "traffic"])
def test_a_shift_from_the_first_continued_day_lands_no_event_id_twice(tmp_path: Path, kind: str) -> None:
    """The first run generates its tail local day unshifted (its early UTC hours land), the
    continued run generates it shifted, with another number of events: ids are numbered per UTC
    day, so no id of a landed day comes back and the first run's days keep theirs."""
    settings = _settings(tmp_path)
    short = dataclasses.replace(SMALL, days=3)
    first = MemorySink()
    simulate_platform(short, first)
    save_state(settings, short)
    second = MemorySink()

    def land(config: SimConfig, emit_from: int | None) -> dict[str, int]:
        return simulate_platform(config, second, emit_from=emit_from)

    shift = make_shift(
        kind, last_day(short) + dt.timedelta(days=1), size=1.0 if kind == "interests" else None
    )
    continue_platform(settings, load_state(settings), land, days=2, shift=shift)

    end = short.end_epoch
    landed_twice = []
    for name in RAW_TABLES:
        before, after = first.table(name), second.table(name)
        if after.empty:
            continue
        assert (after["event_ts"] >= end).all(), f"{name}: the continued run wrote a landed day again"
        ids = pd.concat([f["event_id"] for f in (before, after) if not f.empty], ignore_index=True)
        landed_twice += ids[ids.duplicated()].head(3).tolist()
    assert landed_twice == []
    # Every numbered id names the UTC day of its event and counts 0, 1, 2, ... within that day,
    # so the days landed by the first run are never numbered again.
    for name, prefix in NUMBERED.items():
        for frame in (first.table(name), second.table(name)):
            if frame.empty:
                continue
            parts = frame["event_id"].str.split("-", expand=True)
            assert (parts[0] == prefix).all() and (parts[1] == str(SMALL.seed)).all(), name
            assert parts[2].equals(_utc_days(frame["event_ts"]).rename(2)), name
            per_day = parts[3].astype(np.int64).groupby(parts[2]).max() + 1
            assert per_day.to_dict() == parts[2].value_counts().to_dict(), name
    # The first run's days keep the ids a run without the shift gives them; the shift did change
    # the volume of the continued days.
    unshifted = MemorySink()
    simulate_platform(dataclasses.replace(SMALL, days=5), unshifted)
    for name in RAW_TABLES:
        plain = unshifted.table(name)
        if not plain.empty:
            kept = plain.loc[plain["event_ts"] < end, "event_id"].reset_index(drop=True)
            landed = first.table(name)
            assert kept.equals(landed["event_id"] if not landed.empty else kept.iloc[:0]), name
    assert any(
        (unshifted.table(name)["event_ts"] >= end).sum() != len(second.table(name)) for name in NUMBERED
    )
