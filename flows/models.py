"""The model flows: train-model (validate → features → train → register → gate → approve →
promote), score-model (champion → scores, published atomically) and pipeline (every catalog model).

One flow serves every model: what differs between models lives in its ModelSpec. A model whose
policy says ``requires_approval`` pauses after a passing gate until someone approves it in the
Prefect UI (typed input: approve, approver, reason); in-process runs, which no UI can resume,
take their decision in advance from :func:`decided` or do not promote.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.input import RunInput
from pydantic import Field, WithJsonSchema

from flows.build_features import build_features
from tasks import steps
from tasks.gates import GateReport
from tasks.models.catalog import MODELS, get_spec
from tasks.settings import code_version, get_settings

# A catalog model name; the deployment form in the UI shows the catalog as a drop-down list.
ModelName = Annotated[str, WithJsonSchema({"type": "string", "title": "model", "enum": sorted(MODELS)})]
APPROVAL_TIMEOUT_S = 24 * 3600


class Approval(RunInput):
    """The decision on a candidate that passed its gate, given in the Prefect UI."""

    approve: bool = Field(default=False, description="Promote this candidate to @champion.")
    approver: str = Field(min_length=1, description="Who decides (recorded in the alias ledger).")
    reason: str = Field(min_length=1, description="Why (recorded in the alias ledger).")


_DECISION: ContextVar[Approval | None] = ContextVar("liveyield_approval", default=None)


@contextmanager
def decided(approve: bool, approver: str, reason: str) -> Iterator[None]:
    """Decide approvals in advance for the flows run inside this block (in-process runs)."""
    token = _DECISION.set(Approval(approve=approve, approver=approver, reason=reason))
    try:
        yield
    finally:
        _DECISION.reset(token)


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
    model: ModelName,
    as_of: dt.datetime | None = None,
    build: bool = True,
    actor: str = "train-model",
    reason: str = "scheduled retraining",
    approval_timeout_s: int = APPROVAL_TIMEOUT_S,
) -> dict[str, Any]:
    """Train one catalog model and promote it if its gate passes (and, where required, it is approved)."""
    logger = get_run_logger()
    as_of = _as_of(as_of)
    if build:
        build_features(end=as_of.date())
    trained = steps.train_candidate(model, as_of, code_version())
    registered = steps.register_candidate(model, trained["run_id"])
    report = steps.gate_candidate(model, registered["version"], trained["run_id"])
    gate_markdown = GateReport.from_dict(report).to_markdown()
    create_markdown_artifact(
        key=f"gate-{model.replace('_', '-')}",
        markdown=gate_markdown,
        description=f"Promotion gate of {model} v{registered['version']}",
    )
    approval: dict[str, Any] = {"required": get_spec(model).policy.requires_approval, "decision": None}
    outcome: dict[str, Any] | None = None
    if approval["required"] and report["passed"] and report["champion_version"] != registered["version"]:
        decision = _approval(model, registered["version"], gate_markdown, approval_timeout_s)
        if decision is None:
            approval["decision"] = "not asked"
            outcome = {
                "promoted": False,
                "champion": report["champion_version"],
                "detail": "approval required: no server to ask on (run it with `liveyield serve` "
                "running, or decide in advance with --approve/--no-approve)",
            }
        else:
            approval |= {"decision": "approved" if decision.approve else "rejected",
                         "approver": decision.approver, "reason": decision.reason}  # fmt: skip
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
    result = {
        **trained,
        **registered,
        "gate_passed": report["passed"],
        "gate_reason": report["reason"],
        **outcome,
        "approval": approval,
    }
    _training_summary(result)
    return result


def _approval(model: str, version: int, gate_markdown: str, timeout_s: int) -> Approval | None:
    """The decision on a passing candidate: decided in advance, asked in the UI, or None (no server)."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    decision = _DECISION.get()
    if decision is not None:
        return decision
    if get_settings().prefect_api_url is None:  # the ephemeral API: no UI anyone could resume from
        return None
    logger = get_run_logger()
    logger.info("%s v%s passed its gate and needs approval: resume this run in the UI", model, version)
    form = Approval.with_initial_data(
        description=f"Approve {model} v{version} as @champion?\n\n{gate_markdown}", approve=False
    )
    try:
        return pause_flow_run(
            wait_for_input=form,
            timeout=timeout_s,
            poll_interval=5,
            key=f"approve-{model.replace('_', '-')}-v{version}",
        )
    except FlowPauseTimeout:
        # Prefect fails a run whose pause timed out; say why before it does.
        logger.error("%s v%s: no decision within %d s; not promoted", model, version, timeout_s)
        raise


def _training_summary(result: dict[str, Any]) -> None:
    """One-row table artifact of a training (what `liveyield retrain` prints from a server run)."""
    approval = result["approval"]
    create_table_artifact(
        key=f"train-{str(result['model']).replace('_', '-')}",
        table=[
            {
                "model": result["model"],
                "version": result["version"],
                "created": result["created"],
                "gate_passed": result["gate_passed"],
                "gate_reason": result["gate_reason"],
                "promoted": result["promoted"],
                "champion": result["champion"],
                "detail": result["detail"],
                "approval": approval["decision"] or ("required" if approval["required"] else "-"),
                "run_id": result["run_id"],
            }
        ],
        description=f"Training of {result['model']}",
    )


@flow(name="score-model", flow_run_name=_name("score"), log_prints=True)
def score_model(model: ModelName, as_of: dt.datetime | None = None) -> dict[str, Any]:
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
def pipeline(models: list[ModelName] | None = None, as_of: dt.datetime | None = None) -> dict[str, Any]:
    """Validate, build features once, then train and score every catalog model (or the ones named)."""
    as_of = _as_of(as_of)
    build_features(end=as_of.date())
    names = models or sorted(MODELS)
    progress: Any = create_progress_artifact(  # a UUID when called from sync code
        0.0, key="pipeline-progress", description=f"Models trained and scored (0 of {len(names)})"
    )
    results: dict[str, Any] = {}
    for done, name in enumerate(names, start=1):
        # One model's failure must not starve the others of their retraining: record it, go on,
        # and fail the run at the end naming every model that failed.
        try:
            trained = train_model(name, as_of=as_of, build=False)
            scored = score_model(name, as_of=as_of) if trained["champion"] is not None else None
            results[name] = {"train": trained, "score": scored}
        except Exception as exc:
            get_run_logger().error("%s failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        update_progress_artifact(
            progress,
            100.0 * done / len(names),
            description=f"Models trained and scored ({done} of {len(names)}; last: {name})",
        )
    failed = sorted(name for name, r in results.items() if "error" in r)
    if failed:
        raise PipelineFailed(results, failed)
    return results


class PipelineFailed(RuntimeError):
    """Some models of a pipeline run failed; ``results`` holds every model's outcome or error."""

    def __init__(self, results: dict[str, Any], failed: list[str]) -> None:
        details = "; ".join(f"{name}: {results[name]['error']}" for name in failed)
        super().__init__(f"{len(failed)} of {len(results)} models failed: {details}")
        self.results = results
