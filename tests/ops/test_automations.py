"""The zombie-run automation `liveyield serve` creates, on a real Prefect API (the test harness).

That it crashes a run whose worker was killed is tests/ops/test_triggers.py (a real server whose
trigger service runs); here: what is created, that creating it again replaces it, and that the
worker's flow runs send heartbeats at the interval the automation assumes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.ops import automations, servers
from tasks.settings import get_settings


def _zombie_automations() -> list[object]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return list(client.read_automations_by_name(automations.ZOMBIE_AUTOMATION))


@pytest.mark.usefixtures("prefect_harness")
def test_zombie_automation_is_created_once_and_replaced() -> None:
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value())
    said: list[str] = []
    assert automations.ensure_automations(api, heartbeat=60, say=said.append) == [
        automations.ZOMBIE_AUTOMATION
    ]
    assert automations.ensure_automations(api, heartbeat=30) == [automations.ZOMBIE_AUTOMATION]
    [automation] = _zombie_automations()  # a second `liveyield serve` replaces, never duplicates
    trigger = automation.trigger  # type: ignore[attr-defined]
    assert isinstance(trigger, EventTrigger) and trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"} and trigger.for_each == {"prefect.resource.id"}
    assert {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.Paused",
    } <= trigger.expect
    assert trigger.within.total_seconds() == 90  # the latest heartbeat interval, three beats
    [action] = automation.actions  # type: ignore[attr-defined]
    assert isinstance(action, ChangeFlowRunState) and action.state == StateType.CRASHED
    assert "60 s" in said[0]


def test_heartbeat_interval_reaches_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings

    assert automations.heartbeat_s({}) == automations.HEARTBEAT_S
    assert automations.heartbeat_s({"LIVEYIELD_HEARTBEAT_S": "45"}) == 45
    assert automations.heartbeat_s({"LIVEYIELD_HEARTBEAT_S": "5"}) == 30  # Prefect's minimum
    settings = get_settings({"LIVEYIELD_HOME": str(tmp_path)})
    plan = servers.plan_stack(settings, {"LIVEYIELD_HEARTBEAT_S": "40"}, prefect_port=0, mlflow_port=0)
    variable = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
    monkeypatch.setenv(variable, servers.flow_env(plan)[variable])
    assert Settings().flows.heartbeat_frequency == 40  # what a flow run of the worker beats at


def test_compose_stack_creates_the_automation_and_beats_at_its_interval() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "infra" / "compose.yaml").read_text())
    services = compose["services"]
    assert "python -m tasks.ops.automations" in services["deploy"]["command"]
    beat = services["worker"]["environment"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]
    assert int(beat) == automations.HEARTBEAT_S  # the deploy job's automation waits 3 of these


@pytest.mark.usefixtures("prefect_harness")
def test_retrain_trigger_fires_once_per_model_per_cooldown() -> None:
    """The rendered trigger on Prefect's own trigger engine (the harness runs the reactive-trigger
    and action services): two drift events of one model start one run of its deployment; another
    model's event starts its own."""
    import time
    import uuid

    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from tasks.monitoring import events
    from tasks.ops.deployments import retrain_trigger

    first, second = (f"m{uuid.uuid4().hex[:8]}" for _ in range(2))
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("train-model")
        deployment_ids = {}
        for model in (first, second):
            deployment_ids[model] = client.create_deployment(flow_id=flow_id, name=f"{model}-retrain")
            [trigger] = _initialize_deployment_triggers(f"{model}-retrain", [retrain_trigger(model)])
            trigger.set_deployment_id(deployment_ids[model])
            client.create_automation(trigger.as_automation())

        def runs(model: str) -> list[object]:
            query = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_ids[model]]))
            return list(client.read_flow_runs(deployment_filter=query))

        time.sleep(2)  # the trigger service loads new automations as they are created
        for model, as_of in ((first, "2026-03-09T00:00:00+00:00"), (first, "2026-03-10T00:00:00+00:00"),
                             (second, "2026-03-10T00:00:00+00:00")):  # fmt: skip
            assert events.emit(events.DRIFT_DETECTED, model, {"version": 1, "as_of": as_of}) is not None
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while not runs(second) and time.monotonic() < deadline:  # the last event, processed
            time.sleep(1)
        time.sleep(3)
        started = runs(first)
        assert len(runs(second)) == 1
        assert len(started) == 1  # the second event fell in the first's cooldown
        run = started[0]
        assert run.parameters["model"] == first  # type: ignore[attr-defined]
        assert run.parameters["as_of"] == "2026-03-09T00:00:00+00:00"  # type: ignore[attr-defined]
        assert run.created_by.type == "AUTOMATION"  # type: ignore[attr-defined]
