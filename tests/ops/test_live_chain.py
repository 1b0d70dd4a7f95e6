"""Three days in the life of a served simulated platform, run the way its schedules run them.

`liveyield serve --simulate` (free loopback ports, a real Prefect server, worker and MLflow
server) on the demo platform: 5,000 users over the 28 days from 2026-01-05, seed 7 and its derived
pseudonym key, on which every catalog model's gate passes. The pipeline deployment, scheduled for
the end of the last simulated day, trains and promotes every model. Then for three consecutive
days (Tuesday 2026-02-03 to Thursday 2026-02-05; no weekly retraining falls on them) every
deployment whose schedule fires that day is run through the Prefect API for its scheduled time,
with the deployment's own parameters, in the order its crons fire: simulate-daily lands yesterday,
ingest-validate, build-features, the daily retraining (traffic_forecast, capacity_plan), and every
model's scoring (the hourly ones once, at the first full hour after the retraining); runs due at
the same time start together, as their schedules start them. Each run must end
Completed and do its work (none superseded); each day's scores are published as of that day's
scoring time; no rows are landed twice. Then the late-run policy: two runs of one deployment due
at once, and only the newer one works.

About 30 minutes on 2 cores (the first pipeline trains all 12 models, then 51 deployment runs):
marked ``live``, run by `make test-servers` and `make test-all`, not by `make test-slow`.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from sqlalchemy import func, select

from tasks.dates import utc
from tasks.db import make_engine
from tasks.models.catalog import MODELS
from tasks.ops import remote
from tasks.ops.deployments import PREFECT_FILE, SIMULATE_FILE
from tasks.ops.servers import prefect_client_settings
from tasks.schema import published_scores, raw_watch_sessions, score_sets
from tasks.settings import derived_key
from tests.ops.test_servers import Stack, served_stack

pytestmark = pytest.mark.live

START, DAYS, USERS, SEED = dt.date(2026, 1, 5), 28, 5000, 7
LIVE_DAYS = [dt.date(2026, 2, 3) + dt.timedelta(days=i) for i in range(3)]
RUN_TIMEOUT_S = 900  # one deployment run of a live day
PIPELINE_TIMEOUT_S = 2400  # the first pipeline trains all 12 models (about 6 minutes when idle)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    simulate = ["--start", START.isoformat(), "--days", str(DAYS), "--users", str(USERS)]
    simulate += ["--streamers", str(USERS // 16), "--seed", str(SEED)]
    home = tmp_path_factory.mktemp("live") / "home"
    key = {"LIVEYIELD_PSEUDONYM_KEY": derived_key(SEED).decode()}  # the demo's pseudonyms
    with served_stack(home, "ly_live", extra_env=key, simulate=simulate) as served:
        yield served


def _deployments() -> list[tuple[str, str]]:
    """(flow/deployment, cron) of every scheduled deployment of a served simulated platform."""
    found = []
    for path in (SIMULATE_FILE, PREFECT_FILE):
        for deployment in yaml.safe_load(path.read_text())["deployments"]:
            if not deployment["schedules"]:
                continue
            path, function = deployment["entrypoint"].split(":")
            module = path.removesuffix(".py").replace("/", ".")
            flow_name = getattr(importlib.import_module(module), function).name
            found.append((f"{flow_name}/{deployment['name']}", deployment["schedules"][0]["cron"]))
    return found


def _first_firing(cron: str, day: dt.date) -> dt.datetime | None:
    """The first time on ``day`` (UTC) a cron of the platform's forms fires: minute and hour
    fixed or '*', every day or one weekday (0 or 7: Sunday)."""
    minute, hour, dom, month, dow = cron.split()
    assert dom == month == "*" and minute.isdigit(), f"cron form not covered here: {cron}"
    if dow != "*" and int(dow) % 7 != day.isoweekday() % 7:
        return None
    return dt.datetime.combine(day, dt.time(0 if hour == "*" else int(hour), int(minute)), dt.UTC)


def _day_chain(day: dt.date) -> list[tuple[dt.datetime, str]]:
    """Every deployment that fires on ``day``, at its first firing, in firing order. A scoring
    runs at the first full hour after the day's retraining at the earliest (an hourly one once)."""
    fired = _fired(day)
    trained = max(t for t, name in fired if name.startswith(("train-model/", "build-features/")))
    after = trained.replace(minute=0) + dt.timedelta(hours=1)  # the first full hour after them
    return sorted(
        (max(when, after) if name.startswith("score-model/") else when, name) for when, name in fired
    )


def _fired(day: dt.date) -> list[tuple[dt.datetime, str]]:
    return [(t, name) for name, cron in _deployments() if (t := _first_firing(cron, day)) is not None]


def _run(
    stack: Stack, deployment: str, when: dt.datetime, timeout_s: float = RUN_TIMEOUT_S
) -> tuple[str, str | None, UUID]:
    """Create a run of a deployment scheduled for ``when``, with the deployment's own parameters
    (as its schedule does), and follow it to its end: (state name, state message, run id)."""
    [outcome] = _run_all(stack, [deployment], when, timeout_s)
    return outcome


