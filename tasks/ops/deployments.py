"""The Prefect deployments of the platform, rendered from the model catalog into infra/prefect.yaml.

One scheduled retraining and one scheduled scoring deployment per catalog model (crons from
its ModelSpec; the retraining also started by the model's drift events, ``retrain_trigger``),
plus the data deployments (ingest-validate, build-features) and an unscheduled pipeline. A
simulated platform has one more, simulate-daily (infra/prefect-simulate.yaml, deployed by
`liveyield serve --simulate` only): yesterday's data lands shortly after midnight.
Adding a model means adding its spec, then re-rendering:

    python -m tasks.ops.deployments            # rewrites both files
    python -m tasks.ops.deployments --check    # exits 1 when one is out of date

A day of a served platform: simulate-daily 00:15 (simulated platforms), ingest-validate 01:00,
build-features 02:00, retraining from 03:00 (daily or weekly per model), scoring from 04:00
(hourly for the traffic models). Late runs: every deployment runs one at a time (later runs
wait), a run started late works as of its scheduled time, and a run that a newer due run of
its deployment supersedes completes at once without working (flows/schedule.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from tasks.models.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
PREFECT_FILE = ROOT / "infra" / "prefect.yaml"
SIMULATE_FILE = ROOT / "infra" / "prefect-simulate.yaml"
WORK_POOL = "liveyield-process"
TIMEZONE = "UTC"
SIMULATE_CRON = "15 0 * * *"  # daily, yesterday's simulated data shortly after midnight
INGEST_CRON = "0 1 * * *"  # daily, after the day's landing batches are complete
FEATURES_CRON = "0 2 * * *"  # daily, after ingest-validate

# A model's drift or performance events start its retraining at most once per this window: the
# first event fires at once, later ones of the same model within the window are ignored (a
# persisting drift is reported by every monitoring and scoring run, about daily).
RETRAIN_COOLDOWN_S = 24 * 3600
RETRAIN_ACTOR = "retrain-trigger"

TRAIN_FLOW = "train-model"
SCORE_FLOW = "score-model"

HEADER = """\
# Prefect deployments of liveyield. GENERATED from the model catalog by
#   python -m tasks.ops.deployments
# Do not edit by hand: change a ModelSpec (retrain_cron, score_cron) or tasks/ops/deployments.py
# and re-render. Deploy from the repository root (what `liveyield serve` does):
#   prefect deploy --prefect-file infra/prefect.yaml --all
# Late runs: one run at a time per deployment; a late run works as of its scheduled time; a run
# that a newer due run of its deployment supersedes completes at once (flows/schedule.py).
# There is no pull section on purpose: run from the repository root, `prefect deploy` records
# that folder as the flows' working directory, which a process worker on the same machine uses.
# Credentials never appear here or in parameters: flows read them from the worker's environment.
"""


def retrain_deployment(model: str) -> str:
    """The retraining deployment of a model, as ``flow/deployment`` (for run_deployment)."""
    return f"{TRAIN_FLOW}/{model}-retrain"


def score_deployment(model: str) -> str:
    """The scoring deployment of a model, as ``flow/deployment``."""
    return f"{SCORE_FLOW}/{model}-score"


def cadence(cron: str) -> str:
    """A word for how often a five-field cron fires: hourly, daily, weekly, monthly or custom."""
    fields = cron.split()
    if len(fields) != 5:
        return "custom"
    minute, hour, dom, month, dow = fields
    if not minute.isdigit():
        return "custom"
    if (hour, dom, month, dow) == ("*", "*", "*", "*"):
        return "hourly"
    if hour.isdigit() and (dom, month, dow) == ("*", "*", "*"):
        return "daily"
    if hour.isdigit() and (dom, month) == ("*", "*") and dow.isdigit():
        return "weekly"
    if hour.isdigit() and dom.isdigit() and (month, dow) == ("*", "*"):
        return "monthly"
    return "custom"


def _schedule(cron: str) -> list[dict[str, Any]]:
    return [{"cron": cron, "timezone": TIMEZONE, "active": True}]


def _deployment(
    name: str,
    entrypoint: str,
    description: str,
    tags: list[str],
    parameters: dict[str, Any],
    schedules: list[dict[str, Any]],
    *,
    one_at_a_time: bool = False,
    triggers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "entrypoint": entrypoint,
        "description": description,
        "tags": tags,
        "parameters": parameters,
        "enforce_parameter_schema": True,
        "schedules": schedules,
    }
    if one_at_a_time:
        # A second run of the same deployment waits for the first (never two at once).
        spec["concurrency_limit"] = {"limit": 1, "collision_strategy": "ENQUEUE"}
    spec["work_pool"] = {"name": WORK_POOL, "work_queue_name": "default", "job_variables": {}}
    if triggers:
        spec["triggers"] = triggers  # `prefect deploy` turns each into an automation of the deployment
    return spec


def retrain_trigger(model: str) -> dict[str, Any]:
    """The retraining deployment's trigger: a drift or performance event of this model (its
    resource id) runs the deployment at the as_of monitoring looked at, once per cooldown window.

    A reactive trigger with threshold 1 fires on the first matching event and then opens its next
    window only when ``within`` has passed since; events in between are spent on nothing. That is
    Prefect's trigger engine (prefect.server.events.triggers.evaluate), not code of ours."""
    from tasks.monitoring.events import RETRAIN_EVENTS, model_resource_id

    return {
        "type": "event",
        "name": f"{model}-retrain-on-drift",
        "description": f"Retrain {model} when monitoring finds drift or a performance drop "
        f"(at most once per {RETRAIN_COOLDOWN_S // 3600} h).",
        "enabled": True,
        "match": {"prefect.resource.id": model_resource_id(model)},
        "expect": list(RETRAIN_EVENTS),
        "for_each": ["prefect.resource.id"],
        "posture": "Reactive",
        "threshold": 1,
        "within": RETRAIN_COOLDOWN_S,
        "parameters": {
            "model": model,
            "as_of": "{{ event.payload.as_of }}",
            "actor": RETRAIN_ACTOR,
            "reason": "retraining on {{ event.event }}",
        },
    }


