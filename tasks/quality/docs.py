"""Keep this process's GX validation results and build local GX Data Docs from them.

Validations that ran in another process (a Dask worker of a fanned-out flow) reach the docs of
the flow's process through :func:`export_results` there and :func:`adopt_results` here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.quality.bounds import bounded
from tasks.quality.errors import QualityError

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

    from tasks.quality.verdict import Verdict

MAX_KEPT = 2_000  # results kept per process; older ones fall out of the docs
PARTIAL = 20  # unexpected values/indices kept per expectation for the docs
_RESULTS: dict[str, tuple[str, ExpectationSuiteValidationResult]] = {}
_COUNTER = itertools.count(1)


def remember(table: str, result: ExpectationSuiteValidationResult) -> str:
    """Keep a trimmed copy of a validation result for the docs; returns its run name.

    Lists are cut to ``PARTIAL`` items and every delivered string (a huge value, an extra
    column's name) is clipped, so one bad row cannot bloat the docs.
    """
    for item in result.results:
        for key in ("unexpected_list", "unexpected_index_list", "partial_unexpected_list"):
            values = item.result.get(key)
            if isinstance(values, list) and len(values) > PARTIAL:
                item.result[key] = values[:PARTIAL]
        item.result.pop("partial_unexpected_counts", None)
        for key in ("unexpected_list", "partial_unexpected_list", "observed_value", "details"):
            if key in item.result:
                item.result[key] = bounded(item.result[key])
    run_name = f"{table}-{next(_COUNTER):06d}"
    _RESULTS[run_name] = (table, result)
    while len(_RESULTS) > MAX_KEPT:
        _RESULTS.pop(next(iter(_RESULTS)))
    return run_name


def kept_runs() -> list[str]:
    """The run names of the results this process keeps, oldest first."""
    return list(_RESULTS)


def export_results(run_names: Iterable[str]) -> list[tuple[str, ExpectationSuiteValidationResult]]:
    """(table, result) of the kept runs named, to ship to another process (they pickle)."""
    return [_RESULTS[name] for name in run_names if name in _RESULTS]


def adopt_results(results: Iterable[tuple[str, ExpectationSuiteValidationResult]]) -> list[str]:
    """Keep results another process exported, under run names of this process; returns them."""
    return [remember(table, result) for table, result in results]


def build_data_docs(site_dir: Path, verdicts: Iterable[Verdict] | None = None) -> Path:
    """Build GX Data Docs in site_dir for this process's (or the verdicts') results; return index.html."""
    import datetime

    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from tasks.quality.engine import gx_context

    if verdicts is None:
        chosen = list(_RESULTS)
    else:
        chosen = list(dict.fromkeys(str(v.report.get("gx_run")) for v in verdicts))
        unknown = [name for name in chosen if name not in _RESULTS]
        if unknown:
            raise QualityError(f"no GX results kept for runs {unknown[:3]}")
    site_dir = Path(site_dir).resolve()
    site_dir.mkdir(parents=True, exist_ok=True)
    context = gx_context()
    site_name = f"liveyield_{abs(hash(str(site_dir)))}"
    if site_name not in (context.list_data_docs_sites() or {}):
        context.add_data_docs_site(
            site_name,
            {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(site_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },  # type: ignore[arg-type]
        )
    store = context.validation_results_store
    keys = []
    stamp = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)  # no clock in tasks/
    for run_name in chosen:
        table, result = _RESULTS[run_name]
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=table),
            run_id=RunIdentifier(run_name=run_name, run_time=stamp),
            batch_identifier=run_name,
        )
        store.set(key, result)
        keys.append(key)
    try:
        built = context.build_data_docs(site_names=[site_name], resource_identifiers=keys)
    except Exception as exc:
        raise QualityError(f"building GX Data Docs in {site_dir} failed: {exc}") from exc
    index = site_dir / "index.html"
    if not index.exists():
        raise QualityError(f"GX Data Docs built no index.html in {site_dir}: {built}")
    return index
