"""Data commands: simulate a platform, import a file, validate landed batches, run the demo."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from flows.cli import render
from flows.cli.errors import CliError, err, quiet_console_tracebacks
from flows.cli.options import parse_date, positive, positive_or_none
from flows.results import IngestSummary

if TYPE_CHECKING:
    from tasks.simulate.config import Shift, SimConfig

SHIFT_HELP = "Plant a change from --shift-from on: interests, prices, traffic or ad-mix."


def live_start(days: int) -> dt.date:
    """The first day of a `days`-day period that ends yesterday (UTC), the last full day."""
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)


def simulate(
    users: Annotated[
        int | None, typer.Option(help="Users on the platform [default: 2000].", callback=positive_or_none)
    ] = None,
    streamers: Annotated[
        int | None, typer.Option(help="Streamers on the platform [default: 120].", callback=positive_or_none)
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(help="Days to simulate [default: 28; 1 with --continue].", callback=positive_or_none),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; same seed, same data [default: 7].")] = None,
    start: Annotated[
        str | None,
        typer.Option(help="First simulated day (YYYY-MM-DD) [default: the period ends yesterday]."),
    ] = None,
    continue_: Annotated[
        bool, typer.Option("--continue", help="Append the next days of the platform already simulated here.")
    ] = False,
    until: Annotated[str | None, typer.Option(help="With --continue: simulate through this day.")] = None,
    shift: Annotated[str | None, typer.Option(help=SHIFT_HELP)] = None,
    shift_from: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD) of the --shift.")] = None,
    shift_size: Annotated[
        float | None, typer.Option(help="Size of the --shift (see README) [default: per kind].")
    ] = None,
    shift_target: Annotated[
        str | None, typer.Option(help="Category (interests, ad-mix) or region (traffic) of the --shift.")
    ] = None,
    ingest: Annotated[bool, typer.Option(help="Validate and load into the warehouse afterwards.")] = True,
) -> None:
    """Simulate a live-streaming platform into the landing zone (and the warehouse), or continue one."""
    planted = _shift(shift, parse_date(shift_from), shift_size, shift_target)
    if continue_:
        if start is not None or users is not None or streamers is not None or seed is not None:
            raise CliError("--continue keeps the platform's start, users, streamers and seed; drop them")
        if days is not None and until is not None:
            raise CliError("give --days or --until, not both")
        config, rows = _continue(days=days, until=parse_date(until), shift=planted)
        last = config.start + dt.timedelta(days=config.days - 1)
        render.console.print(f"simulated {sum(rows.values()):,} rows in {len(rows)} tables, through {last}")
    else:
        if until is not None:
            raise CliError("--until needs --continue; a new platform takes --start and --days")
        period = 28 if days is None else days
        first_day = parse_date(start) or live_start(period)
        rows = _simulate(
            users=2000 if users is None else users,
            streamers=120 if streamers is None else streamers,
            days=period,
            seed=7 if seed is None else seed,
            start=first_day,
            shifts=() if planted is None else (planted,),
        )
        render.console.print(f"simulated {sum(rows.values()):,} rows in {len(rows)} tables")
    if ingest:
        _check_quality(_ingest())


def _shift(kind: str | None, first: dt.date | None, size: float | None, target: str | None) -> Shift | None:
    """The planted shift the options describe, or None; a usage error when half described."""
    from tasks.simulate.config import make_shift

    if kind is None:
        if first is not None or size is not None or target is not None:
            raise CliError("--shift-from, --shift-size and --shift-target need --shift")
        return None
    if first is None:
        raise CliError("--shift needs --shift-from (YYYY-MM-DD)")
    try:
        return make_shift(kind, first, size, target)
    except ValueError as exc:
        raise CliError(str(exc)) from None


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
    start: Annotated[
        str | None,
        typer.Option(help="First simulated day (YYYY-MM-DD) [default: the period ends yesterday]."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same platform.")] = 7,
) -> None:
    """Simulate a platform and run the pipeline that exists so far, then print a summary."""
    from flows.build_features import build_features
    from flows.cli.features import features_list
    from flows.models import PipelineFailed, pipeline
    from tasks.dates import resolve_as_of

    started = time.perf_counter()
    streamers = max(20, users // 16)
    if start is not None:
        first_day = parse_date(start)
        assert first_day is not None
        rows = _simulate(users=users, streamers=streamers, days=days, seed=seed, start=first_day)
        last = first_day + dt.timedelta(days=days - 1)
    else:
        # A live demo: a new platform ends yesterday; one simulated here before goes on to yesterday.
        last, rows = _catch_up(users=users, streamers=streamers, days=days, seed=seed)
    render.console.print(f"simulated {sum(rows.values()):,} rows (the platform ends on {last})")
    _check_quality(_ingest())
    render.feature_build(build_features(validate_first=False))
    features_list()
    # As of the end of the simulated period, so every model trains on the whole history.
    as_of = resolve_as_of(last)
    try:
        render.pipeline(pipeline(as_of=as_of))
    except PipelineFailed as exc:
        render.pipeline(exc.results)
        raise CliError(str(exc)) from exc
    render.console.print(f"demo finished in {time.perf_counter() - started:.1f} s")


def _simulate(
    *, users: int, streamers: int, days: int, seed: int, start: dt.date, shifts: tuple[Shift, ...] = ()
) -> dict[str, int]:
    """Simulate into the configured platform with a progress bar on stderr; rows per table."""
    from tasks.settings import get_settings, pseudonym_key_origin
    from tasks.simulate import SimConfig
    from tasks.simulate.platform import PlatformStateError
    from tasks.simulate.run import simulate_configured_platform

    config = SimConfig(users=users, streamers=streamers, days=days, seed=seed, start=start, shifts=shifts)
    try:
        with _progress(days) as progress:
            rows = simulate_configured_platform(config, progress=progress)
    except PlatformStateError as exc:
        raise CliError(str(exc)) from None
    render.console.print(f"pseudonym key: {pseudonym_key_origin(get_settings())}")
    return rows


def _catch_up(*, users: int, streamers: int, days: int, seed: int) -> tuple[dt.date, dict[str, int]]:
    """The demo platform through yesterday: new, or the one simulated here continued; its last day."""
    from tasks.settings import get_settings, pseudonym_key_origin
    from tasks.simulate import SimConfig
    from tasks.simulate.platform import PlatformStateError
    from tasks.simulate.run import catch_up_configured_platform

    config = SimConfig(users=users, streamers=streamers, days=days, seed=seed, start=live_start(days))
    try:
        with _progress(days) as progress:
            platform, rows = catch_up_configured_platform(config, progress=progress)
    except PlatformStateError as exc:
        raise CliError(str(exc)) from None
    render.console.print(f"pseudonym key: {pseudonym_key_origin(get_settings())}")
    return platform.start + dt.timedelta(days=platform.days - 1), rows


def _continue(
    *, days: int | None, until: dt.date | None, shift: Shift | None
) -> tuple[SimConfig, dict[str, int]]:
    """Land the next days of the configured platform with a progress bar; its new config and rows."""
    from tasks.simulate.platform import PlatformStateError
    from tasks.simulate.run import continue_configured_platform

    try:
        with _progress(days or 1) as progress:
            return continue_configured_platform(days=days, until=until, shift=shift, progress=progress)
    except PlatformStateError as exc:
        raise CliError(str(exc)) from None


@contextlib.contextmanager
def _progress(days: int) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr and the callback that moves it."""
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

        yield progress


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
