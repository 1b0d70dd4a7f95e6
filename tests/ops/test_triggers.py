"""Event-driven operations on real servers: drift starts a retraining, a dead worker's run is Crashed.

One `liveyield serve` stack for the module (as tests/ops/test_servers.py: 2,000 simulated users
over 14 days, so ad_ctr's real gate can pass), with flow-run heartbeats every 30 s (Prefect's
minimum) so the zombie window is 90 s. The tests run in file order: the first trains a champion
through the retraining deployment, plants drift in the warehouse's last feature partition and
runs `liveyield monitor`, whose drift event must start one retraining of ad_ctr through the
deployment's trigger (Prefect's trigger service on the server, not a call of ours); the last
kills the worker with the flow run it is running and waits for the zombie automation.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from tasks.db import make_engine
from tasks.featurestore import FEATURE_VIEWS, feature_table
from tasks.models.catalog import get_spec
from tasks.monitoring import events
from tasks.monitoring.run import model_views
from tasks.ops.automations import CRASH_MESSAGE, zombie_window_s
from tasks.ops.deployments import RETRAIN_ACTOR, retrain_deployment
from tasks.ops.servers import alive, descendants, prefect_client_settings
from tests.models.warehouse import START
from tests.monitoring.test_events import model_events
from tests.ops.test_servers import (
    AS_OF,
    AS_OF_ARG,
    DAYS,
    ROOT,
    Stack,
    _cli,
    served_stack,
)

pytestmark = pytest.mark.slow

HEARTBEAT_S = 30
SECOND_EVENT = (
    "from tasks.monitoring.events import DRIFT_DETECTED, emit; "
    "e = emit(DRIFT_DETECTED, 'ad_ctr', {{'version': 1, 'as_of': '{as_of}', 'details': ['again']}}); "
    "print('sent' if e else 'not sent')"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`liveyield serve` on a simulated platform, heartbeats every 30 s; stopped afterwards."""
    home = tmp_path_factory.mktemp("trigger-stack") / "home"
    with served_stack(home, "ly_trg", {"LIVEYIELD_HEARTBEAT_S": str(HEARTBEAT_S)}) as stack:
        assert "liveyield-crash-zombie-flow-runs" in stack.outputs[0][1]
        # What an operator exports to talk to the stack (`liveyield serve` prints it), credentials
        # as a shell loads them from the credentials file.
        stack.env = stack.env | stack.credentials.env()
        stack.env |= {"PREFECT_API_URL": stack.api, "MLFLOW_TRACKING_URI": stack.state["mlflow_url"]}
        yield stack


