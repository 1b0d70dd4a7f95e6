"""Summaries of an ingest-validate run: counts per table and the rejection report."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class DataQualityError(RuntimeError):
    """One or more batches were rejected by the data-quality gate."""


def summarise(results: list[dict[str, Any]], data_docs: str | None = None) -> dict[str, Any]:
    """Totals per table and the lines that explain each rejected batch."""
    tables: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rejected = [r for r in results if not r["accepted"]]
    for r in results:
        t = tables[r["table"]]
        t["partitions"] += 1
        t["skipped"] += int(r["skipped"])
        t["rejected"] += int(not r["accepted"])
        for key in ("rows_total", "rows_loaded", "rows_quarantined", "rows_duplicate", "rows_skipped"):
            t[key] += int(r.get(key, 0))
    report = "\n".join(r["message"] for r in rejected)
    return {
        "tables": {name: dict(v) for name, v in sorted(tables.items())},
        "batches": len(results),
        "rejected": len(rejected),
        "rows_loaded": sum(int(r["rows_loaded"]) for r in results),
        "rows_quarantined": sum(int(r["rows_quarantined"]) for r in results),
        "report": report,
        "data_docs": data_docs,
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table for a Prefect artifact."""
    lines = [
        "| table | partitions | rejected | rows | loaded | quarantined | duplicates | already recorded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in summary["tables"].items():
        lines.append(
            f"| {name} | {t['partitions']} | {t['rejected']} | {t['rows_total']} | {t['rows_loaded']} "
            f"| {t['rows_quarantined']} | {t['rows_duplicate']} | {t.get('rows_skipped', 0)} |"
        )
    if summary["report"]:
        lines += ["", "**Rejected batches**", "", "```", summary["report"], "```"]
    if summary.get("data_docs"):
        lines += ["", f"Data Docs: `{summary['data_docs']}`"]
    return "\n".join(lines)
