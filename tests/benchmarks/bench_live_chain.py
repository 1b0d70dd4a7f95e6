"""Live-chain benchmark: the served demo platform's daily chain, wall time per simulated day.

    python -m tests.benchmarks.bench_live_chain [--users N] [--quick]

The chain of tests/ops/test_live_chain.py, timed: `liveyield serve --simulate` on the demo
platform (seed 7, 5,000 users over the 28 days from 2026-01-05; warehouse on PostgreSQL when it is
usable, else SQLite; a real Prefect server, worker and MLflow server on free loopback ports), then
day zero (the pipeline deployment, which trains, gates and scores all twelve models) and three live
days (Tuesday 2026-02-03 to Thursday 2026-02-05), each running every deployment whose schedule fires
that day through the Prefect API, for its scheduled time, in firing order (the runs due at one time
together, as the worker runs them).

Per day: the wall time from the first run's creation to the last run's end, the number of runs,
and, as the baseline measured in the same script, the sum of the runs' own running times as the
server records them (Prefect's total_run_time). Their ratio is what scheduling, the worker's
process start per run and waiting add to the work (below 1 where runs due together overlap).
The median is over the three live days. One serve per invocation: the whole script takes about
30 minutes at 5,000 users on 2 cores. ``--quick``: 1,000 users (gates may then refuse models;
the figures are the chain's cost, the runs must still complete).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from tests.benchmarks import common
from tests.benchmarks.common import log, median, table

SECTION = "live_chain"


def main(argv: list[str]) -> int:
    from tests.ops.live_chain import (
        LIVE_DAYS,
        PIPELINE_TIMEOUT_S,
        USERS,
        day_chain,
        live_stack,
        pipeline_time,
        run_all,
        run_one,
    )

    users = (
        int(argv[argv.index("--users") + 1]) if "--users" in argv else (1000 if "--quick" in argv else USERS)
    )
    rows: list[list[str]] = []
    walls: list[float] = []
    ratios: list[float] = []
    slowest: dict[str, float] = defaultdict(float)
    failed: list[str] = []
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-live-") as work,
        live_stack(Path(work) / "home", users) as stack,
    ):
        log(f"serving at {stack.api}; warehouse {stack.warehouse_url.split(':')[0]}")
        t0 = time.perf_counter()
        pipeline = run_one(stack, "pipeline/pipeline-on-demand", pipeline_time(), PIPELINE_TIMEOUT_S)
        wall = time.perf_counter() - t0
        if pipeline.state != "Completed":
            failed.append(f"pipeline: {pipeline.state} {pipeline.message}")
        rows.append(
            [
                "day zero (pipeline)",
                "1",
                f"{wall:.0f}",
                f"{pipeline.run_s:.0f}",
                f"{wall / pipeline.run_s:.2f}",
            ]
        )
        log(f"day zero: {wall:.0f} s")
        for day in LIVE_DAYS:
            chain = day_chain(day)
            t0 = time.perf_counter()
            outcomes = []
            for when in sorted({t for t, _ in chain}):
                outcomes += run_all(stack, [d for t, d in chain if t == when], when)
            wall = time.perf_counter() - t0
            work_s = sum(o.run_s for o in outcomes)
            for o in outcomes:
                slowest[o.deployment] = max(slowest[o.deployment], o.run_s)
                if o.state != "Completed":
                    failed.append(f"{day} {o.deployment}: {o.state} {o.message}")
            walls.append(wall)
            ratios.append(wall / work_s)
            rows.append(
                [day.isoformat(), str(len(outcomes)), f"{wall:.0f}", f"{work_s:.0f}", f"{wall / work_s:.2f}"]
            )
            log(f"{day}: {len(outcomes)} runs, {wall:.0f} s wall, {work_s:.0f} s of runs")
    total = time.perf_counter() - started
    top = sorted(slowest.items(), key=lambda kv: -kv[1])[:5]
    lines = [
        "## Live chain (bench_live_chain)",
        "",
        f"`liveyield serve --simulate` on the demo platform ({users:,} users, seed 7, 28 days from "
        "2026-01-05), then the pipeline deployment (day zero) and three simulated days, each running "
        "every deployment whose schedule fires that day through the Prefect API for its scheduled time, "
        "in firing order. Wall time: first run created to last run ended; runs' own time: the sum of "
        "Prefect's total_run_time over the day's runs (the baseline, from the same runs).",
        "",
        table(["day", "runs", "wall s", "runs' own time s", "wall / own time"], rows),
        "",
        f"Median over the three live days: {median(walls):.0f} s wall per day, "
        f"{median(ratios):.2f}× the runs' own time.",
        "",
        "Slowest runs of a live day (their own time, s): "
        + ", ".join(f"{name} {seconds:.0f}" for name, seconds in top)
        + ".",
        "",
        "Runs that did not complete: " + ("; ".join(failed) if failed else "none") + ".",
        "",
        f"Section wall time {total / 60:.1f} min (serve and simulate included).",
    ]
    common.write_section(SECTION, "\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