def model_deployments(spec: ModelSpec) -> list[dict[str, Any]]:
    """A model's retraining and scoring deployments."""
    retrain, score = cadence(spec.retrain_cron), cadence(spec.score_cron)
    approval = " Needs an approval in the UI before promotion." if spec.policy.requires_approval else ""
    return [
        _deployment(
            retrain_deployment(spec.name).split("/", 1)[1],
            "flows/models.py:train_model",
            f"Retrain {spec.name} ({retrain}, `{spec.retrain_cron}` {TIMEZONE}): build features, train, "
            f"register, gate and promote if it passes.{approval} {spec.description}",
            [f"model:{spec.name}", "stage:train", f"kind:{spec.kind}"],
            {"model": spec.name},
            _schedule(spec.retrain_cron),
            one_at_a_time=True,
            triggers=[retrain_trigger(spec.name)],
        ),
        _deployment(
            score_deployment(spec.name).split("/", 1)[1],
            "flows/models.py:score_model",
            f"Score every {spec.scoring.entity} with {spec.name}@champion ({score}, "
            f"`{spec.score_cron}` {TIMEZONE}) and publish the score set atomically.",
            [f"model:{spec.name}", "stage:score", f"kind:{spec.kind}"],
            {"model": spec.name},
            _schedule(spec.score_cron),
            one_at_a_time=True,
        ),
    ]


def render_deployments(catalog: dict[str, ModelSpec] | None = None) -> dict[str, Any]:
    """The prefect.yaml document for the catalog given (default: the platform's catalog)."""
    if catalog is None:
        from tasks.models.catalog import MODELS

        catalog = MODELS
    deployments = [
        _deployment(
            "ingest-validate-daily",
            "flows/ingest_validate.py:ingest_validate",
            f"Validate and load every landed batch (daily, `{INGEST_CRON}` {TIMEZONE}).",
            ["stage:ingest"],
            {},
            _schedule(INGEST_CRON),
            one_at_a_time=True,
        ),
        _deployment(
            "build-features-daily",
            "flows/build_features.py:build_features",
            f"Materialise every feature view incrementally (daily, `{FEATURES_CRON}` {TIMEZONE}); "
            "set full, start and end to rebuild a range.",
            ["stage:features"],
            {"full": False},
            _schedule(FEATURES_CRON),
            one_at_a_time=True,
        ),
        _deployment(
            "pipeline-on-demand",
            "flows/models.py:pipeline",
            "The whole pipeline on demand: validate, build features, train, gate and score every "
            "catalog model (or the ones chosen).",
            ["stage:pipeline"],
            {},
            [],
            one_at_a_time=True,
        ),
    ]
    for name in sorted(catalog):
        deployments += model_deployments(catalog[name])
    return {"name": "liveyield", "build": None, "push": None, "pull": None, "deployments": deployments}


def render_simulate() -> dict[str, Any]:
    """The prefect-simulate.yaml document: the simulated platform's daily data."""
    daily = _deployment(
        "simulate-daily",
        "flows/simulate.py:simulate_daily",
        f"Append yesterday to the simulated platform (daily, `{SIMULATE_CRON}` {TIMEZONE}); "
        "set day to simulate through another day.",
        ["stage:simulate"],
        {},
        _schedule(SIMULATE_CRON),
        one_at_a_time=True,
    )
    return {"name": "liveyield-simulate", "build": None, "push": None, "pull": None, "deployments": [daily]}


def _text(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


def render_text(catalog: dict[str, ModelSpec] | None = None) -> str:
    """infra/prefect.yaml as text: the header comment, then the YAML document."""
    return _text(render_deployments(catalog))


def rendered_files() -> dict[Path, str]:
    """Every generated deployment file and its text."""
    return {PREFECT_FILE: render_text(), SIMULATE_FILE: _text(render_simulate())}


def main(argv: list[str] | None = None) -> int:
    """Write the deployment files (or, with --check, say whether they are up to date)."""
    args = sys.argv[1:] if argv is None else argv
    stale = []
    for path, text in rendered_files().items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if "--check" in args:
            stale.append(path)
            print(f"{path.relative_to(ROOT)} is out of date: run python -m tasks.ops.deployments")
            continue
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)} ({len(yaml.safe_load(text)['deployments'])} deployments)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
