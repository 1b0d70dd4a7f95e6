"""Data-quality gate: GX suites per raw table, row quarantine and a per-partition verdict."""

from tasks.quality.coerce import coerce_frame
from tasks.quality.docs import build_data_docs
from tasks.quality.errors import QualityError
from tasks.quality.validate import validate_empty, validate_partitions
from tasks.quality.verdict import CheckFailure, Verdict

__all__ = [
    "CheckFailure",
    "QualityError",
    "Verdict",
    "build_data_docs",
    "coerce_frame",
    "validate_empty",
    "validate_partitions",
]
