"""What the flows return: typed results the command line renders and the tests read.

Plain dataclasses, free of Prefect and of any database handle, so that a result pickles
into Prefect's result store and prints the same whether the flow ran in-process or on a worker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TableCounts:
    """One raw table's batches through the data-quality gate in one ingest-validate run."""

    partitions: int = 0
    skipped: int = 0
    rejected: int = 0
    rows_total: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_duplicate: int = 0
    rows_skipped: int = 0  # already recorded: a replayed batch, or event ids the table already holds


@dataclass(frozen=True)
class IngestSummary:
    """An ingest-validate run: counts per table, totals and the report naming each rejected batch."""

    tables: dict[str, TableCounts]
    batches: int
    rejected: int
    rows_loaded: int
    rows_quarantined: int
    report: str
    data_docs: str | None = None
    # Dask worker ("<address> pid <pid>") -> task runs it ran; empty when every task ran in-process.
    workers: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, summary: dict[str, Any]) -> IngestSummary:
        """From the summary dict of :func:`tasks.quality.report.summarise`."""
        return cls(
            tables={name: TableCounts(**counts) for name, counts in summary["tables"].items()},
            batches=int(summary["batches"]),
            rejected=int(summary["rejected"]),
            rows_loaded=int(summary["rows_loaded"]),
            rows_quarantined=int(summary["rows_quarantined"]),
            report=str(summary["report"]),
            data_docs=summary.get("data_docs"),
            workers=dict(summary.get("workers") or {}),
        )


@dataclass(frozen=True)
class ImportResult:
    """A file imported into a raw table: what landed, and the gate's verdict on it."""

    table: str
    file_name: str
    rows: int
    batches: int
    quality: IngestSummary


@dataclass(frozen=True)
class FeatureBuild:
    """A build-features run: the partition dates (ISO) built per feature view."""

    built: dict[str, list[str]]
    # Dask worker ("<address> pid <pid>") -> task runs it ran; empty when every task ran in-process.
    workers: dict[str, int] = field(default_factory=dict)

    @property
    def partitions(self) -> int:
        """Partitions built over every view."""
        return sum(map(len, self.built.values()))


@dataclass(frozen=True)
class ApprovalRecord:
    """Whether a candidate needed an approval, and the decision taken (None: not needed)."""

    required: bool
    decision: str | None = None  # "approved", "rejected" or "not asked"
    approver: str | None = None
    reason: str | None = None

    @property
    def label(self) -> str:
        """One word for tables: the decision, "required" or "-"."""
        return self.decision or ("required" if self.required else "-")


@dataclass(frozen=True)
class TrainingSummary:
    """The one-row summary of a training, as the train-model flow leaves it in a table artifact."""

    model: str
    version: int
    created: bool
    gate_passed: bool
    gate_reason: str
    promoted: bool
    champion: int | None
    detail: str
    approval: str
    run_id: str


@dataclass(frozen=True)
class TrainingResult:
    """A train-model run: the MLflow run, the registered version, the gate and promotion outcome."""

    model: str
    run_id: str
    version: int
    created: bool
    examples: int
    fit_seconds: float
    metrics: dict[str, float]
    headline: str
    gate_passed: bool
    gate_reason: str
    promoted: bool
    champion: int | None
    detail: str
    approval: ApprovalRecord = field(default_factory=lambda: ApprovalRecord(required=False))
    sampling: str = ""  # what the spec's sampling rule did to the training split (one line)

    def summary(self) -> TrainingSummary:
        """The one-row summary (what a server run leaves behind for `liveyield retrain`)."""
        return TrainingSummary(
            model=self.model,
            version=self.version,
            created=self.created,
            gate_passed=self.gate_passed,
            gate_reason=self.gate_reason,
            promoted=self.promoted,
            champion=self.champion,
            detail=self.detail,
            approval=self.approval.label,
            run_id=self.run_id,
        )

    def as_row(self) -> dict[str, Any]:
        """The summary as a plain dict (a table-artifact row)."""
        return asdict(self.summary())


@dataclass(frozen=True)
class ScoringResult:
    """A score-model run: the champion version used and the published score set."""

    model: str
    version: int
    rows: int
    score_set_id: str
    seconds: float
    published: bool = True  # False: publishing's compare-and-set refused the set (kept validated)
    publish_detail: str = ""  # why it was not published
    # Dask worker ("<address> pid <pid>") -> scoring partitions it scored; empty when scored in-process.
    workers: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelOutcome:
    """One model's part of a pipeline run: its training and scoring, or the error that stopped it."""

    train: TrainingResult | None = None
    score: ScoringResult | None = None
    error: str | None = None


@dataclass(frozen=True)
class PipelineResult:
    """A pipeline run: each model's outcome, by model name."""

    models: dict[str, ModelOutcome]

    @property
    def failed(self) -> list[str]:
        """The models whose training or scoring raised, sorted."""
        return sorted(name for name, outcome in self.models.items() if outcome.error is not None)
