"""`liveyield simulate --continue` and `--shift` on a real home: landed, ingested, truth recorded."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from flows.cli import main
from flows.cli.data import live_start
from tasks.db import make_engine
from tasks.schema import oracle_shifts, partition_status, raw_watch_sessions
from tasks.settings import Settings

START = dt.date(2026, 1, 5)
SMALL = ["--users", "200", "--streamers", "16", "--seed", "3"]


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.mark.usefixtures("prefect_harness")
def test_continue_lands_the_next_days_and_records_the_shift(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *SMALL, "--days", "3", "--start", START.isoformat(), "--no-ingest"]) == 0
    shift = ["--shift", "traffic", "--shift-from", "2026-01-09", "--shift-target", "eu"]
    assert main(["simulate", "--continue", "--until", "2026-01-09", *shift, "--no-ingest"]) == 0
    assert "through 2026-01-09" in capsys.readouterr().out
    # The continued days land like any others: the usual ingest validates them (one table, for time).
    assert main(["validate", "--table", "raw_watch_sessions"]) == 0
    engine = make_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            validated = conn.execute(
                select(partition_status.c.partition_date)
                .where(partition_status.c.table_name == "raw_watch_sessions")
                .where(partition_status.c.status == "validated")
            ).scalars()
            days = {d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for d in validated}
            last = conn.execute(select(func.max(raw_watch_sessions.c.event_date))).scalar_one()
            shifts = conn.execute(select(oracle_shifts)).all()
    finally:
        engine.dispose()
    assert days == {START + dt.timedelta(days=i) for i in range(5)}
    assert str(last) == "2026-01-09"
    assert [(k, str(d), json.loads(p)) for k, d, p in shifts] == [
        ("traffic", "2026-01-09", {"size": 2.0, "target": "eu"})
    ]
    # A date already simulated, and a shift planted in the past: one error line each.
    assert main(["simulate", "--continue", "--until", "2026-01-08", "--no-ingest"]) == 1
    assert _errors(capsys) == ["error: --until 2026-01-08 is not after the last simulated day 2026-01-09"]
    past = ["--shift", "prices", "--shift-from", "2026-01-06", "--no-ingest"]
    assert main(["simulate", "--continue", *past]) == 1
    assert len(_errors(capsys)) == 1


def test_continuing_a_home_never_simulated_is_one_error_line(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--continue", "--days", "2", "--no-ingest"]) == 1
    errors = _errors(capsys)
    assert len(errors) == 1 and "no simulated platform" in errors[0]


def test_a_new_platform_ends_yesterday_by_default(settings: Settings) -> None:
    assert main(["simulate", *SMALL, "--days", "2", "--no-ingest"]) == 0
    state = json.loads((settings.home / "simulator" / "platform.json").read_text())
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert dt.date.fromisoformat(state["start"]) == live_start(2) == yesterday - dt.timedelta(days=1)
    landed = {p.name for p in (settings.landing_dir / "raw_watch_sessions").iterdir()}
    assert f"event_date={yesterday.isoformat()}" in landed
    assert f"event_date={dt.datetime.now(dt.UTC).date().isoformat()}" not in landed


def test_a_home_holds_one_platform(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    pinned = ["simulate", *SMALL, "--start", START.isoformat(), "--no-ingest"]
    assert main([*pinned, "--days", "3"]) == 0
    assert main([*pinned, "--days", "2"]) == 0  # the same platform, shorter: lands nothing new
    assert json.loads((settings.home / "simulator" / "platform.json").read_text())["days"] == 3
    other = ["simulate", *SMALL, "--start", "2026-02-01", "--days", "2", "--no-ingest"]
    assert main(other) == 1
    errors = _errors(capsys)
    assert len(errors) == 1 and "holds another simulated platform" in errors[0]


def test_catching_up_continues_the_platform_to_the_asked_day(settings: Settings) -> None:
    from tasks.simulate import SimConfig
    from tasks.simulate.run import catch_up_configured_platform

    config = SimConfig(users=150, streamers=12, days=3, seed=4, start=START)
    first, rows = catch_up_configured_platform(config)
    assert first == config and sum(rows.values()) > 0
    moved = SimConfig(users=150, streamers=12, days=3, seed=4, start=START + dt.timedelta(days=2))
    caught_up, rows = catch_up_configured_platform(moved)
    assert (caught_up.start, caught_up.days) == (START, 5) and sum(rows.values()) > 0
    assert catch_up_configured_platform(moved) == (caught_up, {})
    landed = {p.name for p in (settings.landing_dir / "raw_watch_sessions").iterdir()}
    assert landed == {f"event_date={START + dt.timedelta(days=i)}" for i in range(5)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shift", "weather", "--shift-from", "2026-01-06"], "unknown shift 'weather'"),
        (["--shift", "traffic"], "--shift needs --shift-from"),
        (["--shift-from", "2026-01-06"], "need --shift"),
        (["--shift", "traffic", "--shift-from", "2026-01-06", "--shift-target", "mars"], "target must be"),
        (["--until", "2026-01-09"], "--until needs --continue"),
        (["--continue", "--seed", "3"], "--continue keeps the platform's"),
        (["--continue", "--days", "2", "--until", "2026-01-09"], "not both"),
    ],
)
def test_bad_simulate_options_are_one_error_line(
    settings: Settings, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["simulate", "--no-ingest", *args]) == 1
    errors = _errors(capsys)
    assert len(errors) == 1 and message in errors[0], errors
    assert not (settings.home / "simulator").exists()
