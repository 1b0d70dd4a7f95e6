"""The ``liveyield`` command: a thin layer over the flows.

Every subcommand has ``--help``. Bad arguments and known failures print one line starting
with ``error:`` and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.exceptions import TyperException

app = typer.Typer(
    name="liveyield",
    help="MLOps for live-streaming monetization: simulate, import, validate and run the pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide enough for the tables when output is piped (rich would assume 80 columns).
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)


class CliError(Exception):
    """A failure the user can act on; printed as one line."""


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _positive(value: int) -> int:
    if value < 1:
        raise typer.BadParameter("must be at least 1")
    return value


@app.command()
def simulate(
    users: Annotated[int, typer.Option(help="Users on the platform.", callback=_positive)] = 2000,
    streamers: Annotated[int, typer.Option(help="Streamers on the platform.", callback=_positive)] = 120,
    days: Annotated[int, typer.Option(help="Days to simulate.", callback=_positive)] = 28,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 7,
    start: Annotated[str, typer.Option(help="First simulated day (YYYY-MM-DD).")] = "2026-01-05",
    ingest: Annotated[bool, typer.Option(help="Validate and load into the warehouse afterwards.")] = True,
) -> None:
    """Simulate a live-streaming platform into the landing zone (and the warehouse)."""
    start_date = _date(start)
    assert start_date is not None
    rows = _simulate(users=users, streamers=streamers, days=days, seed=seed, start=start_date)
    console.print(f"simulated {sum(rows.values()):,} rows in {len(rows)} tables")
    if ingest:
        _print_quality(_ingest())


@app.command("import")
def import_(
    table: Annotated[str, typer.Argument(help="Raw table to load, e.g. raw_orders.")],
    file: Annotated[Path, typer.Argument(help="CSV (optionally .gz/.xz/.zip) or Parquet file.")],
    mapping: Annotated[Path | None, typer.Option(help="Column-mapping YAML for a foreign schema.")] = None,
) -> None:
    """Import a CSV or Parquet file into a raw table through the data-quality gate."""
    from tasks import importer
    from tasks.db import make_engine, write_tx
    from tasks.settings import get_settings, pseudonym_key
    from tasks.warehouse import store_identities, upgrade_schema

    settings = get_settings()
    spec = importer.load_mapping(mapping) if mapping else None
    files, identities, rows = importer.land_import(
        file, table, settings.landing_dir, pseudonym_key(settings), spec
    )
    if len(identities):
        engine = make_engine(settings.db_url)
        upgrade_schema(engine)
        with write_tx(engine) as conn:
            store_identities(conn, identities.frame)
        engine.dispose()
    console.print(f"landed {rows:,} rows of {file.name} into {len(files)} partition batches of {table}")
    _print_quality(_ingest(table=table, max_bad_share=spec.max_bad_share if spec else None))


@app.command()
def validate(
    table: Annotated[str | None, typer.Option(help="Only this raw table.")] = None,
    date: Annotated[str | None, typer.Option(help="Only this event-date partition (YYYY-MM-DD).")] = None,
) -> None:
    """Run the data-quality gate on landed batches and load what passes."""
    _print_quality(_ingest(table=table, partition=_date(date)))


@app.command()
def demo(
    # 5,000 users give the rarest label (ad conversions) a holdout large enough to judge.
    users: Annotated[int, typer.Option(help="Users on the demo platform.", callback=_positive)] = 5000,
    days: Annotated[int, typer.Option(help="Days to simulate.", callback=_positive)] = 28,
) -> None:
    """Simulate a platform and run the pipeline that exists so far, then print a summary."""
    started = time.perf_counter()
    rows = _simulate(
        users=users, streamers=max(20, users // 16), days=days, seed=7, start=dt.date(2026, 1, 5)
    )
    console.print(f"simulated {sum(rows.values()):,} rows")
    from flows.build_features import build_features

    summary = _ingest()
    _print_quality(summary)
    result = build_features(validate_first=False)
    console.print(f"built {sum(map(len, result['built'].values()))} feature partitions")
    features_list()
    from flows.models import PipelineFailed, pipeline

    # As of the end of the simulated period, so every model trains on the whole history.
    as_of = dt.datetime.combine(dt.date(2026, 1, 5) + dt.timedelta(days=days), dt.time(), dt.UTC)
    try:
        _print_pipeline(pipeline(as_of=as_of))
    except PipelineFailed as exc:
        _print_pipeline(exc.results)
        raise CliError(str(exc)) from exc
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")


features_app = typer.Typer(
    help="The feature store: list views, build them, export training sets.", no_args_is_help=True
)
app.add_typer(features_app, name="features")


@features_app.command("list")
def features_list() -> None:
    """List feature views with their version and freshness."""
    from tasks.db import make_engine
    from tasks.featurestore import freshness
    from tasks.featurestore.views import FEATURE_VIEWS
    from tasks.settings import get_settings

    engine = make_engine(get_settings().db_url)
    built = {row["view"]: row for row in freshness(engine)}
    engine.dispose()
    table = Table("view", "entity", "version", "features", "ttl", "partitions", "rows", "fresh until")
    for name, view in sorted(FEATURE_VIEWS.items()):
        row = built.get(name, {})
        latest = row.get("latest_feature_ts")
        fresh = (
            dt.datetime.fromtimestamp(latest, dt.UTC).strftime("%Y-%m-%d %H:%M") if latest else "never built"
        )
        table.add_row(
            name,
            view.entity,
            view.version,
            str(len(view.features)),
            f"{view.ttl_s // 3600} h",
            str(row.get("partitions_built", 0)),
            f"{row.get('rows', 0):,}",
            fresh,
        )
    console.print(table)


@features_app.command("build")
def features_build(
    start: Annotated[str | None, typer.Option(help="First partition (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last partition (YYYY-MM-DD).")] = None,
    full: Annotated[
        bool, typer.Option(help="Rebuild every partition in range, not only stale ones.")
    ] = False,
) -> None:
    """Validate landed data, then materialise every feature view (incrementally by default)."""
    from flows.build_features import build_features

    first, last = _date(start), _date(end)
    if full and (first is None or last is None):
        raise typer.BadParameter("--full needs --start and --end")
    result = build_features(start=first, end=last, full=full)
    console.print(
        f"built {sum(map(len, result['built'].values()))} partitions over {len(result['built'])} views"
    )
    features_list()


@features_app.command("get")
def features_get(
    entities: Annotated[Path, typer.Option(help="CSV/Parquet of entity keys and event_ts.")],
    features: Annotated[str, typer.Option(help="Comma-separated refs, e.g. user_watch:watch_minutes_7d.")],
    out: Annotated[Path, typer.Option(help="Output file: .csv or .parquet.")],
    no_backfill_leak: Annotated[
        bool, typer.Option(help="Ignore feature rows created after each event (created_ts <= event_ts).")
    ] = False,
) -> None:
    """Export a point-in-time-correct training set for the given entity rows."""
    from tasks.featurestore.export import export_training_set

    rows = export_training_set(
        entities,
        [f.strip() for f in features.split(",") if f.strip()],
        out,
        created_before_event=no_backfill_leak,
    )
    console.print(f"wrote {rows:,} rows to {out}")


def _as_of(value: str | None) -> dt.datetime | None:
    """An --as-of option: a date means the end of that day (UTC); a date-time is taken as UTC."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date or date-time (YYYY-MM-DD[THH:MM])") from None
    if len(value) == 10:
        moment += dt.timedelta(days=1)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _model(name: str) -> str:
    from tasks.models.catalog import MODELS

    if name not in MODELS:
        raise typer.BadParameter(f"unknown model {name!r}; the catalog has: {', '.join(sorted(MODELS))}")
    return name


