"""The gate's answer for one (table, partition): accepted or not, bad rows and reasons."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class CheckFailure:
    """A batch-level reason for rejecting a partition."""

    rule: str
    column: str | None
    observed: str
    message: str


@dataclass
class Verdict:
    """One verdict per (table, partition); accepted=False means nothing of it may be loaded."""

    table: str
    partition: datetime.date
    suite_name: str
    suite_hash: str
    accepted: bool
    rows_total: int
    bad_rows: pd.DataFrame
    failures: list[CheckFailure] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    max_bad_share: float = 0.0

    @property
    def bad_share(self) -> float:
        """Distinct bad rows over rows_total (1.0 for an empty batch)."""
        if self.rows_total == 0:
            return 1.0
        return int(self.bad_rows["row"].nunique()) / self.rows_total

    def message(self) -> str:
        """A short readable summary naming table, partition, column, rule and counts."""
        head = f"{self.table} {self.partition.isoformat()}"
        if not self.accepted:
            lines = [
                f"{f.column}: {f.rule} {f.message}" if f.column else f"{f.rule}: {f.message}"
                for f in self.failures
            ]
            if len(lines) == 1:
                return f"{head}: rejected — {lines[0]}"
            return "\n".join([f"{head}: rejected —", *(f"  {line}" for line in lines)])
        if self.bad_rows.empty:
            return f"{head}: accepted — {self.rows_total} rows"
        distinct = int(self.bad_rows["row"].nunique())
        lines = [
            f"{head}: accepted — {distinct} of {self.rows_total} rows quarantined "
            f"({self.bad_share:.1%} <= max {self.max_bad_share:.1%})"
        ]
        counts = self.bad_rows.groupby(["column_name", "rule"])["row"].nunique()
        top = counts.sort_values(ascending=False).head(5)
        for (column, rule), count in zip(top.index.tolist(), top.tolist(), strict=True):
            lines.append(f"  {column}: {rule} broke on {count} of {self.rows_total} rows")
        return "\n".join(lines)
