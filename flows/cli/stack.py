"""Stack commands: start and stop the local Prefect and MLflow servers, and check what is used."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flows.cli import render
from flows.cli.errors import CliError, err


def serve(
    prefect_port: Annotated[
        int | None,
        typer.Option(help="Prefect server port; 0: any free one. [default: LIVEYIELD_PREFECT_PORT or 4200]"),
    ] = None,
    mlflow_port: Annotated[
        int | None,
        typer.Option(help="MLflow server port; 0: any free one. [default: LIVEYIELD_MLFLOW_PORT or 5000]"),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface the servers listen on (beyond loopback only with --allow-remote).")
    ] = "127.0.0.1",
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Allow a --host other machines can reach (prints a warning)."),
    ] = False,
    deploy: Annotated[bool, typer.Option(help="Deploy infra/prefect.yaml once the server is up.")] = True,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate",
            help="Also deploy simulate-daily: the simulated platform of this home gets yesterday's "
            "data each night (make serve sets it when the home holds one).",
        ),
    ] = False,
    dask_workers: Annotated[
        int | None,
        typer.Option(
            help="Also start a Dask scheduler and this many single-threaded workers on 127.0.0.1; "
            "deployment runs fan out on them. [default: LIVEYIELD_SERVE_DASK_WORKERS or 0: none]",
        ),
    ] = None,
) -> None:
    """Start a Prefect server, its work pool, worker and deployments, and an MLflow server, here
    (and a Dask cluster with --dask-workers)."""
    from tasks.ops.servers import StackError, bind_warning, plan_stack, start_stack
    from tasks.settings import get_settings

    for option, port in (("--prefect-port", prefect_port), ("--mlflow-port", mlflow_port)):
        if port is not None and not 0 <= port <= 65535:
            raise typer.BadParameter(f"{option} {port} is not a port (0-65535)")
    if dask_workers is not None and dask_workers < 0:
        raise typer.BadParameter(f"--dask-workers {dask_workers}: expected 0 or more")
    try:
        warning = bind_warning(host, allow_remote=allow_remote)
    except StackError as exc:
        raise typer.BadParameter(str(exc)) from None
    if warning:
        err.print(warning, style="yellow", highlight=False)
    try:
        plan = plan_stack(
            get_settings(),
            host=host,
            prefect_port=prefect_port,
            mlflow_port=mlflow_port,
            dask_workers=dask_workers,
        )
    except ValueError as exc:  # a bad LIVEYIELD_SERVE_DASK_WORKERS
        raise typer.BadParameter(str(exc)) from None
    state = start_stack(plan, deploy=deploy, simulate=simulate, say=lambda line: err.print(line))
    table = Table("what", "address", "store", title="liveyield serve")
    table.add_row("Prefect UI", state["prefect_ui_url"], state["prefect_database"])
    table.add_row("MLflow UI", state["mlflow_url"], state["mlflow_backend_store"])
    table.add_row("worker", f"work pool {state['work_pool']}", f"logs in {plan.log_dir}")
    if "dask_scheduler_address" in state:
        table.add_row(
            "Dask scheduler", state["dask_scheduler_address"], f"{state['dask_workers']} workers × 1 thread"
        )
        table.add_row("Dask dashboard", state["dask_dashboard_url"], "needs bokeh; /health, /json/ always")
    render.console.print(table)
    credentials = state["credentials_file"]
    render.console.print(
        f"Both ask for credentials, kept (owner-only) in {credentials}: the Prefect UI's login takes\n"
        "its PREFECT_API_AUTH_STRING, the MLflow UI's its MLFLOW_TRACKING_USERNAME and _PASSWORD.\n"
        "To use them from a shell:\n"
        f"  export PREFECT_API_URL={state['prefect_api_url']} MLFLOW_TRACKING_URI={state['mlflow_url']}\n"
        f"  set -a; . {credentials}; set +a\n"
        "`liveyield retrain MODEL` finds them on its own; `liveyield stop` stops them.",
        highlight=False,
    )


def stop() -> None:
    """Stop the servers and the worker that `liveyield serve` started (by pid; the credentials
    file stays, for the next `liveyield serve`)."""
    from tasks.ops.servers import stop_stack
    from tasks.settings import get_settings

    stopped = stop_stack(get_settings().home)
    render.console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing to stop")


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
    render.console.print(table)
    if failed:
        raise CliError("one or more components are unreachable (see the table above); fix them and rerun")
