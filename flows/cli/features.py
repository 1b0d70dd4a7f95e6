"""Feature-store commands: list and describe views, build them, export training sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli import render
from flows.cli.errors import quiet_console_tracebacks
from flows.cli.options import parse_date

features_app = typer.Typer(
    help="The feature store: list and describe views, build them, export training sets.",
    no_args_is_help=True,
)


def _freshness() -> dict[str, dict[str, Any]]:
    """Per view: partitions built, rows and newest feature time of its current version."""
    from tasks.db import make_engine
    from tasks.featurestore import freshness
    from tasks.featurestore.views import FEATURE_VIEWS
    from tasks.settings import get_settings

    engine = make_engine(get_settings().db_url)
    try:
        rows = freshness(engine)
    finally:
        engine.dispose()
    return {
        row["view"]: row
        for row in rows
        if row["view"] in FEATURE_VIEWS and row["version"] == FEATURE_VIEWS[row["view"]].version
    }


@features_app.command("list")
def features_list() -> None:
    """List feature views with their version, freshness and features (as view:feature refs)."""
    from tasks.featurestore.views import FEATURE_VIEWS

    render.feature_views(FEATURE_VIEWS, _freshness())


@features_app.command("describe")
def features_describe(
    view: Annotated[str, typer.Argument(help="A feature view, e.g. user_watch (see `features list`).")],
) -> None:
    """Describe one feature view: entity, TTL, version, freshness and each feature's type."""
    from tasks.featurestore.views import get_view

    declared = get_view(view)
    render.feature_view(declared, _freshness().get(view, {}))


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

    first, last = parse_date(start), parse_date(end)
    if full and (first is None or last is None):
        raise typer.BadParameter("--full needs --start and --end")
    quiet_console_tracebacks()
    render.feature_build(build_features(start=first, end=last, full=full))
    features_list()


@features_app.command("get")
def features_get(
    entities: Annotated[Path, typer.Option(help="CSV/Parquet of entity keys and event_ts.")],
    features: Annotated[
        str,
        typer.Option(help="Comma-separated refs (see `features list`), e.g. user_watch:watch_minutes_7d."),
    ],
    out: Annotated[Path, typer.Option(help="Output file: .csv or .parquet.")],
    latest_known: Annotated[
        bool,
        typer.Option(
            help="Read what the store holds now, late rows included, rather than what was known "
            "at each event (created_ts <= event_ts); not for training."
        ),
    ] = False,
) -> None:
    """Export a point-in-time-correct training set for the given entity rows."""
    from tasks.featurestore.export import export_training_set

    rows = export_training_set(
        entities,
        [f.strip() for f in features.split(",") if f.strip()],
        out,
        created_before_event=not latest_known,
    )
    render.console.print(f"wrote {rows:,} rows to {out}")
