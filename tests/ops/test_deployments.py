"""infra/prefect.yaml: rendered from the catalog, every entrypoint a flow, every schedule valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.models.catalog import MODELS
from tasks.ops import deployments

ROOT = Path(__file__).resolve().parents[2]
FLOW_NAMES = {
    "flows/ingest_validate.py:ingest_validate": "ingest-validate",
    "flows/build_features.py:build_features": "build-features",
    "flows/models.py:train_model": "train-model",
    "flows/models.py:score_model": "score-model",
    "flows/models.py:pipeline": "pipeline",
}


def _committed() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(deployments.PREFECT_FILE.read_text())
    return data


def _by_name() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in _committed()["deployments"]}


def test_committed_file_is_rendered_from_the_catalog() -> None:
    """Adding a model means re-running `python -m tasks.ops.deployments`; this fails until one does."""
    for path, text in deployments.rendered_files().items():
        assert path.read_text() == text, f"{path.name} is out of date: run python -m tasks.ops.deployments"


def test_simulated_platforms_have_a_daily_simulate_deployment_of_their_own() -> None:
    """simulate-daily lives in its own file (`liveyield serve --simulate` deploys it), lands
    yesterday before the day's ingest, and is a valid project file."""
    from prefect.cli.deploy._models import PrefectYamlModel

    data = yaml.safe_load(deployments.SIMULATE_FILE.read_text())
    PrefectYamlModel.model_validate(data)
    [daily] = data["deployments"]
    assert daily["name"] == "simulate-daily" and daily["entrypoint"] == "flows/simulate.py:simulate_daily"
    assert daily["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    minute, hour, *_ = daily["schedules"][0]["cron"].split()
    ingest = _by_name()["ingest-validate-daily"]["schedules"][0]["cron"].split()
    assert (int(hour), int(minute)) < (int(ingest[1]), int(ingest[0]))
    assert "simulate-daily" not in _by_name()  # a real platform never deploys it


def test_every_model_has_a_retraining_and_a_scoring_deployment() -> None:
    found = _by_name()
    for name, spec in MODELS.items():
        retrain = found[deployments.retrain_deployment(name).split("/")[1]]
        score = found[deployments.score_deployment(name).split("/")[1]]
        assert retrain["schedules"][0]["cron"] == spec.retrain_cron
        assert score["schedules"][0]["cron"] == spec.score_cron
        assert retrain["parameters"] == score["parameters"] == {"model": name}
        assert f"model:{name}" in retrain["tags"] and "stage:train" in retrain["tags"]
        assert f"model:{name}" in score["tags"] and "stage:score" in score["tags"]
        # One retraining per model at a time: a second run waits for the first.
        assert retrain["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    names = {d["name"] for d in _committed()["deployments"]}
    assert {"ingest-validate-daily", "build-features-daily", "pipeline-on-demand"} <= names
    assert len(names) == 3 + 2 * len(MODELS)


def test_file_is_a_valid_prefect_project_file() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(_committed())
    assert len(model.deployments) == len(_committed()["deployments"])
    for deployment in model.deployments:
        assert deployment.work_pool is not None and deployment.work_pool.name == deployments.WORK_POOL
        assert deployment.enforce_parameter_schema is True


@pytest.mark.parametrize("entrypoint", sorted(FLOW_NAMES))
def test_every_entrypoint_imports_and_is_a_flow(entrypoint: str) -> None:
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    path, func = entrypoint.split(":")
    flow: Any = load_flow_from_entrypoint(f"{ROOT / path}:{func}")
    assert isinstance(flow, Flow) and flow.name == FLOW_NAMES[entrypoint]
    for spec in _committed()["deployments"]:
        if spec["entrypoint"] == entrypoint:
            flow.validate_parameters(spec["parameters"])  # the deployment's parameters fit the flow


def test_each_retraining_is_triggered_by_its_own_models_drift_once_per_cooldown() -> None:
    """The trigger `prefect deploy` makes an automation of: the model's drift and performance
    events (its resource id only), reactive, first event fires, then ``within`` of cooldown."""
    import uuid

    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    from flows.models import train_model
    from tasks.monitoring.events import DRIFT_DETECTED, PERFORMANCE_DROPPED

    found = _by_name()
    for name in MODELS:
        deployment = found[deployments.retrain_deployment(name).split("/")[1]]
        [trigger] = _initialize_deployment_triggers(deployment["name"], deployment["triggers"])
        deployment_id = uuid.uuid4()
        trigger.set_deployment_id(deployment_id)
        automation = trigger.as_automation()
        event_trigger = automation.trigger
        assert isinstance(event_trigger, EventTrigger)
        assert isinstance(event_trigger.match, ResourceSpecification)
        assert event_trigger.match.model_dump() == {"prefect.resource.id": f"liveyield.model.{name}"}
        assert event_trigger.expect == {DRIFT_DETECTED, PERFORMANCE_DROPPED}
        assert event_trigger.posture == Posture.Reactive and event_trigger.threshold == 1
        assert event_trigger.within.total_seconds() == deployments.RETRAIN_COOLDOWN_S >= 3600
        [action] = automation.actions
        assert isinstance(action, RunDeployment) and action.deployment_id == deployment_id
        assert action.parameters is not None and action.parameters["model"] == name
        assert action.parameters["as_of"] == "{{ event.payload.as_of }}"
        rendered = {**action.parameters, "as_of": "2026-03-09T00:00:00+00:00", "reason": "drift"}
        train_model.validate_parameters(rendered)  # what the action passes fits the flow
    others = [d for d in _committed()["deployments"] if "stage:train" not in d["tags"]]
    assert others and all("triggers" not in d for d in others)


def test_entrypoints_in_the_file_are_known() -> None:
    assert {d["entrypoint"] for d in _committed()["deployments"]} == set(FLOW_NAMES)


def test_model_parameter_is_a_catalog_drop_down() -> None:
    """The UI shows a form: the model as a choice of catalog names, as_of as a date-time."""
    from prefect.utilities.callables import parameter_schema

    from flows.models import train_model

    schema = parameter_schema(train_model).model_dump()["properties"]
    assert schema["model"]["enum"] == sorted(MODELS)
    assert {"format": "date-time", "type": "string"} in schema["as_of"]["anyOf"]
    assert schema["build"]["type"] == "boolean"


def test_every_schedule_parses_with_an_explicit_timezone() -> None:
    import asyncio
    import datetime as dt

    from prefect.client.schemas.schedules import CronSchedule
    from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule

    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    for spec in _committed()["deployments"]:
        for raw in spec["schedules"]:
            assert raw["timezone"] == deployments.TIMEZONE
            CronSchedule(cron=raw["cron"], timezone=raw["timezone"])  # what `prefect deploy` builds
            server = ServerCronSchedule(cron=raw["cron"], timezone=raw["timezone"])
            runs = asyncio.run(server.get_dates(n=2, start=start))
            assert len(runs) == 2 and runs[0] >= start, spec["name"]


def test_data_flows_run_daily_before_scoring() -> None:
    found = _by_name()
    assert deployments.cadence(found["ingest-validate-daily"]["schedules"][0]["cron"]) == "daily"
    assert deployments.cadence(found["build-features-daily"]["schedules"][0]["cron"]) == "daily"
    assert found["pipeline-on-demand"]["schedules"] == []


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 * * * *", "hourly"),
        ("30 4 * * *", "daily"),
        ("0 3 * * 1", "weekly"),
        ("0 3 1 * *", "monthly"),
        ("*/5 * * * *", "custom"),
        ("0 3 * * 1-5", "custom"),
        ("nonsense", "custom"),
    ],
)
def test_cadence_names(cron: str, expected: str) -> None:
    assert deployments.cadence(cron) == expected


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "infra" / "prefect.yaml"
    stale.parent.mkdir()
    stale.write_text("deployments: []\n")
    monkeypatch.setattr(deployments, "PREFECT_FILE", stale)
    monkeypatch.setattr(deployments, "SIMULATE_FILE", stale.parent / "prefect-simulate.yaml")
    monkeypatch.setattr(deployments, "ROOT", tmp_path)
    assert deployments.main(["--check"]) == 1
    assert deployments.main([]) == 0
    assert deployments.main(["--check"]) == 0
    assert "simulate-daily" in (stale.parent / "prefect-simulate.yaml").read_text()


def test_compose_stack_takes_credentials_only_from_the_environment() -> None:
    import re

    compose_file = ROOT / "infra" / "compose.yaml"
    compose = yaml.safe_load(compose_file.read_text())
    assert {"postgres", "prefect-server", "worker", "mlflow-server"} <= set(compose["services"])
    names = [line.split("=", 1) for line in (ROOT / "infra" / ".env.example").read_text().splitlines()]
    example = {name: value for name, value in (n for n in names if len(n) == 2 and not n[0].startswith("#"))}
    assert all(value == "" for value in example.values()), ".env.example holds names only"
    used = set(re.findall(r"\$\{(\w+)", compose_file.read_text()))
    assert used <= set(example), f"variables not in .env.example: {used - set(example)}"
    for service in compose["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "KEY", "DB_URL", "CONNECTION_URL", "STORE_URI")):
                assert "${" in str(value), f"{key} must come from the environment"