AsOf = Annotated[str | None, typer.Option("--as-of", help="Train/score as of this date (YYYY-MM-DD), UTC.")]
ModelName = Annotated[str, typer.Argument(help="A model of the catalog, e.g. ad_ctr.", callback=_model)]


@app.command()
def train(model: ModelName, as_of: AsOf = None) -> None:
    """Train one model, register it, run its promotion gate and promote it if it passes."""
    from flows.models import train_model

    result = train_model(model, as_of=_as_of(as_of))
    _print_training(result)


@app.command()
def score(model: ModelName, as_of: AsOf = None) -> None:
    """Score every entity with the model's champion and publish the score set."""
    from flows.models import score_model

    result = score_model(model, as_of=_as_of(as_of))
    console.print(
        f"{result['model']} v{result['version']}: {result['rows']:,} rows scored and published "
        f"in {result['seconds']} s (score set {result['score_set_id']})"
    )


@app.command()
def run(
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Only these models (repeatable).")
    ] = None,
    as_of: AsOf = None,
) -> None:
    """The whole pipeline: validate, build features, then train, gate and score every model."""
    from flows.models import PipelineFailed, pipeline

    for name in models or []:
        _model(name)
    try:
        results = pipeline(models=models or None, as_of=_as_of(as_of))
    except PipelineFailed as exc:
        _print_pipeline(exc.results)
        raise CliError(str(exc)) from exc
    _print_pipeline(results)


