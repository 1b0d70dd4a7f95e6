"""The live chain's pieces, shared by its test (tests/ops/test_live_chain.py) and its benchmark
(tests/benchmarks/bench_live_chain.py): the served demo platform, the deployments that fire on a
day in firing order, and runs created through the Prefect API for their scheduled time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from sqlalchemy import func, select

from tasks.dates import utc
from tasks.db import make_engine
from tasks.ops import remote
from tasks.ops.deployments import PREFECT_FILE, SIMULATE_FILE
from tasks.ops.servers import prefect_client_settings
from tasks.schema import published_scores, raw_watch_sessions, score_sets
from tasks.settings import derived_key
from tests.ops.test_servers import Stack, served_stack

START, DAYS, USERS, SEED = dt.date(2026, 1, 5), 28, 5000, 7
LIVE_DAYS = [dt.date(2026, 2, 3) + dt.timedelta(days=i) for i in range(3)]
RUN_TIMEOUT_S = 900  # one deployment run of a live day
PIPELINE_TIMEOUT_S = 2400  # the first pipeline trains all 12 models (about 6 minutes when idle)


@contextmanager
def live_stack(home: Path, users: int = USERS) -> Iterator[Stack]:
    """`liveyield serve --simulate` on the demo platform (seed 7 and its derived pseudonym key,
    ``users`` users over the 28 days from START), its schedules paused, stopped afterwards."""
    simulate = ["--start", START.isoformat(), "--days", str(DAYS), "--users", str(users)]
    simulate += ["--streamers", str(users // 16), "--seed", str(SEED)]
    key = {"LIVEYIELD_PSEUDONYM_KEY": derived_key(SEED).decode()}  # the demo's pseudonyms
    # Paused: the chain's runs are created for simulated days; the real clock's would interfere.
    with served_stack(home, "ly_live", extra_env=key, simulate=simulate, paused=True) as served:
        yield served


def pipeline_time() -> dt.datetime:
    """When the pipeline deployment runs on the demo platform: the end of its last simulated day."""
    return dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)


def deployments() -> list[tuple[str, str]]:
    """(flow/deployment, cron) of every scheduled deployment of a served simulated platform."""
    found = []
    for path in (SIMULATE_FILE, PREFECT_FILE):
        for deployment in yaml.safe_load(path.read_text())["deployments"]:
            if not deployment["schedules"]:
                continue
            module_path, function = deployment["entrypoint"].split(":")
            module = module_path.removesuffix(".py").replace("/", ".")
            flow_name = getattr(importlib.import_module(module), function).name
            found.append((f"{flow_name}/{deployment['name']}", deployment["schedules"][0]["cron"]))
    return found


def first_firing(cron: str, day: dt.date) -> dt.datetime | None:
    """The first time on ``day`` (UTC) a cron of the platform's forms fires: minute and hour
    fixed or '*', every day or one weekday (0 or 7: Sunday)."""
    minute, hour, dom, month, dow = cron.split()
    assert dom == month == "*" and minute.isdigit(), f"cron form not covered here: {cron}"
    if dow != "*" and int(dow) % 7 != day.isoweekday() % 7:
        return None
    return dt.datetime.combine(day, dt.time(0 if hour == "*" else int(hour), int(minute)), dt.UTC)


def day_chain(day: dt.date) -> list[tuple[dt.datetime, str]]:
    """Every deployment that fires on ``day``, at its first firing, in firing order. A scoring
    runs at the first full hour after the day's retraining at the earliest (an hourly one once)."""
    fired = [(t, name) for name, cron in deployments() if (t := first_firing(cron, day)) is not None]
    trained = max(t for t, name in fired if name.startswith(("train-model/", "build-features/")))
    after = trained.replace(minute=0) + dt.timedelta(hours=1)  # the first full hour after them
    return sorted(
        (max(when, after) if name.startswith("score-model/") else when, name) for when, name in fired
    )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one deployment run ended, and how long it ran by the server's account."""

    deployment: str
    state: str
    message: str | None
    run_id: UUID
    run_s: float  # the run's own running time (Prefect's total_run_time)


def run_all(
    stack: Stack, due: list[str], when: dt.datetime, timeout_s: float = RUN_TIMEOUT_S
) -> list[Outcome]:
    """Create a run of each deployment scheduled for ``when``, with the deployment's own
    parameters (as its schedule does), together (the worker runs them side by side, as it does
    when their schedules fire); then follow each to its end."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import temporary_settings

    with temporary_settings(prefect_client_settings(stack.api)):
        runs: list[Any] = [run_deployment(d, scheduled_time=when, timeout=0) for d in due]
    outcomes = []
    for deployment, run in zip(due, runs, strict=True):
        final = remote.follow(stack.api, run.id, timeout_s=timeout_s)
        with temporary_settings(prefect_client_settings(stack.api)), get_client(sync_client=True) as client:
            read = client.read_flow_run(run.id)
        message = read.state.message if read.state is not None else None
        outcomes.append(Outcome(deployment, final, message, run.id, read.total_run_time.total_seconds()))
    return outcomes


def run_one(stack: Stack, deployment: str, when: dt.datetime, timeout_s: float = RUN_TIMEOUT_S) -> Outcome:
    """`run_all` for one deployment."""
    [outcome] = run_all(stack, [deployment], when, timeout_s)
    return outcome


def latest_score_as_of(stack: Stack) -> dict[str, int]:
    """The as_of (epoch seconds) of every model's published score set."""
    engine = make_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(published_scores.c.model_name, score_sets.c.as_of).join(
                    score_sets, score_sets.c.score_set_id == published_scores.c.score_set_id
                )
            ).all()
    finally:
        engine.dispose()
    return {str(name): int(as_of) for name, as_of in rows}


def sessions_per_day(stack: Stack) -> dict[dt.date, int]:
    """Watch sessions in the warehouse per UTC day of their start."""
    engine = make_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:
            day = (raw_watch_sessions.c.event_ts - raw_watch_sessions.c.event_ts % 86_400).label("day")
            rows = conn.execute(select(day, func.count()).group_by(day)).all()
    finally:
        engine.dispose()
    return {utc(int(ts)).date(): int(n) for ts, n in rows}
