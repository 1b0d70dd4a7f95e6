"""`liveyield monitor`: run monitor-model for one model, or every model with a champion, and print
one table per model and a summary line. Drift is a finding, not a failure: the exit code is
non-zero only when a monitoring run itself failed.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from flows.cli.errors import CliError, quiet_console_tracebacks
from flows.cli.options import AsOf, catalog_model, parse_as_of
from flows.cli.render import console

_STYLE = {"ok": "green", "warn": "yellow", "drift": "red", "error": "red", "skipped": "yellow"}


def _models_with_champion() -> list[str]:
    from tasks.db import make_engine
    from tasks.gates import current_champion
    from tasks.models.catalog import MODELS
    from tasks.settings import get_settings
    from tasks.warehouse import upgrade_schema

    engine = make_engine(get_settings().db_url)
    try:
        upgrade_schema(engine)
        return [name for name in sorted(MODELS) if current_champion(engine, name) is not None]
    finally:
        engine.dispose()


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(summary: dict[str, Any]) -> None:
    """One model's monitoring table (the short form: verdicts, deciding statistics, findings)."""
    from tasks.monitoring.run import shown

    status = summary["status"]
    title = f"{summary['model']} — {status}"
    table = Table("check", "feature", "statistic", "value", "threshold", "status", title=title)
    deciding = summary.get("deciding") or ("psi",)
    for row in summary["rows"]:
        if not shown(row, deciding):
            continue
        style = _STYLE.get(row["status"], "")
        table.add_row(
            row["check"], row["feature"] or "", row["statistic"], _cell(row["value"]),
            _cell(row["threshold"]), f"[{style}]{row['status']}[/]" if style else row["status"],
        )  # fmt: skip
    if summary["status"] != "skipped":
        console.print(table)
    console.print(summary["summary"], highlight=False, markup=False)


def monitor(
    model: Annotated[
        str | None, typer.Argument(help="A model of the catalog (default: every model with a champion).")
    ] = None,
    as_of: AsOf = None,
) -> None:
    """Drift, freshness and realised performance of champions: a table per model, recorded."""
    from flows.monitor import monitor_model

    names = [catalog_model(model)] if model is not None else _models_with_champion()
    moment = parse_as_of(as_of)
    if not names:
        console.print("no model has a champion yet: nothing to monitor (train one with `liveyield train`)")
        return
    quiet_console_tracebacks()
    statuses: dict[str, str] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            summary = monitor_model(name, as_of=moment)
        except Exception as exc:  # one model's failure must not hide the others' reports
            failed[name] = f"{type(exc).__name__}: {exc}"
            console.print(f"{name}: monitoring failed — {failed[name]}", highlight=False, markup=False)
            continue
        statuses[name] = summary["status"]
        render(summary)
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in dict.fromkeys(statuses.values())}
    line = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none monitored"
    console.print(f"monitored {len(names)} model(s) as of {moment:%Y-%m-%d %H:%M} UTC: {line}"
                  + (f", {len(failed)} failed" if failed else ""), highlight=False)  # fmt: skip
    if failed:
        raise CliError("monitoring failed for " + "; ".join(f"{n}: {e}" for n, e in failed.items()))