@app.command()
def retrain(
    model: ModelName,
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
    import getpass

    from tasks.models.catalog import get_spec
    from tasks.ops.servers import prefect_api_url
    from tasks.settings import get_settings

    approver = getpass.getuser()
    why = reason or ("approved" if approve else "rejected") + " at the command line"
    api_url = prefect_api_url(get_settings())
    if api_url is not None:
        _retrain_on_server(api_url, model, _as_of(as_of), build, approve, approver, why)
        return
    if get_spec(model).policy.requires_approval and approve is None:
        raise CliError(
            f"{model} needs an approval before promotion and no Prefect server is configured: "
            "pass --approve or --no-approve (with --reason), or start one with `liveyield serve`"
        )
    from flows.models import decided, train_model

    if approve is None:
        result = train_model(
            model, as_of=_as_of(as_of), build=build, actor=approver, reason="manual retraining"
        )
    else:
        with decided(approve, approver, why):
            result = train_model(model, as_of=_as_of(as_of), build=build)
    _print_training(result)


def _retrain_on_server(
    api_url: str,
    model: str,
    as_of: dt.datetime | None,
    build: bool,
    approve: bool | None,
    approver: str,
    reason: str,
) -> None:
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
    try:
        run_id, name = remote.trigger(api_url, deployment, parameters)
    except remote.RemoteRunError as exc:
        raise CliError(str(exc)) from None
    url = remote.flow_run_url(api_url, run_id)
    console.print(f"{deployment}: flow run {name} — {url}", highlight=False)

    def on_state(state: str, message: str | None) -> None:
        console.print(
            f"  {state}" + (f": {message}" if message and state != "Paused" else ""), highlight=False
        )
        if state == "Paused" and approve is None:
            console.print(f"  waiting for an approval: open {url} and resume it (approve, approver, reason)")

    def on_paused() -> dict[str, Any] | None:
        if approve is None:
            return None
        return {"approve": approve, "approver": approver, "reason": reason}

    try:
        final = remote.follow(api_url, run_id, on_state=on_state, on_paused=on_paused)
    except KeyboardInterrupt:
        console.print(f"stopped following; the run goes on: {url}")
        raise typer.Abort() from None
    if final != "Completed":
        raise CliError(f"flow run {name} ended {final}; see {url}")
    rows = remote.table_artifact(api_url, run_id, f"train-{model.replace('_', '-')}")
    if not rows:
        raise CliError(f"flow run {name} completed but left no training summary; see {url}")
    _print_training(rows[0])


@app.command()
def serve(
    prefect_port: Annotated[
        int | None,
        typer.Option(help="Prefect server port; 0: any free one. [default: LIVEYIELD_PREFECT_PORT or 4200]"),
    ] = None,
    mlflow_port: Annotated[
        int | None,
        typer.Option(help="MLflow server port; 0: any free one. [default: LIVEYIELD_MLFLOW_PORT or 5000]"),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface the servers listen on.")] = "127.0.0.1",
    deploy: Annotated[bool, typer.Option(help="Deploy infra/prefect.yaml once the server is up.")] = True,
) -> None:
    """Start a Prefect server, its work pool, worker and deployments, and an MLflow server, here."""
    from tasks.ops.servers import StackError, plan_stack, start_stack
    from tasks.settings import get_settings

    plan = plan_stack(get_settings(), host=host, prefect_port=prefect_port, mlflow_port=mlflow_port)
    try:
        state = start_stack(plan, deploy=deploy, say=lambda line: err.print(line, highlight=False))
    except StackError as exc:
        raise CliError(str(exc)) from None
    table = Table("what", "address", "store", title="liveyield serve")
    table.add_row("Prefect UI", state["prefect_ui_url"], state["prefect_database"])
    table.add_row("MLflow UI", state["mlflow_url"], state["mlflow_backend_store"])
    table.add_row("worker", f"work pool {state['work_pool']}", f"logs in {plan.log_dir}")
    console.print(table)
    console.print(
        "To use them from a shell:\n"
        f"  export PREFECT_API_URL={state['prefect_api_url']} MLFLOW_TRACKING_URI={state['mlflow_url']}\n"
        "`liveyield retrain MODEL` finds them on its own; `liveyield stop` stops them.",
        highlight=False,
    )


@app.command()
def stop() -> None:
    """Stop the servers and the worker that `liveyield serve` started (by pid)."""
    from tasks.ops.servers import stop_stack
    from tasks.settings import get_settings

    stopped = stop_stack(get_settings().home)
    console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing to stop")


models_app = typer.Typer(
    help="The model registry: list, inspect, pull and roll back models.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """List registered models with their champion and latest version."""
    from tasks.registry import list_models
    from tasks.settings import get_settings

    table = Table("model", "champion", "challenger", "latest version")
    for row in list_models(get_settings().mlflow_tracking_uri):
        aliases = row.get("aliases", {})
        champion, challenger = (f"v{aliases[a]}" if a in aliases else "-" for a in ("champion", "challenger"))
        table.add_row(row["name"], champion, challenger, str(row.get("latest_version") or "-"))
    console.print(table)


@models_app.command("show")
def models_show(model: ModelName) -> None:
    """Show a model's versions, aliases, lineage tags, gate verdicts and champion history."""
    import json

    from tasks.db import make_engine
    from tasks.gates import ledger
    from tasks.registry import show
    from tasks.settings import get_settings

    settings = get_settings()
    info = show(settings.mlflow_tracking_uri, model)
    engine = make_engine(settings.db_url)
    info["champion_history"] = ledger(engine, model)
    engine.dispose()
    console.print_json(json.dumps(info, default=str))


@models_app.command("pull")
def models_pull(
    model: ModelName,
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
    console.print(f"pulled {model} into {path}")


@models_app.command("rollback")
def models_rollback(
    model: ModelName,
    reason: Annotated[str, typer.Option(help="Why; recorded in the alias ledger.")] = "manual rollback",
) -> None:
    """Move @champion back to the previous champion (one ledger entry)."""
    import getpass

    from tasks.db import make_engine
    from tasks.gates import rollback
    from tasks.lifecycle import mlflow_client
    from tasks.settings import get_settings

    settings = get_settings()
    engine = make_engine(settings.db_url)
    try:
        version = rollback(engine, mlflow_client(settings), model, actor=getpass.getuser(), reason=reason)
    finally:
        engine.dispose()
    console.print(f"{model}: champion is now v{version}")


def _print_training(result: dict[str, Any]) -> None:
    verdict = "[green]passed[/]" if result["gate_passed"] else "[red]failed[/]"
    novelty = "new" if result["created"] else "identical to an existing version"
    console.print(
        f"{result['model']} v{result['version']} ({novelty}): gate {verdict} — {result['gate_reason']}; "
        f"champion v{result['champion']} ({result['detail']})"
    )


def _print_pipeline(results: dict[str, Any]) -> None:
    table = Table(
        "model", "version", "gate", "champion", "promoted", "scored rows", "primary metric (baselines)",
        title="pipeline",
    )  # fmt: skip
    for name, r in results.items():
        if "error" in r:
            table.add_row(name, "-", "[red]error[/]", "-", "-", "-", r["error"][:60])
            continue
        t, s = r["train"], r["score"]
        champion = f"v{t['champion']}" if t["champion"] else "-"
        table.add_row(
            name, str(t["version"]), "passed" if t["gate_passed"] else "failed", champion,
            "yes" if t["promoted"] else "no", f"{s['rows']:,}" if s else "-", t.get("headline", ""),
        )  # fmt: skip
    console.print(table)
    for name, r in results.items():
        if "error" not in r and not r["train"]["gate_passed"]:
            console.print(f"  {name}: {r['train']['gate_reason']}")


@app.command()
def doctor() -> None:
    """Show which database, MLflow store and Prefect API liveyield will use, and check each."""
    from tasks.ops.doctor import run_checks

    failed = False
    table = Table("component", "uses", "status")
    for check in run_checks():
        failed |= not check.ok
        table.add_row(
            check.name, check.target, ("[green]ok[/] " if check.ok else "[red]FAIL[/] ") + check.detail
        )
    console.print(table)
    if failed:
        raise CliError("one or more components are unreachable (see the table above)")


def _simulate(*, users: int, streamers: int, days: int, seed: int, start: dt.date) -> dict[str, int]:
    from tasks.db import make_engine
    from tasks.settings import get_settings, pseudonym_key
    from tasks.simulate import SimConfig
    from tasks.simulate.run import run_simulation
    from tasks.warehouse import upgrade_schema

    settings = get_settings()
    engine = make_engine(settings.db_url)
    upgrade_schema(engine)
    config = SimConfig(users=users, streamers=streamers, days=days, seed=seed, start=start)
    config = dataclasses.replace(config, pseudonym_key=pseudonym_key(settings))
    with Progress(
        TextColumn("[bold]simulate[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task_id = bar.add_task("", total=days)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task_id, description=stage, completed=done, total=total)

        rows = run_simulation(settings, engine, config, progress=progress)
    engine.dispose()
    return rows


def _ingest(
    table: str | None = None, partition: dt.date | None = None, max_bad_share: float | None = None
) -> dict[str, Any]:
    from flows.ingest_validate import ingest_validate
    from tasks.warehouse import raw_table

    if table is not None:
        raw_table(table)
    summary: dict[str, Any] = ingest_validate(
        table=table, partition=partition, fail_on_rejected=False, max_bad_share=max_bad_share
    )
    return summary


def _print_quality(summary: dict[str, Any]) -> None:
    table = Table(
        "table", "partitions", "rejected", "loaded", "quarantined", "duplicates", title="data-quality gate"
    )
    for name, t in summary["tables"].items():
        table.add_row(
            name,
            str(t["partitions"]),
            str(t["rejected"]),
            f"{t['rows_loaded']:,}",
            f"{t['rows_quarantined']:,}",
            f"{t['rows_duplicate']:,}",
        )
    console.print(table)
    if summary.get("data_docs"):
        console.print(f"Data Docs: {summary['data_docs']}")
    if summary["rejected"] == 1:
        raise CliError(summary["report"])
    if summary["rejected"]:
        raise CliError(f"{summary['rejected']} batches rejected:\n{summary['report']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    from tasks.errors import user_facing

    try:
        app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err.print("error: aborted")
        return 130
    except TyperException as exc:  # usage errors: bad option values, unknown commands
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err.print(f"error: {message}", highlight=False)
        return int(getattr(exc, "exit_code", 2))
    except CliError as exc:
        err.print(f"error: {exc}", highlight=False)
        return 1
    except Exception as exc:
        known = user_facing(exc)
        if known is None:
            raise
        err.print(f"error: {known}", highlight=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
