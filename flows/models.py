"""The model flows: train-model (validate → features → train → register → gate → approve →
promote), score-model (champion → scores, published atomically) and pipeline (every catalog model).

One flow serves every model: what differs between models lives in its ModelSpec. On a Dask
cluster (tasks/ops/cluster.py) score-model scores a per-entity model in entity-key partitions on
the workers (see ``_score_on_cluster``); elsewhere, and for a model with its own score format, it
scores in one task in the flow's process. A model whose policy says ``requires_approval`` asks
for an approval after a passing gate (flows/approval.py). Each flow resolves ``as_of`` by the rule
in tasks/dates.py (a deployment run's "now" is its scheduled time, flows/schedule.py) and returns
a typed result; a scheduled run that a newer due run of its deployment supersedes does nothing
(the late-run policy, flows/schedule.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import WithJsonSchema

from flows.approval import APPROVAL_TIMEOUT_S, ask_for_approval
from flows.build_features import build_features
from flows.results import ApprovalRecord, ModelOutcome, PipelineResult, ScoringResult, TrainingResult
from flows.schedule import latest_wins, name_day, run_as_of
from tasks import steps
from tasks.gates import GateReport
from tasks.models.catalog import MODELS, get_spec
from tasks.ops import cluster
from tasks.scoring.partitions import partitionable
from tasks.settings import code_version

# A catalog model name; the deployment form in the UI shows the catalog as a drop-down list.
ModelName = Annotated[str, WithJsonSchema({"type": "string", "title": "model", "enum": sorted(MODELS)})]


def _name(kind: str) -> Any:
    def render() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters
        day = name_day(params.get("as_of"))
        return f"{kind}-{params.get('model', 'all')}-{day}"

    return render


@flow(name="train-model", flow_run_name=_name("train"), log_prints=True)
@latest_wins
def train_model(
    model: ModelName,
    as_of: dt.datetime | None = None,
    build: bool = True,
    actor: str = "train-model",
    reason: str = "scheduled retraining",
    approval_timeout_s: int = APPROVAL_TIMEOUT_S,
) -> TrainingResult:
    """Train one catalog model and promote it if its gate passes (and, where required, it is approved)."""
    logger = get_run_logger()
    as_of = run_as_of(as_of)
    if build:
        build_features(as_of=as_of)
    trained = steps.train_candidate(model, as_of, code_version())
    logger.info("%s: %s", model, trained.get("sampling") or "sampling not reported")
    registered = steps.register_candidate(model, trained["run_id"])
    report = steps.gate_candidate(model, registered["version"], trained["run_id"])
    gate_markdown = GateReport.from_dict(report).to_markdown()
    create_markdown_artifact(
        key=f"gate-{model.replace('_', '-')}",
        markdown=gate_markdown,
        description=f"Promotion gate of {model} v{registered['version']}",
    )
    approval = ApprovalRecord(required=get_spec(model).policy.requires_approval)
    outcome: dict[str, Any] | None = None
    if approval.required and report["passed"] and report["champion_version"] != registered["version"]:
        decision = ask_for_approval(model, registered["version"], gate_markdown, approval_timeout_s)
        if decision is None:
            approval = ApprovalRecord(required=True, decision="not asked")
            outcome = {
                "promoted": False,
                "champion": report["champion_version"],
                "detail": "approval required: no server to ask on (run it with `liveyield serve` "
                "running, or decide in advance with --approve/--no-approve)",
            }
        else:
            approval = ApprovalRecord(
                required=True,
                decision="approved" if decision.approve else "rejected",
                approver=decision.approver,
                reason=decision.reason,
            )
            actor, reason = decision.approver, decision.reason
            if not decision.approve:
                outcome = {
                    "promoted": False,
                    "champion": report["champion_version"],
                    "detail": f"rejected by {decision.approver}: {decision.reason}",
                }
    if outcome is None:
        outcome = steps.promote_candidate(model, report, actor, reason)
    logger.info("%s v%s: gate %s; %s", model, registered["version"],
                "passed" if report["passed"] else "failed", outcome["detail"])  # fmt: skip
    result = TrainingResult(
        model=model,
        run_id=trained["run_id"],
        version=registered["version"],
        created=registered["created"],
        examples=trained["examples"],
        fit_seconds=trained["fit_seconds"],
        metrics=trained["metrics"],
        headline=trained["headline"],
        gate_passed=report["passed"],
        gate_reason=report["reason"],
        promoted=outcome["promoted"],
        champion=outcome["champion"],
        detail=outcome["detail"],
        approval=approval,
        sampling=trained.get("sampling", ""),
    )
    create_table_artifact(  # what `liveyield retrain` prints from a server run
        key=f"train-{model.replace('_', '-')}", table=[result.as_row()], description=f"Training of {model}"
    )
    return result


class ScoringError(RuntimeError):
    """A fanned-out scoring run lost partitions: its staged set is left unpublished."""


@flow(
    name="score-model",
    flow_run_name=_name("score"),
    log_prints=True,
    task_runner=cluster.SettingsTaskRunner(),
)
@latest_wins
def score_model(model: ModelName, as_of: dt.datetime | None = None) -> ScoringResult:
    """Score every entity of a model's target with its champion and publish the score set; the same
    step monitors what it scores (refusing stale inputs; drift is reported, never blocking)."""
    from flows.monitor import publish_artifact, publish_status

    as_of = run_as_of(as_of)
    now = int(dt.datetime.now(dt.UTC).timestamp())
    if cluster.on_cluster() and partitionable(get_spec(model)):
        scored = _score_on_cluster(model, as_of, now)
    else:
        scored = steps.score_model(model, as_of, now)
    publish_artifact(scored["monitor"])
    result = ScoringResult(**{k: v for k, v in scored.items() if k != "monitor"})
    create_markdown_artifact(
        key=f"scores-{model.replace('_', '-')}",
        markdown=(
            f"| model | version | rows | seconds | score set |\n|---|---:|---:|---:|---|\n"
            f"| {result.model} | {result.version} | {result.rows} | {result.seconds} "
            f"| {result.score_set_id} |"
        ),
        description="Scoring summary",
    )
    publish_status(as_of)  # the platform's status table, this model's new scores in it
    return result


def _score_on_cluster(model: str, as_of: dt.datetime, now: int) -> dict[str, Any]:
    """Score in entity-key partitions on the workers (tasks/scoring/partitions.py).

    In the flow: freshness and drift on the whole frame, and the staged empty set (plan_scoring);
    on the workers, all at once: each partition's frame, predictions by the champion version the
    plan resolved (each worker loads it from the registry) and rows written into the staged set;
    in the flow again: the stored set validated and published by the single flip. A lost
    partition fails the run naming the model, the set unpublished (the published one stays).
    """
    import time

    started = time.perf_counter()
    plan = steps.plan_scoring(model, as_of, now, cluster.worker_count())
    warehouse = cluster.warehouse_id()
    futures = cluster.submit_each(
        steps.score_partition,
        [
            {
                "model": model,
                "version": plan["version"],
                "as_of": as_of,
                "score_set_id": plan["score_set_id"],
                "part": part,
                "parts": plan["parts"],
                "warehouse": warehouse,
            }
            for part in range(plan["parts"])
        ],
    )
    states = [cluster.settle(future) for future in futures]
    failed = [state for state in states if not state.is_completed()]
    if failed:
        raise ScoringError(
            f"{model}: {len(failed)} of {len(states)} scoring partitions failed, score set "
            f"{plan['score_set_id']} not published: {failed[0].message or 'failed'}"
        )
    parts = [state.result() for state in states]
    rows = sum(int(p["rows"]) for p in parts)
    published = steps.publish_scores(model, plan["score_set_id"], rows, now)
    return {
        "model": plan["model"],
        "version": plan["version"],
        "rows": rows,
        "score_set_id": plan["score_set_id"],
        **published,
        "seconds": round(time.perf_counter() - started, 2),
        "monitor": plan["monitor"],
        "workers": cluster.tally(p["worker"] for p in parts),
    }


@flow(name="pipeline", flow_run_name=_name("pipeline"), log_prints=True)
def pipeline(models: list[ModelName] | None = None, as_of: dt.datetime | None = None) -> PipelineResult:
    """Validate, build features once, then train and score every catalog model (or the ones named)."""
    as_of = run_as_of(as_of)
    build_features(as_of=as_of)
    names = models or sorted(MODELS)
    progress: Any = create_progress_artifact(  # a UUID when called from sync code
        0.0, key="pipeline-progress", description=f"Models trained and scored (0 of {len(names)})"
    )
    outcomes: dict[str, ModelOutcome] = {}
    for done, name in enumerate(names, start=1):
        # One model's failure must not starve the others of their retraining: record it, go on,
        # and fail the run at the end naming every model that failed.
        # The error names the step that failed (train-model or score-model), not just the exception.
        step = "train-model"
        try:
            trained = train_model(name, as_of=as_of, build=False)
            step = "score-model"
            scored = score_model(name, as_of=as_of) if trained.champion is not None else None
            outcomes[name] = ModelOutcome(train=trained, score=scored)
        except Exception as exc:
            get_run_logger().error("%s: %s failed: %s: %s", name, step, type(exc).__name__, exc)
            outcomes[name] = ModelOutcome(error=f"{step} failed: {type(exc).__name__}: {exc}")
        update_progress_artifact(
            progress,
            100.0 * done / len(names),
            description=f"Models trained and scored ({done} of {len(names)}; last: {name})",
        )
    result = PipelineResult(outcomes)
    if result.failed:
        raise PipelineFailed(result)
    return result


class PipelineFailed(RuntimeError):
    """Some models of a pipeline run failed; ``results`` holds every model's outcome or error."""

    def __init__(self, results: PipelineResult) -> None:
        details = "; ".join(f"{name}: {results.models[name].error}" for name in results.failed)
        super().__init__(f"{len(results.failed)} of {len(results.models)} models failed: {details}")
        self.results = results

    def __reduce__(self) -> tuple[Any, ...]:
        return (PipelineFailed, (self.results,))