def _run_all(
    stack: Stack, deployments: list[str], when: dt.datetime, timeout_s: float = RUN_TIMEOUT_S
) -> list[tuple[str, str | None, UUID]]:
    """`_run` for runs due at the same time: created together (the worker runs them side by side,
    as it does when their schedules fire), then followed each to its end."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import temporary_settings

    with temporary_settings(prefect_client_settings(stack.api)):
        runs: list[Any] = [run_deployment(d, scheduled_time=when, timeout=0) for d in deployments]
    outcomes = []
    for run in runs:
        final = remote.follow(stack.api, run.id, timeout_s=timeout_s)
        with temporary_settings(prefect_client_settings(stack.api)), get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        outcomes.append((final, state.message if state is not None else None, run.id))
    return outcomes


def _latest_score_as_of(stack: Stack) -> dict[str, int]:
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


def _sessions_per_day(stack: Stack) -> dict[dt.date, int]:
    """Watch sessions in the warehouse per UTC day of their start."""
    engine = make_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:
            day = (raw_watch_sessions.c.event_ts - raw_watch_sessions.c.event_ts % 86_400).label("day")
            rows = conn.execute(select(day, func.count()).group_by(day)).all()
    finally:
        engine.dispose()
    return {utc(int(ts)).date(): int(n) for ts, n in rows}


def test_three_days_of_schedules_complete(stack: Stack) -> None:
    """O1: the served demo platform for three consecutive simulated days: every run Completed,
    each day's scores published once."""
    # Day zero: the pipeline as its deployment runs it at the end of the simulated month.
    end = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
    state, message, _ = _run(stack, "pipeline/pipeline-on-demand", end, PIPELINE_TIMEOUT_S)
    assert state == "Completed", message
    assert set(_latest_score_as_of(stack)) == set(MODELS)  # every model promoted and scored

    log: list[str] = []
    per_day = _sessions_per_day(stack)
    assert max(per_day) == START + dt.timedelta(days=DAYS - 1)
    for day in LIVE_DAYS:
        chain = _day_chain(day)
        assert chain[0][1] == "simulate-daily/simulate-daily"
        retrained = {
            n.split("/")[1].removesuffix("-retrain") for _, n in chain if n.startswith("train-model/")
        }
        assert retrained == {"traffic_forecast", "capacity_plan"}, "the daily retraining only"
        for when in sorted({t for t, _ in chain}):  # the runs due at one time start together
            due = [deployment for t, deployment in chain if t == when]
            for deployment, (state, message, run_id) in zip(due, _run_all(stack, due, when), strict=True):
                log.append(f"{when:%Y-%m-%d %H:%M} {deployment}: {state} {message or ''} ({run_id})")
                assert state == "Completed", "\n".join(log)
                assert "superseded" not in (message or ""), "\n".join(log)
        # Yesterday's data arrived, and no earlier day was landed again.
        now_per_day = _sessions_per_day(stack)
        assert max(now_per_day) == day - dt.timedelta(days=1) and now_per_day[max(now_per_day)] > 0
        assert {d: n for d, n in now_per_day.items() if d in per_day} == per_day, "a day was landed twice"
        per_day = now_per_day
        scored = {
            d.split("/")[1].removesuffix("-score"): when for when, d in chain if d.startswith("score-model/")
        }
        assert set(scored) == set(MODELS)
        latest = _latest_score_as_of(stack)
        for model, when in scored.items():
            assert latest[model] == int(when.timestamp()), f"{model} on {day}: {utc(latest[model])}"

    # simulate-daily again for the last day, then ingest: nothing new arrives.
    for when, deployment in _day_chain(LIVE_DAYS[-1])[:2]:
        state, message, _ = _run(stack, deployment, when + dt.timedelta(minutes=30))
        assert state == "Completed", message
    assert _sessions_per_day(stack) == per_day


def test_late_runs_do_not_pile_up(stack: Stack) -> None:
    """Two runs of one deployment due at once (a worker that was away): the older completes at
    once as superseded, the newer does the work."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import temporary_settings

    deployment = "ingest-validate/ingest-validate-daily"
    day = LIVE_DAYS[-1] + dt.timedelta(days=1)
    older, newer = (dt.datetime.combine(day + dt.timedelta(days=i), dt.time(1), dt.UTC) for i in (0, 1))
    with temporary_settings(prefect_client_settings(stack.api)):
        runs: list[Any] = [run_deployment(deployment, scheduled_time=t, timeout=0) for t in (older, newer)]
    finals = [remote.follow(stack.api, run.id, timeout_s=RUN_TIMEOUT_S) for run in runs]
    assert finals == ["Completed", "Completed"]
    with temporary_settings(prefect_client_settings(stack.api)), get_client(sync_client=True) as client:
        states = [client.read_flow_run(run.id).state for run in runs]
        messages = [(state.message if state is not None else None) or "" for state in states]
        artifacts = [_artifact_count(client, run.id) for run in runs]
    assert "superseded by" in messages[0] and runs[1].name in messages[0]
    assert "superseded" not in messages[1]
    assert artifacts[0] == 0 and artifacts[1] > 0  # only the newer one validated anything


def _artifact_count(client: Any, run_id: UUID) -> int:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )
    return len(found)


def test_stack_home_holds_the_continued_platform(stack: Stack) -> None:
    from tasks.settings import get_settings
    from tasks.simulate.platform import last_day, load_state

    recorded = load_state(get_settings({**stack.env, "LIVEYIELD_HOME": str(Path(stack.home))}))
    assert last_day(recorded) == LIVE_DAYS[-1] - dt.timedelta(days=1)
