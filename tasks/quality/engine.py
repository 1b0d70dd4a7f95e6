"""The process-wide GX ephemeral context and one checked validation run."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.quality.errors import QualityError

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite, ExpectationSuiteValidationResult
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import AbstractDataContext

RESULT_FORMAT: dict[str, Any] = {"result_format": "COMPLETE", "return_unexpected_index_query": False}


@functools.cache
def gx_context() -> AbstractDataContext:
    """Build (once per process) an ephemeral GX context with analytics and progress bars off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine

    # GX md5-hashes every batch (twice per validate) for an optional "pandas_data_fingerprint"
    # batch marker, unless the frame is over this threshold; it is ~60% of a 1M-row run and
    # the gate keeps its own suite hash and fingerprints, so skip it.
    pandas_execution_engine.HASH_THRESHOLD = 0  # type: ignore[assignment]
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}  # type: ignore[assignment]
    return context


@functools.cache
def _batch_definition() -> BatchDefinition:
    """The one whole-dataframe batch definition every validation runs through."""
    source = gx_context().data_sources.add_pandas("liveyield_quality")
    asset = source.add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def raised_message(exception_info: Any) -> str | None:
    """The exception message GX caught for an expectation, if any (flat or per-metric form)."""
    if not isinstance(exception_info, dict):
        return None
    if exception_info.get("raised_exception"):
        return str(exception_info.get("exception_message") or "unknown GX error")
    for value in exception_info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "unknown GX error")
    return None


def run_suite(
    table: str, frame: pd.DataFrame, suite: ExpectationSuite, parameters: dict[str, Any]
) -> ExpectationSuiteValidationResult:
    """Validate a frame with GX; raise QualityError if GX or any expectation errored."""
    try:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, result_format=RESULT_FORMAT, expectation_parameters=parameters)
    except Exception as exc:
        raise QualityError(f"{table}: GX failed to validate suite {suite.name}: {exc}") from exc
    if len(result.results) != len(suite.expectations):
        raise QualityError(
            f"{table}: GX returned {len(result.results)} results for {len(suite.expectations)} expectations"
        )
    for item in result.results:
        message = raised_message(item.exception_info)
        if message is not None:
            config = item.expectation_config
            kind = config.type if config is not None else "?"
            column = config.kwargs.get("column") if config is not None else None
            raise QualityError(f"{table}: expectation {kind} on {column} errored in GX: {message}")
    return result
