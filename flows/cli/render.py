"""Printing for the command line: the flows' typed results as rich tables and lines."""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from flows.results import FeatureBuild, IngestSummary, PipelineResult, ScoringResult, TrainingSummary
from tasks.dates import utc

# Wide enough for the tables when output is piped (rich would assume 80 columns).
console = Console(width=None if sys.stdout.isatty() else 140)


def quality(summary: IngestSummary) -> None:
    """The data-quality gate's counts per table, and where its Data Docs are."""
    table = Table(
        "table", "partitions", "rejected", "loaded", "quarantined", "duplicates", title="data-quality gate"
    )
    for name, t in summary.tables.items():
        table.add_row(name, str(t.partitions), str(t.rejected), f"{t.rows_loaded:,}",
                      f"{t.rows_quarantined:,}", f"{t.rows_duplicate:,}")  # fmt: skip
    console.print(table)
    if summary.data_docs:
        console.print(f"Data Docs: {summary.data_docs}")
    _workers(summary.workers)


def feature_build(result: FeatureBuild) -> None:
    """How many partitions a feature build made."""
    console.print(f"built {result.partitions} partitions over {len(result.built)} views")
    _workers(result.workers)


def _workers(workers: dict[str, int]) -> None:
    """Where fanned-out tasks ran, when a Dask cluster ran them (nothing in-process)."""
    if workers:
        console.print(f"ran {sum(workers.values())} tasks on {len(workers)} Dask workers")


def training(result: TrainingSummary) -> None:
    """One line: version, gate verdict and reason, champion."""
    verdict = "[green]passed[/]" if result.gate_passed else "[red]failed[/]"
    novelty = "new" if result.created else "identical to an existing version"
    champion = f"v{result.champion}" if result.champion is not None else "none"
    console.print(
        f"{result.model} v{result.version} ({novelty}): gate {verdict} — {result.gate_reason}; "
        f"champion {champion} ({result.detail})"
    )


def scoring(result: ScoringResult) -> None:
    """One line: the score set published, or scored and kept unpublished with the reason."""
    if not result.published:
        console.print(
            f"{result.model} v{result.version}: {result.rows:,} rows scored in {result.seconds} s, "
            f"NOT published (score set {result.score_set_id} kept): {result.publish_detail}"
        )
    else:
        console.print(
            f"{result.model} v{result.version}: {result.rows:,} rows scored and published "
            f"in {result.seconds} s (score set {result.score_set_id})"
        )
    _workers(result.workers)


def pipeline(result: PipelineResult) -> None:
    """A row per model: version, gate, champion, promotion, rows scored, headline metric."""
    table = Table(
        "model", "version", "gate", "champion", "promoted", "scored rows", "primary metric (baselines)",
        title="pipeline",
    )  # fmt: skip
    for name, outcome in result.models.items():
        t, s = outcome.train, outcome.score
        if t is None:
            table.add_row(name, "-", "[red]error[/]", "-", "-", "-", (outcome.error or "")[:60])
            continue
        champion = f"v{t.champion}" if t.champion else "-"
        table.add_row(
            name, str(t.version), _gate_cell(t.gate_passed, t.gate_reason), champion,
            "yes" if t.promoted else "no", f"{s.rows:,}" if s else "-", t.headline,
        )  # fmt: skip
    console.print(table)
    for name, outcome in result.models.items():
        if outcome.train is not None and not outcome.train.gate_passed:
            console.print(f"  {name}: {outcome.train.gate_reason}")


def _gate_cell(passed: bool, reason: str) -> str:
    """The gate cell: passed, failed, or "passed (N undecided)" when checks were undecided."""
    if not passed:
        return "failed"
    found = UNDECIDED.search(reason)
    return f"passed ({found.group(1)} undecided)" if found else "passed"


UNDECIDED = re.compile(r"(\d+) undecided")  # as tasks.gates.evaluate words a passing verdict


LISTED_REFS = 6  # refs per view in `features list`; `features describe` shows them all


def feature_views(views: dict[str, Any], built: dict[str, dict[str, Any]]) -> None:
    """Every feature view: entity, version, TTL, freshness and its features as view:feature refs."""
    table = Table("view", "entity", "version", "ttl", "partitions", "rows", "fresh until", "features (refs)")
    table.columns[-1].no_wrap = True
    for name, view in sorted(views.items()):
        row = built.get(name, {})
        refs = [f"{name}:{f.name}" for f in view.features]
        if len(refs) > LISTED_REFS:
            refs = [
                *refs[: LISTED_REFS - 1],
                f"… {len(refs) - LISTED_REFS + 1} more: features describe {name}",
            ]
        ttl, partitions = f"{view.ttl_s // 3600} h", str(row.get("partitions_built", 0))
        table.add_row(
            name, view.entity, view.version[:12], ttl, partitions,
            f"{row.get('rows', 0):,}", fresh_until(row.get("latest_feature_ts")), "\n".join(refs),
        )  # fmt: skip
    console.print(table)
    console.print(
        "Pass refs to `liveyield features get --features`; "
        "`liveyield features describe VIEW` gives their types."
    )


def feature_view(view: Any, built: dict[str, Any]) -> None:
    """One feature view in full: entity and key, version, TTL, freshness, sources, typed features."""
    head = Table.grid(padding=(0, 2))
    head.add_row("view", view.name)
    head.add_row("entity", f"{view.entity} (key column {view.key})")
    head.add_row("version", view.version)
    head.add_row("ttl", f"{view.ttl_s} s ({view.ttl_s / 3600:g} h)")
    head.add_row("granularity", f"{view.granularity}, lookback {view.lookback_days} d")
    head.add_row("sources", ", ".join(view.sources))
    head.add_row("partitions built", f"{built.get('partitions_built', 0)} ({built.get('rows', 0):,} rows)")
    head.add_row("fresh until", fresh_until(built.get("latest_feature_ts")))
    if view.description:
        head.add_row("description", view.description)
    console.print(head)
    table = Table("feature ref", "type")
    for feature in view.features:
        table.add_row(f"{view.name}:{feature.name}", feature.dtype)
    console.print(table)


def fresh_until(latest_feature_ts: int | None) -> str:
    """The newest feature time of a view, or "never built"."""
    if not latest_feature_ts:
        return "never built"
    return utc(latest_feature_ts).strftime("%Y-%m-%d %H:%M")


def registered_models(rows: list[dict[str, Any]]) -> None:
    """Registered models with their champion, challenger and latest version."""
    table = Table("model", "champion", "challenger", "latest version")
    for row in rows:
        aliases = row.get("aliases", {})
        champion, challenger = (f"v{aliases[a]}" if a in aliases else "-" for a in ("champion", "challenger"))
        table.add_row(row["name"], champion, challenger, str(row.get("latest_version") or "-"))
    console.print(table)
