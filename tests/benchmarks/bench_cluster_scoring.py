"""score-model in-process against score-model in entity-key partitions on a 2-worker Dask cluster.

    python -m tests.benchmarks.bench_cluster_scoring [--users N] [--backend sqlite|postgresql]

One warehouse (tests.models.warehouse: simulated, ingested, features built) and an ad_ctr
champion trained in-process under a lenient policy; then the score-model flow's wall time:

- in-process, twice;
- ``LIVEYIELD_DASK_WORKERS=2``: a local cluster started for the run (what a user gets);
- ``LIVEYIELD_DASK_ADDRESS``: an existing 2-worker cluster, first run (cold workers: their first
  imports and champion load) and second run (warm workers).

Each line also gives the flow's own ``seconds`` (from the champion's resolution to publication)
and the partitions per worker. Not part of run_all: a quick comparison of the fan-out's cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from tests.integration.train_racer import LENIENT
from tests.models.warehouse import START, build_warehouse, fresh_warehouse

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
MODEL = "ad_ctr"
WORKERS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=250)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()

    from distributed import LocalCluster
    from prefect.testing.utilities import prefect_test_harness

    from flows.models import score_model, train_model
    from tasks.models import catalog
    from tasks.settings import DASK_ADDRESS_VAR, DASK_WORKERS_VAR

    catalog.MODELS[MODEL] = dataclasses.replace(catalog.MODELS[MODEL], policy=LENIENT)
    lines: list[str] = []

    def timed(label: str) -> None:
        started = time.perf_counter()
        result = score_model(MODEL, as_of=AS_OF)
        wall = time.perf_counter() - started
        parts = sorted(result.workers.values())
        lines.append(f"| {label} | {result.rows} | {wall:.1f} | {result.seconds} | {parts or '-'} |")
        print(lines[-1], flush=True)

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
        timed("in-process, 1st")
        timed("in-process, 2nd")
        os.environ[DASK_WORKERS_VAR] = str(WORKERS)
        timed(f"LIVEYIELD_DASK_WORKERS={WORKERS} (cluster started per run)")
        del os.environ[DASK_WORKERS_VAR]
        with LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as existing:
            os.environ[DASK_ADDRESS_VAR] = existing.scheduler_address
            timed("existing cluster, cold workers")
            timed("existing cluster, warm workers")
            del os.environ[DASK_ADDRESS_VAR]
    print(f"\n{args.backend}, {args.users} simulated users, {os.cpu_count()} CPUs (shared machine)")
    print("| run | rows | wall s | flow seconds | partitions per worker |\n|---|---:|---:|---:|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
