"""score-model in-process against score-model in entity-key partitions on a 2-worker Dask cluster.

    python -m tests.benchmarks.bench_cluster_scoring [--quick] [--users N] [--backend sqlite|postgresql]

One warehouse (tests.models.warehouse: simulated, ingested, features built) and an ad_ctr
champion trained in-process under a lenient policy; then the score-model flow's wall time, the
median of ``runs`` runs of each (3; ``--quick``: 1), as a ratio to the in-process median:

- in-process (the baseline);
- ``LIVEYIELD_DASK_WORKERS=2``: a local cluster started for each run (what a user gets);
- ``LIVEYIELD_DASK_ADDRESS``: an existing 2-worker cluster, its first run (cold workers: their
  first imports and champion load) and the runs after it (warm workers).

Each line also gives the flow's own ``seconds`` (from the champion's resolution to publication)
and the partitions per worker. Writes tests/benchmarks/results/cluster_scoring.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from tests.benchmarks import common
from tests.integration.train_racer import LENIENT
from tests.models.warehouse import START, build_warehouse, fresh_warehouse

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
MODEL = "ad_ctr"
WORKERS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--users", type=int, default=250)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    runs = 1 if args.quick else 3

    from distributed import LocalCluster
    from prefect.testing.utilities import prefect_test_harness

    from flows.models import score_model, train_model
    from tasks.models import catalog
    from tasks.settings import DASK_ADDRESS_VAR, DASK_WORKERS_VAR

    catalog.MODELS[MODEL] = dataclasses.replace(catalog.MODELS[MODEL], policy=LENIENT)
    cases: list[tuple[str, list[float], list[float], int, str]] = []

    def timed(label: str, times: int) -> None:
        walls, seconds, rows, parts = [], [], 0, ""
        for _ in range(times):
            started = time.perf_counter()
            result = score_model(MODEL, as_of=AS_OF)
            walls.append(time.perf_counter() - started)
            seconds.append(float(result.seconds))
            rows, parts = result.rows, str(sorted(result.workers.values()) or "-")
            common.log(f"{label}: {walls[-1]:.1f} s")
        cases.append((label, walls, seconds, rows, parts))

    with (
        tempfile.TemporaryDirectory(prefix="bench-cluster-scoring-") as folder,
        fresh_warehouse(args.backend, Path(folder)) as home,
        prefect_test_harness(server_startup_timeout=120),
    ):
        os.environ.update(home.env)
        for name in (DASK_WORKERS_VAR, DASK_ADDRESS_VAR):
            os.environ.pop(name, None)
        build_warehouse(home.settings, home.engine, users=args.users, streamers=20, days=DAYS, seed=5)
        train_model(MODEL, as_of=AS_OF, build=False)
        timed("in-process", runs)
        os.environ[DASK_WORKERS_VAR] = str(WORKERS)
        timed(f"`LIVEYIELD_DASK_WORKERS={WORKERS}` (cluster started per run)", runs)
        del os.environ[DASK_WORKERS_VAR]
        with LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as existing:
            os.environ[DASK_ADDRESS_VAR] = existing.scheduler_address
            timed("existing cluster, first run (cold workers)", 1)
            timed("existing cluster, later runs (warm workers)", runs)
            del os.environ[DASK_ADDRESS_VAR]
    baseline = common.median(cases[0][1])
    rows = [
        (label, count, f"{common.median(walls):.1f}", f"{common.median(walls) / baseline:.1f}×",
         f"{common.median(seconds):.1f}", len(walls), parts)
        for label, walls, seconds, count, parts in cases
    ]  # fmt: skip
    header = [
        "run",
        "rows",
        "wall s (median)",
        "vs in-process",
        "flow seconds",
        "runs",
        "partitions per worker",
    ]
    common.write_section(
        "cluster_scoring",
        "## Scoring on a Dask cluster (entity-key partitions)\n\n"
        f"`python -m tests.benchmarks.bench_cluster_scoring`: ad_ctr's score-model flow on "
        f"{args.users} simulated users over {DAYS} days ({args.backend}), in-process against "
        f"{WORKERS} Dask workers of one thread. At this size the fan-out adds the cluster's start, "
        "the workers' imports and the champion's load to work that takes seconds in one process.\n\n"
        + common.table(header, rows),
    )


if __name__ == "__main__":
    main()
