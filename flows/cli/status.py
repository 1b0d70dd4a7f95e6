"""`liveyield status`: one screen of health, a row per catalog model (tasks/ops/status.py) —
champion, last training and gate verdict, last scoring, freshness, drift, realised performance and
the next scheduled runs ("not served" without a Prefect server). Reads only; ``--json`` for scripts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli.options import AsOf, catalog_model, parse_as_of
from flows.cli.render import console

_STYLE = {"ok": "green", "warn": "yellow", "drift": "red", "error": "red", "skipped": "yellow"}


def render(report: Any) -> None:
    """The status table between its headline and the line saying where the next runs came from."""
    from tasks.ops.status import COLUMNS, cells, footer, headline

    console.print(headline(report), highlight=False, markup=False)
    table = Table(*COLUMNS, title="liveyield status")
    table.columns[0].no_wrap = True
    for row in report.models:
        table.add_row(*(
            f"[{_STYLE[status]}]{escape(text)}[/]" if status in _STYLE else escape(text)
            for text, status in cells(report, row)
        ))  # fmt: skip
    console.print(table)
    console.print(footer(report), highlight=False, markup=False)


def status(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Models of the catalog (default: every model).", show_default=False),
    ] = None,
    as_of: AsOf = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the status as JSON instead of a table.")
    ] = False,
) -> None:
    """Health of every model on one screen: champion, training and gate, scoring, freshness, drift,
    realised performance, next scheduled runs. Freshness is judged at --as-of (default: now)."""
    import datetime as dt

    from tasks.db import make_engine
    from tasks.ops.servers import prefect_api_url
    from tasks.ops.status import collect
    from tasks.settings import get_settings
    from tasks.warehouse import upgrade_schema

    names = [catalog_model(m) for m in dict.fromkeys(models or ())] or None
    moment = parse_as_of(as_of)
    settings = get_settings()
    engine = make_engine(settings.db_url)
    try:
        upgrade_schema(engine)
        now = int(dt.datetime.now(dt.UTC).timestamp())
        report = collect(settings, engine, names, moment, now=now, api_url=prefect_api_url(settings))
    finally:
        engine.dispose()
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        render(report)
