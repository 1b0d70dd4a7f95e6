"""The model flows: train-model (validate → features → train → register → gate → promote),
score-model (champion → scores, published atomically) and pipeline (every catalog model).

One flow serves every model: what differs between models lives in its ModelSpec.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.build_features import build_features
from tasks import steps
from tasks.gates import GateReport
from tasks.settings import code_version


def _as_of(value: dt.datetime | None) -> dt.datetime:
    return value or dt.datetime.now(dt.UTC)


def _name(kind: str) -> Any:
    def render() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters
        as_of = params.get("as_of") or dt.datetime.now(dt.UTC)
        return f"{kind}-{params.get('model', 'all')}-{str(as_of)[:10]}"

    return render


@flow(name="train-model", flow_run_name=_name("train"), log_prints=True)
def train_model(
    model: str,
    as_of: dt.datetime | None = None,
    build: bool = True,
    actor: str = "train-model",
    reason: str = "scheduled retraining",
) -> dict[str, Any]:
    """Train one catalog model and promote it if its gate passes."""
    logger = get_run_logger()
    as_of = _as_of(as_of)
    if build:
        build_features(end=as_of.date())
    trained = steps.train_candidate(model, as_of, code_version())
    registered = steps.register_candidate(model, trained["run_id"])
    report = steps.gate_candidate(model, registered["version"], trained["run_id"])
    create_markdown_artifact(
        key=f"gate-{model.replace('_', '-')}",
        markdown=GateReport.from_dict(report).to_markdown(),
        description=f"Promotion gate of {model} v{registered['version']}",
    )
    outcome = steps.promote_candidate(model, report, actor, reason)
    logger.info("%s v%s: gate %s; %s", model, registered["version"],
                "passed" if report["passed"] else "failed", outcome["detail"])  # fmt: skip
    return {
        **trained,
        **registered,
        "gate_passed": report["passed"],
        "gate_reason": report["reason"],
        **outcome,
    }


@flow(name="score-model", flow_run_name=_name("score"), log_prints=True)
def score_model(model: str, as_of: dt.datetime | None = None) -> dict[str, Any]:
    """Score every entity of a model's target with its champion and publish the score set."""
    as_of = _as_of(as_of)
    result = steps.score_model(model, as_of, int(dt.datetime.now(dt.UTC).timestamp()))
    create_markdown_artifact(
        key=f"scores-{model.replace('_', '-')}",
        markdown=(
            f"| model | version | rows | seconds | score set |\n|---|---:|---:|---:|---|\n"
            f"| {result['model']} | {result['version']} | {result['rows']} | {result['seconds']} "
            f"| {result['score_set_id']} |"
        ),
        description="Scoring summary",
    )
    return result


@flow(name="pipeline", flow_run_name=_name("pipeline"), log_prints=True)
def pipeline(models: list[str] | None = None, as_of: dt.datetime | None = None) -> dict[str, Any]:
    """Validate, build features once, then train and score every catalog model (or the ones named)."""
    from tasks.models.catalog import CATALOG

    as_of = _as_of(as_of)
    build_features(end=as_of.date())
    results: dict[str, Any] = {}
    for name in models or sorted(CATALOG):
        trained = train_model(name, as_of=as_of, build=False)
        scored = score_model(name, as_of=as_of) if trained["champion"] is not None else None
        results[name] = {"train": trained, "score": scored}
    return results
