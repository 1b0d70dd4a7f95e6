"""Model commands: train, score, run the pipeline, retrain (on a server when one runs), and the
registry: list, show, pull, roll back and attest models.
"""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli import render
from flows.cli.errors import CliError, quiet_console_tracebacks
from flows.cli.options import AsOf, ModelArg, catalog_model, parse_as_of
from flows.results import TrainingSummary


def train(model: ModelArg, as_of: AsOf = None) -> None:
    """Train one model, register it, run its promotion gate and promote it if it passes."""
    from flows.models import train_model

    moment = parse_as_of(as_of)
    quiet_console_tracebacks()
    render.training(train_model(model, as_of=moment).summary())


def score(model: ModelArg, as_of: AsOf = None) -> None:
    """Score every entity with the model's champion and publish the score set."""
    from flows.models import score_model

    moment = parse_as_of(as_of)
    quiet_console_tracebacks()
    render.scoring(score_model(model, as_of=moment))


def run(
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Only these models (repeatable).")
    ] = None,
    as_of: AsOf = None,
) -> None:
    """The whole pipeline: validate, build features, then train, gate and score every model."""
    from flows.models import PipelineFailed, pipeline

    for name in models or []:
        catalog_model(name)
    moment = parse_as_of(as_of)
    quiet_console_tracebacks()
    try:
        result = pipeline(models=models or None, as_of=moment)
    except PipelineFailed as exc:
        render.pipeline(exc.results)
        raise CliError(str(exc)) from exc
    render.pipeline(result)


def retrain(
    model: ModelArg,
    as_of: AsOf = None,
    build: Annotated[bool, typer.Option(help="Validate landed data and build features first.")] = True,
    approve: Annotated[
        bool | None,
        typer.Option(
            "--approve/--no-approve",
            help="Decide now for a model that needs approval (else: in the Prefect UI, on a server).",
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="Why, with --approve/--no-approve; recorded in the alias ledger.")
    ] = None,
) -> None:
    """Retrain a model now: its deployment on the Prefect server (else in-process), followed to the end."""
    from tasks.models.catalog import get_spec
    from tasks.ops.servers import prefect_api_url
    from tasks.settings import get_settings

    approver = getpass.getuser()
    why = reason or ("approved" if approve else "rejected") + " at the command line"
    moment = parse_as_of(as_of)
    api_url = prefect_api_url(get_settings())
    if api_url is not None:  # without --as-of the worker's run resolves "now" by the same rule
        given = moment if as_of is not None else None
        render.training(_retrain_on_server(api_url, model, given, build, approve, approver, why))
        return
    if get_spec(model).policy.requires_approval and approve is None:
        raise CliError(
            f"{model} needs an approval before promotion and no Prefect server is configured: "
            "pass --approve or --no-approve (with --reason), or start one with `liveyield serve`"
        )
    from flows.approval import decided
    from flows.models import train_model

    quiet_console_tracebacks()
    if approve is None:
        result = train_model(model, as_of=moment, build=build, actor=approver, reason="manual retraining")
    else:
        with decided(approve, approver, why):
            result = train_model(model, as_of=moment, build=build)
    render.training(result.summary())


def _retrain_on_server(
    api_url: str,
    model: str,
    as_of: dt.datetime | None,
    build: bool,
    approve: bool | None,
    approver: str,
    reason: str,
) -> TrainingSummary:
    """Trigger the model's retrain deployment, follow the run (answering a pause), read its summary."""
    from tasks.ops import remote
    from tasks.ops.deployments import retrain_deployment

    deployment = retrain_deployment(model)
    parameters: dict[str, Any] = {
        "model": model,
        "build": build,
        "actor": approver,
        "reason": "manual retraining",
    }
    if as_of is not None:
        parameters["as_of"] = as_of.isoformat()
    run_id, name = remote.trigger(api_url, deployment, parameters)
    url = remote.flow_run_url(api_url, run_id)
    render.console.print(f"{deployment}: flow run {name} — {url}", highlight=False)

    def on_state(state: str, message: str | None) -> None:
        render.console.print(
            f"  {state}" + (f": {message}" if message and state != "Paused" else ""), highlight=False
        )
        if state == "Paused" and approve is None:
            render.console.print(
                f"  waiting for an approval: open {url} and resume it (approve, approver, reason)"
            )

    def on_paused() -> dict[str, Any] | None:
        if approve is None:
            return None
        return {"approve": approve, "approver": approver, "reason": reason}

    try:
        final = remote.follow(api_url, run_id, on_state=on_state, on_paused=on_paused)
    except KeyboardInterrupt:
        render.console.print(f"stopped following; the run goes on: {url}")
        raise typer.Abort() from None
    if final != "Completed":
        raise CliError(f"flow run {name} ended {final}; see {url}")
    rows = remote.table_artifact(api_url, run_id, f"train-{model.replace('_', '-')}")
    if not rows:
        raise CliError(f"flow run {name} completed but left no training summary; see {url}")
    return TrainingSummary(**{key: rows[0][key] for key in TrainingSummary.__dataclass_fields__})


