"""Data commands: simulate a platform, import a file, validate landed batches, run the demo."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from flows.cli import render
from flows.cli.errors import CliError, err, quiet_console_tracebacks
from flows.cli.options import parse_date, positive
from flows.results import IngestSummary

DEMO_START = dt.date(2026, 1, 5)


def simulate(
    users: Annotated[int, typer.Option(help="Users on the platform.", callback=positive)] = 2000,
    streamers: Annotated[int, typer.Option(help="Streamers on the platform.", callback=positive)] = 120,
    days: Annotated[int, typer.Option(help="Days to simulate.", callback=positive)] = 28,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 7,
    start: Annotated[str, typer.Option(help="First simulated day (YYYY-MM-DD).")] = DEMO_START.isoformat(),
    ingest: Annotated[bool, typer.Option(help="Validate and load into the warehouse afterwards.")] = True,
) -> None:
    """Simulate a live-streaming platform into the landing zone (and the warehouse)."""
    first_day = parse_date(start)
    assert first_day is not None
    rows = _simulate(users=users, streamers=streamers, days=days, seed=seed, start=first_day)
    render.console.print(f"simulated {sum(rows.values()):,} rows in {len(rows)} tables")
    if ingest:
        _check_quality(_ingest())


def import_(
    table: Annotated[str, typer.Argument(help="Raw table to load, e.g. raw_orders.")],
    file: Annotated[Path, typer.Argument(help="CSV (optionally .gz/.xz/.zip) or Parquet file.")],
    mapping: Annotated[Path | None, typer.Option(help="Column-mapping YAML for a foreign schema.")] = None,
) -> None:
    """Import a CSV or Parquet file into a raw table through the data-quality gate."""
    from tasks import importer
    from tasks.settings import get_settings, pseudonym_key_origin
    from tasks.warehouse import raw_table

    raw_table(table)  # checked here, before a flow run starts
    if not file.exists():
        raise CliError(f"no such file: {file}")
    if mapping is not None:
        importer.load_mapping(mapping)
    origin = pseudonym_key_origin(get_settings())
    if origin.startswith("derived"):
        err.print(
            f"warning: the pseudonym key is {origin} (not secret); "
            "give real data a secret key in LIVEYIELD_PSEUDONYM_KEY"
        )
    from flows.ingest_validate import import_file

    quiet_console_tracebacks()
    result = import_file(table, file, mapping)
    render.console.print(
        f"landed {result.rows:,} rows of {result.file_name} "
        f"into {result.batches} partition batches of {table}"
    )
    counts = result.quality.tables.get(table)
    if counts is not None:
        render.console.print(
            f"read {result.rows:,} rows: {counts.rows_loaded:,} loaded, "
            f"{counts.rows_quarantined:,} quarantined, {counts.rows_duplicate:,} deduplicated, "
            f"{counts.rows_skipped:,} skipped as already recorded"
        )
    _check_quality(result.quality)


def validate(
    table: Annotated[str | None, typer.Option(help="Only this raw table.")] = None,
    date: Annotated[str | None, typer.Option(help="Only this event-date partition (YYYY-MM-DD).")] = None,
) -> None:
    """Run the data-quality gate on landed batches and load what passes."""
    _check_quality(_ingest(table=table, partition=parse_date(date)))


def demo(
    # 5,000 users give the rarest label (ad conversions) a holdout large enough to judge.
    users: Annotated[int, typer.Option(help="Users on the demo platform.", callback=positive)] = 5000,
    days: Annotated[int, typer.Option(help="Days to simulate.", callback=positive)] = 28,
    start: Annotated[str, typer.Option(help="First simulated day (YYYY-MM-DD).")] = DEMO_START.isoformat(),
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same platform.")] = 7,
) -> None:
    """Simulate a platform and run the pipeline that exists so far, then print a summary."""
    from flows.build_features import build_features
    from flows.cli.features import features_list
    from flows.models import PipelineFailed, pipeline
    from tasks.dates import resolve_as_of

    started = time.perf_counter()
    first_day = parse_date(start) or DEMO_START
    rows = _simulate(users=users, streamers=max(20, users // 16), days=days, seed=seed, start=first_day)
    render.console.print(f"simulated {sum(rows.values()):,} rows")
    _check_quality(_ingest())
    render.feature_build(build_features(validate_first=False))
    features_list()
    # As of the end of the simulated period, so every model trains on the whole history.
    as_of = resolve_as_of(first_day + dt.timedelta(days=days - 1))
    try:
        render.pipeline(pipeline(as_of=as_of))
    except PipelineFailed as exc:
        render.pipeline(exc.results)
        raise CliError(str(exc)) from exc
    render.console.print(f"demo finished in {time.perf_counter() - started:.1f} s")


def _simulate(*, users: int, streamers: int, days: int, seed: int, start: dt.date) -> dict[str, int]:
    """Simulate into the configured platform with a progress bar on stderr; rows per table."""
    from tasks.settings import get_settings, pseudonym_key_origin
    from tasks.simulate import SimConfig
    from tasks.simulate.run import simulate_configured_platform

    config = SimConfig(users=users, streamers=streamers, days=days, seed=seed, start=start)
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

        rows = simulate_configured_platform(config, progress=progress)
    render.console.print(f"pseudonym key: {pseudonym_key_origin(get_settings())}")
    return rows


def _ingest(table: str | None = None, partition: dt.date | None = None) -> IngestSummary:
    """The ingest-validate flow, in-process, not failing on rejected batches (reported after)."""
    from flows.ingest_validate import ingest_validate
    from tasks.warehouse import raw_table

    if table is not None:
        raw_table(table)
    quiet_console_tracebacks()
    return ingest_validate(table=table, partition=partition, fail_on_rejected=False)


def _check_quality(summary: IngestSummary) -> None:
    """Print the gate's table; rejected batches fail the command with the gate's report."""
    render.quality(summary)
    if summary.rejected == 1:
        raise CliError(summary.report)
    if summary.rejected:
        raise CliError(f"{summary.rejected} batches rejected:\n{summary.report}")