def _on(api: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    from prefect.settings import temporary_settings

    with temporary_settings(prefect_client_settings(api)):  # the URL and the stack's credentials
        return call(*args, **kwargs)


def _runs(api: str, deployment: str) -> list[Any]:
    """Every flow run of a deployment (``flow/deployment``), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    def read() -> list[Any]:
        with get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id]))
            )
        return sorted(runs, key=lambda r: r.created)

    return list(_on(api, read))


def _triggered(api: str) -> list[Any]:
    """The retraining runs of ad_ctr that an automation created."""
    return [
        r
        for r in _runs(api, retrain_deployment("ad_ctr"))
        if r.created_by and r.created_by.type == "AUTOMATION"
    ]


def _shift_inputs(url: str, day: dt.date) -> int:
    """Every numeric input of ad_ctr's views, in one partition, multiplied by 4 plus 3: drift."""
    engine = make_engine(url)
    changed = 0
    try:
        with engine.begin() as conn:
            for view in model_views(get_spec("ad_ctr")):
                table = feature_table(FEATURE_VIEWS[view.name])
                numeric = [f.name for f in view.features if f.dtype in ("int", "float")]
                if not numeric:
                    continue
                values = {name: table.c[name] * 4 + 3 for name in numeric}
                changed += conn.execute(
                    update(table).where(table.c.partition_date == day).values(values)
                ).rowcount
    finally:
        engine.dispose()
    return changed


def _wait(what: str, probe: Any, timeout_s: float, every_s: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(every_s)
    return found


def test_drift_event_starts_one_retraining_that_goes_through_the_gate(stack: Stack) -> None:
    """O2, the retraining half: a drift event (planted here by editing feature rows) starts one
    retraining through the deployment's trigger, and it goes through the gate. The other half, the
    simulator's planted shift of interests found by monitoring, is tests/monitoring/test_planted_shift.py."""
    from mlflow.tracking import MlflowClient

    from tasks.ops import remote

    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    trained = _cli(stack.env, "retrain", "ad_ctr", "--as-of", AS_OF_ARG, "--no-build")
    assert trained.returncode == 0 and "gate passed" in trained.stdout, trained.stdout + trained.stderr
    [promoted] = _on(stack.api, model_events, "ad_ctr", since, (events.PROMOTED,), count=1)
    assert promoted.payload["version"] == 1 and promoted.payload["previous_version"] is None
    assert _triggered(stack.api) == []  # a promotion starts nothing

    assert _shift_inputs(stack.warehouse_url, START + dt.timedelta(days=DAYS - 1)) > 0
    monitored = _cli(stack.env, "monitor", "ad_ctr", "--as-of", AS_OF_ARG)
    assert monitored.returncode == 0 and "ad_ctr — drift" in monitored.stdout, (
        monitored.stdout + monitored.stderr
    )
    [drift] = _on(stack.api, model_events, "ad_ctr", since, (events.DRIFT_DETECTED,), count=1)
    assert drift.payload["as_of"] == AS_OF.isoformat() and drift.payload["version"] == 1

    [run] = _wait("a retraining started by the trigger", lambda: _triggered(stack.api), timeout_s=180)
    assert run.created_by.display_value == "ad_ctr-retrain-on-drift"
    assert run.parameters["model"] == "ad_ctr" and run.parameters["actor"] == RETRAIN_ACTOR
    assert dt.datetime.fromisoformat(str(run.parameters["as_of"])) == AS_OF  # the as_of monitoring saw
    assert run.parameters["reason"] == f"retraining on {events.DRIFT_DETECTED}"

    # The drift persists: a second drift event of ad_ctr within the cooldown (sent the way
    # monitoring sends it, from another process) starts nothing more. Not a second monitoring run:
    # the triggered retraining rebuilds the features, which undoes the planted shift.
    again = subprocess.run(
        [sys.executable, "-c", SECOND_EVENT.format(as_of=AS_OF.isoformat())],
        env=stack.env | {"PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0 and "sent" in again.stdout, again.stdout + again.stderr
    _on(stack.api, model_events, "ad_ctr", since, (events.DRIFT_DETECTED,), count=2)

    assert remote.follow(stack.api, run.id, timeout_s=900) == "Completed"
    # Through the gate: its report is an artifact of the run, the verdict a tag of the version it
    # judged (the same data as v1 gives v1 again: registration is idempotent on the fingerprint).
    [summary] = remote.table_artifact(stack.api, run.id, "train-ad-ctr")
    assert "gate-ad-ctr" in {a.key for a in _on(stack.api, _artifacts, run.id)}
    client = MlflowClient(tracking_uri=stack.state["mlflow_url"], registry_uri=stack.state["mlflow_url"])
    judged = client.get_model_version("ad_ctr", str(summary["version"]))
    assert judged.tags["gate_verdict"] == ("passed" if summary["gate_passed"] else "failed")
    time.sleep(10)  # time for a second automation firing, were the cooldown not honoured
    assert [r.id for r in _triggered(stack.api)] == [run.id]


def _artifacts(flow_run_id: uuid.UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
        )


def _heartbeats(api: str, flow_run_id: uuid.UUID, since: dt.datetime) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    query = EventFilter(
        occurred=EventOccurredFilter.model_validate(
            {"since": since, "until": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}
        ),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
    )

    def read() -> list[Any]:
        with get_client(sync_client=True) as client:
            return list(client.read_events(filter=query, limit=50).events)

    return list(_on(api, read))


def _state(api: str, flow_run_id: uuid.UUID) -> Any:
    from prefect.client.orchestration import get_client

    def read() -> Any:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run_id).state

    return _on(api, read)


def test_a_run_whose_worker_is_killed_is_marked_crashed(stack: Stack) -> None:
    """R9: the worker and its flow run's process SIGKILLed mid-run: the run is marked Crashed by the
    zombie automation within its window, not left Running (the rerun's checksums equal a clean
    run's: tests/integration/test_reruns.py)."""
    from tasks.ops import remote

    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    # A retraining that builds features first: long enough to be killed in the middle.
    run_id, _ = remote.trigger(
        stack.api, retrain_deployment("ad_ctr"), {"model": "ad_ctr", "as_of": AS_OF.isoformat()}
    )
    _wait(
        "the run running", lambda: (s := _state(stack.api, run_id)) is not None and s.is_running(), 300, 0.5
    )
    _wait("its first heartbeat", lambda: _heartbeats(stack.api, run_id, since), 60, 0.5)

    worker = int(stack.state["processes"]["worker"]["pid"])
    tree = [worker, *descendants(worker)]
    assert len(tree) > 1, "the worker runs the flow in a child process"
    for pid in tree:  # the machine's view of a worker dying: it and its flow run's process, at once
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _wait("the worker gone", lambda: not any(alive(pid) for pid in tree), 30, 0.5)
    assert _state(stack.api, run_id).is_running()  # nothing else noticed

    window = zombie_window_s(HEARTBEAT_S)
    state = _wait(
        "Crashed", lambda: (s := _state(stack.api, run_id)).is_final() and s, window + HEARTBEAT_S + 60
    )
    elapsed = time.monotonic() - killed
    assert state.type.value == "CRASHED", state
    assert state.message == CRASH_MESSAGE.format(within=window)
    assert elapsed <= window + HEARTBEAT_S + 60
    print(f"crashed {elapsed:.0f} s after the kill (window {window} s after the last heartbeat)")