models_app = typer.Typer(
    help="The model registry: list, inspect, pull and roll back models.", no_args_is_help=True
)


@models_app.command("list")
def models_list() -> None:
    """List registered models with their champion and latest version."""
    from tasks.registry import list_models
    from tasks.settings import get_settings

    render.registered_models(list_models(get_settings().mlflow_tracking_uri))


@models_app.command("show")
def models_show(model: ModelArg) -> None:
    """Show a model's versions, aliases, lineage tags, gate verdicts and champion history."""
    import json

    from tasks.db import make_engine
    from tasks.gates import ledger
    from tasks.registry import show
    from tasks.settings import get_settings

    settings = get_settings()
    info = show(settings.mlflow_tracking_uri, model)
    engine = make_engine(settings.db_url)
    try:
        info["champion_history"] = ledger(engine, model)
    finally:
        engine.dispose()
    render.console.print_json(json.dumps(info, default=str))


@models_app.command("pull")
def models_pull(
    model: ModelArg,
    to: Annotated[Path, typer.Option("--to", help="Folder to copy the verified model into.")] = Path(
        "models"
    ),
    version: Annotated[
        int | None, typer.Option(help="A pinned, approved version (default: @champion).")
    ] = None,
) -> None:
    """Copy the approved model (checksum-verified) and its metadata into a folder."""
    from tasks.registry import pull
    from tasks.settings import get_settings

    path = pull(get_settings().mlflow_tracking_uri, model, to, version=version)
    render.console.print(f"pulled {model} into {path}")


@models_app.command("rollback")
def models_rollback(
    model: ModelArg,
    reason: Annotated[str, typer.Option(help="Why; recorded in the alias ledger.")] = "manual rollback",
) -> None:
    """Move @champion back to the previous champion (one ledger entry); its latest score set is
    republished, or the published scores are marked stale when it has none."""
    from tasks.db import make_engine
    from tasks.lifecycle import roll_back
    from tasks.scoring import publication
    from tasks.settings import get_settings

    settings = get_settings()
    version = roll_back(settings, model, actor=getpass.getuser(), reason=reason)
    render.console.print(f"{model}: champion is now v{version}")
    engine = make_engine(settings.db_url)
    try:
        published = publication(engine, model)
    finally:
        engine.dispose()
    if published is None:
        render.console.print(f"{model}: no published scores")
    else:
        render.console.print(
            f"{model}: published scores are {published['status']}: score set {published['score_set_id']} "
            f"of v{published['model_version']} (as_of {published['as_of']})"
        )


@models_app.command("attest")
def models_attest(
    models: Annotated[list[str] | None, typer.Argument(help="Models (default: every catalog model).")] = None,
) -> None:
    """Once after upgrading: record the checksum of every champion-history version moved before the
    warehouse kept integrity records (each artifact must still match its registration checksum)."""
    from tasks.db import make_engine
    from tasks.gates.promotion import record_integrity
    from tasks.lifecycle import mlflow_client
    from tasks.models.catalog import MODELS
    from tasks.settings import get_settings
    from tasks.warehouse import upgrade_schema

    names = [catalog_model(m) for m in models] if models else list(MODELS)
    settings = get_settings()
    engine = make_engine(settings.db_url)
    try:
        upgrade_schema(engine)  # the columns the records go in
        client = mlflow_client(settings)
        for name in names:
            filled = record_integrity(engine, client, name)
            done = ", ".join(f"v{v}" for v in sorted(filled)) or "nothing to fill"
            render.console.print(f"{name}: {done}")
    finally:
        engine.dispose()
