"""Run every benchmark, one after the other, and (re)write tests/benchmarks/RESULTS.md.

    python -m tests.benchmarks.run_all [--quick] [--date YYYY-MM-DD]

Each benchmark runs as its own process (``python -m tests.benchmarks.bench_<name>``), writes
its section to tests/benchmarks/results/<name>.md, and RESULTS.md is assembled from the
sections below a header describing the machine. ``--date`` (default: today) is the date
written in that header.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

from tests.benchmarks import common

BENCHMARKS = [
    "bench_ingest",
    "bench_import",
    "bench_retrieval",
    "bench_lifecycle",
    "bench_model_quality",
    "bench_catalog",
    "bench_forecasts",
    "bench_recs_retail",
    "bench_recs_scale",
    "bench_segments_retail",
    "bench_segments_scale",
    "bench_monitoring",
    "bench_cluster_scoring",
    "bench_load",
    "bench_live_chain",
]


def main(argv: list[str]) -> int:
    """Run the benchmarks in order; returns a non-zero exit code if any failed."""
    date = argv[argv.index("--date") + 1] if "--date" in argv else dt.date.today().isoformat()
    quick = ["--quick"] if "--quick" in argv else []
    env = {**os.environ, "LIVEYIELD_BENCH_DATE": date}
    failed = []
    started = time.perf_counter()
    for name in BENCHMARKS:
        common.log(f"== {name} {' '.join(quick)}")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", f"tests.benchmarks.{name}", *quick], cwd=common.ROOT, env=env, check=False
        )
        common.log(f"== {name}: exit {proc.returncode} after {time.perf_counter() - t0:.0f} s")
        if proc.returncode != 0:
            failed.append(name)
    common.assemble(date)
    total = time.perf_counter() - started
    common.log(f"all benchmarks: {total / 60:.1f} min; results in {common.RESULTS_MD}")
    if failed:
        common.log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
