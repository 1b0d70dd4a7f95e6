"""Argument types shared by the commands: dates, --as-of, positive counts, catalog model names."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from tasks.dates import resolve_as_of


def parse_date(value: str | None) -> dt.date | None:
    """A YYYY-MM-DD option value, or a usage error."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def positive(value: int) -> int:
    """A count of at least one, or a usage error."""
    if value < 1:
        raise typer.BadParameter("must be at least 1")
    return value


def positive_or_none(value: int | None) -> int | None:
    """An optional count of at least one, or a usage error."""
    return None if value is None else positive(value)


def parse_as_of(value: str | None) -> dt.datetime:
    """An --as-of value by the as_of rule (tasks/dates.py): a date means the end of that day (UTC),
    a date-time is taken as UTC, no value means now.
    """
    if value is None:
        return resolve_as_of(None)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date or date-time (YYYY-MM-DD[THH:MM])") from None
    return resolve_as_of(moment.date() if len(value) == 10 else moment)


def catalog_model(name: str) -> str:
    """A model of the catalog, or a usage error listing the catalog."""
    from tasks.models.catalog import MODELS

    if name not in MODELS:
        raise typer.BadParameter(f"unknown model {name!r}; the catalog has: {', '.join(sorted(MODELS))}")
    return name


AsOf = Annotated[
    str | None,
    typer.Option("--as-of", help="As of this date (YYYY-MM-DD: the end of that day) or date-time, UTC."),
]
ModelArg = Annotated[str, typer.Argument(help="A model of the catalog, e.g. ad_ctr.", callback=catalog_model)]
