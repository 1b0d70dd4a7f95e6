"""Import benchmark: `liveyield import` of Online Retail II (1,067,371 lines) on SQLite and PostgreSQL.

    python -m tests.benchmarks.bench_import [--quick]

Times the whole command in-process, from reading the compressed CSV through mapping,
pseudonymising and landing to validated and loaded partitions (``main(["import", ...])``),
and reports rows read per second next to the ingest path's end-to-end rate (target: at
least as fast, about 70k rows/s). Each run is its own process with a fresh home and a fresh
database (a SQLite file, or a PostgreSQL database created for the run and dropped after);
the Prefect API is a temporary one started, with GX imported, before the timer.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.benchmarks import common
from tests.benchmarks.common import Params, log, med, rate, table
from tests.conftest import SHARED_DATA

MODULE = "tests.benchmarks.bench_import"
SOURCE = SHARED_DATA / "online_retail_ii" / "online_retail_ii.csv.xz"
MAPPING = common.ROOT / "infra" / "mappings" / "online_retail_ii.yaml"
TARGET_ROWS_S = 70_000  # the ingest path's end-to-end rate (bench_ingest)
BASELINE = "281 s on SQLite, about 3,800 lines/s (2026-12-06, before the import path was vectorised)"


def case_import(p: Params) -> dict[str, Any]:
    """`liveyield import raw_orders <file> --mapping ...` into a fresh home and database, timed."""
    os.environ.update(
        LIVEYIELD_HOME=p["home"], LIVEYIELD_DB_URL=p["url"], LIVEYIELD_PSEUDONYM_KEY="bench-import-key"
    )
    import great_expectations  # noqa: F401  (cold import reported apart, as in bench_ingest)
    from prefect.testing.utilities import prefect_test_harness
    from sqlalchemy import func, select

    from flows.cli import main
    from tasks.db import make_engine
    from tasks.schema import partition_status, quarantine, raw_orders

    with prefect_test_harness(server_startup_timeout=600):
        start, cpu = time.perf_counter(), time.process_time()
        code = main(["import", "raw_orders", p["source"], "--mapping", p["mapping"]])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if code != 0:
        raise RuntimeError(f"liveyield import exited with {code}")
    engine = make_engine(p["url"])
    with engine.connect() as conn:
        loaded = conn.execute(select(func.count()).select_from(raw_orders)).scalar_one()
        lines = conn.execute(select(func.count(func.distinct(quarantine.c.event_id)))).scalar_one()
        entries = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
        validated = conn.execute(
            select(func.count()).where(partition_status.c.status == "validated")
        ).scalar_one()
    engine.dispose()
    return {
        "seconds": seconds,
        "cpu_s": cpu,  # this process's CPU time: what other work on shared cores does not inflate
        "loaded": int(loaded),
        "quarantined_lines": int(lines),
        "quarantine_entries": int(entries),
        "validated": int(validated),
    }


CASES = {"import": case_import}


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "postgresql":
        with common.pg_database("bench_import") as url:
            yield url
        return
    yield f"sqlite:///{workdir / 'warehouse.db'}"


def run(runs: int) -> str:
    """Run the import `runs` times per backend; the section's Markdown."""
    backends = ["sqlite"] + (["postgresql"] if common.pg_available() is None else [])
    rows = 1_067_371
    results: dict[str, list[dict[str, Any]]] = {}
    for backend in backends:
        results[backend] = []
        for i in range(runs):
            with (
                tempfile.TemporaryDirectory(prefix="ly-bench-import-") as tmp,
                fresh_database(backend, Path(tmp)) as url,
            ):
                params = {"home": tmp, "url": url, "source": str(SOURCE), "mapping": str(MAPPING)}
                result = common.run_case(MODULE, "import", params, timeout=3600)
            results[backend].append(result)
            per_s = rows / result["seconds"]
            log(f"  {backend} run {i + 1}/{runs}: {result['seconds']:.1f} s, {per_s:,.0f} rows/s")
    table_rows = []
    for backend, res in results.items():
        seconds = med(res, "seconds")
        first = res[0]
        met = rows / seconds >= TARGET_ROWS_S
        table_rows.append(
            [
                backend,
                f"{rows:,}",
                f"{seconds:.1f}",
                " / ".join(f"{r['seconds']:.1f}" for r in res),
                rate(rows, seconds),
                " / ".join(f"{r['cpu_s']:.1f}" if "cpu_s" in r else "–" for r in res),
                f"**{'met' if met else 'NOT met'}**",
                f"{first['loaded']:,}",
                f"{first['quarantined_lines']:,} ({first['quarantine_entries']:,} entries)",
                str(first["validated"]),
                f"{first['peak_rss_mib']:,.0f}",
            ]
        )
    how_many = f"Median of {runs} runs" if runs > 1 else "One run"
    return "\n\n".join(
        [
            "## Import (bench_import)",
            "`liveyield import raw_orders online_retail_ii.csv.xz "
            "--mapping infra/mappings/online_retail_ii.yaml` "
            f"(Online Retail II, {rows:,} lines), in-process, timed from the command's start to its end: "
            "read and decompress, map, pseudonymise, land 604 event-date partitions, validate (GX) and "
            f"load or quarantine. {how_many}, each in its own process with a fresh home and "
            "database (SQLite file; PostgreSQL database created for the run and dropped after); the "
            "temporary Prefect API and the GX import start before the timer. "
            f"Target: at least the ingest path's end-to-end rate, {TARGET_ROWS_S:,} rows/s. "
            f"Baseline: {BASELINE}.",
            table(
                [
                    "backend",
                    "rows read",
                    "median s",
                    "runs s",
                    "rows/s",
                    "CPU s of the command (runs)",
                    f"≥ {TARGET_ROWS_S // 1000}k rows/s",
                    "lines loaded",
                    "lines quarantined",
                    "partitions validated",
                    "peak RSS MiB",
                ],
                table_rows,
            ),
        ]
    )


def main(argv: list[str]) -> None:
    """Run the benchmark (or say why it is skipped) and write results/import.md."""
    if common.case_main(CASES, argv):
        return
    if not SOURCE.exists():
        print(f"skipped: the shared Online Retail II file is absent ({SOURCE.name} under {SOURCE.parent})")
        return
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else (1 if "--quick" in argv else 3)
    text = run(runs)
    common.write_section("import", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv)
