"""The gate's verdict: one row per check, readable as a Markdown table or as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GateCheck:
    """One check of a promotion policy; ``passed`` None means skipped (with the reason in detail)."""

    name: str  # e.g. "value_threshold", "change_threshold", "significance", "beat_baseline"
    metric: str | None
    slice: str | None  # "region=eu", or None for overall
    observed: float | None
    threshold: str  # human-readable bound, e.g. ">= 0.7", "delta >= -0.01"
    passed: bool | None
    detail: str = ""
    low: float | None = None  # the bootstrap interval the check judged, when it judged one
    high: float | None = None
    undecided: bool = False  # the interval straddles the bound: passed, but within noise of it

    @property
    def status(self) -> str:
        """'pass', 'fail', 'skip' or 'undecided' (a pass the holdout cannot confirm)."""
        if self.passed is None:
            return "skip"
        if not self.passed:
            return "fail"
        return "undecided" if self.undecided else "pass"


@dataclass
class GateReport:
    """The verdict of one candidate against its policy, champion and baseline."""

    model: str
    candidate_version: int | None
    champion_version: int | None
    checks: list[GateCheck] = field(default_factory=list)
    passed: bool = False
    reason: str = ""

    @property
    def failed(self) -> list[GateCheck]:
        """The checks that failed."""
        return [c for c in self.checks if c.passed is False]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN/inf observed values become None)."""
        out = asdict(self)
        for check, source in zip(out["checks"], self.checks, strict=True):
            for key in ("observed", "low", "high"):
                value = check[key]
                if value is not None and not math.isfinite(value):
                    check[key] = None
            check["status"] = source.status
        return out

    def to_json(self) -> str:
        """to_dict() as compact, key-sorted JSON (what the ledger and the registry store)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        """Rebuild a report from to_dict() output."""
        fields = ("name", "metric", "slice", "observed", "threshold", "passed", "detail", "low", "high")
        checks = [
            GateCheck(**{k: c.get(k) for k in fields}, undecided=bool(c.get("undecided", False)))
            for c in data.get("checks", [])
        ]
        return cls(
            model=data["model"],
            candidate_version=data.get("candidate_version"),
            champion_version=data.get("champion_version"),
            checks=checks,
            passed=bool(data.get("passed")),
            reason=str(data.get("reason", "")),
        )

    def to_markdown(self) -> str:
        """A Markdown summary and table of every check (for a Prefect artifact)."""
        verdict = "PASSED" if self.passed else "FAILED"
        champion = "none (first run)" if self.champion_version is None else f"v{self.champion_version}"
        lines = [
            f"### Promotion gate for `{self.model}` v{self.candidate_version}: **{verdict}**",
            "",
            f"Champion compared against: {champion}. {_cell(self.reason)}",
            "",
            "| check | metric | slice | observed | interval | threshold | result | detail |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            observed = "—" if c.observed is None else f"{c.observed:.6g}"
            interval = "—" if c.low is None or c.high is None else f"[{c.low:.4g}, {c.high:.4g}]"
            lines.append(
                f"| {c.name} | {_cell(c.metric or '—')} | {_cell(c.slice or 'overall')} | {observed} "
                f"| {interval} | {_cell(c.threshold)} | {c.status.upper()} | {_cell(c.detail)} |"
            )
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
