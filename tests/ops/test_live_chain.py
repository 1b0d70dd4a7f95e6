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
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tasks.dates import utc
from tasks.models.catalog import MODELS
from tasks.ops import remote
from tasks.ops.servers import prefect_client_settings
from tests.ops.live_chain import (
    DAYS,
    LIVE_DAYS,
    PIPELINE_TIMEOUT_S,
    RUN_TIMEOUT_S,
    START,
    day_chain,
    latest_score_as_of,
    live_stack,
    pipeline_time,
    run_all,
    run_one,
    sessions_per_day,
)
from tests.ops.test_servers import Stack

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with live_stack(tmp_path_factory.mktemp("live") / "home") as served:
        yield served


def test_three_days_of_schedules_complete(stack: Stack) -> None:
    """O1: the served demo platform for three consecutive simulated days: every run Completed,
    each day's scores published once."""
    # Day zero: the pipeline as its deployment runs it at the end of the simulated month.
    pipeline = run_one(stack, "pipeline/pipeline-on-demand", pipeline_time(), PIPELINE_TIMEOUT_S)
    assert pipeline.state == "Completed", pipeline.message
    assert set(latest_score_as_of(stack)) == set(MODELS)  # every model promoted and scored

    log: list[str] = []
    per_day = sessions_per_day(stack)
    assert max(per_day) == START + dt.timedelta(days=DAYS - 1)
    for day in LIVE_DAYS:
        chain = day_chain(day)
        assert chain[0][1] == "simulate-daily/simulate-daily"
        retrained = {
            n.split("/")[1].removesuffix("-retrain") for _, n in chain if n.startswith("train-model/")
        }
        assert retrained == {"traffic_forecast", "capacity_plan"}, "the daily retraining only"
        for when in sorted({t for t, _ in chain}):  # the runs due at one time start together
            due = [deployment for t, deployment in chain if t == when]
            for run in run_all(stack, due, when):
                log.append(
                    f"{when:%Y-%m-%d %H:%M} {run.deployment}: {run.state} {run.message or ''} ({run.run_id})"
                )
                assert run.state == "Completed", "\n".join(log)
                assert "superseded" not in (run.message or ""), "\n".join(log)
        # Yesterday's data arrived, and no earlier day was landed again.
        now_per_day = sessions_per_day(stack)
        assert max(now_per_day) == day - dt.timedelta(days=1) and now_per_day[max(now_per_day)] > 0
        assert {d: n for d, n in now_per_day.items() if d in per_day} == per_day, "a day was landed twice"
        per_day = now_per_day
        scored = {
            d.split("/")[1].removesuffix("-score"): when for when, d in chain if d.startswith("score-model/")
        }
        assert set(scored) == set(MODELS)
        latest = latest_score_as_of(stack)
        for model, when in scored.items():
            assert latest[model] == int(when.timestamp()), f"{model} on {day}: {utc(latest[model])}"

    # simulate-daily again for the last day, then ingest: nothing new arrives.
    for when, deployment in day_chain(LIVE_DAYS[-1])[:2]:
        again = run_one(stack, deployment, when + dt.timedelta(minutes=30))
        assert again.state == "Completed", again.message
    assert sessions_per_day(stack) == per_day


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
