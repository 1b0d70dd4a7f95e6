"""Load benchmark: concurrent consumers while a 1,000,000-row score set is published and a retrain runs.

    python -m tests.benchmarks.bench_load [--rows N] [--readers N] [--runs N] [--backend B] [--quick]

Per backend (SQLite, PostgreSQL), in one process of its own: a small simulated warehouse
(tests.models.warehouse, 400 users, 30 streamers, 14 days), ad_ctr trained, registered, gated and
promoted through tasks.lifecycle (under a lenient AUC > 0.5 policy only if the catalog policy refuses
this small platform's model), and a first score set of ad_ctr published. The MLflow tracking store
and registry are a SQLite file next to a SQLite warehouse, and a PostgreSQL database of their own
(created, migrated and dropped here) next to a PostgreSQL warehouse, as in production.

Then N reader processes (tests/lifecycle/load.py: one entity and a grouped count of the whole
published set from ``current_scores``, then ``load_approved``, 50 ms think time between reads) read
throughout, and each run measures three phases: *idle* (readers only, IDLE_S), *writing* (this process
writes, validates and publishes a score set of about N rows as tasks.lifecycle.score does after
predicting, while a retrain of ad_ctr (train_candidate, register, gate; one day later each run)
runs in another process) and *retrain only* (after the publish, until the retrain ends). Every set
published has a size of its own, so a cut or mixed set is seen as partial. Latency percentiles are
over the successful reads started within a phase; medians over runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.benchmarks import common
from tests.benchmarks.common import Params, log, median, table

MODULE = "tests.benchmarks.bench_load"
MODEL = "ad_ctr"
USERS, STREAMERS, DAYS, SEED = 400, 30, 14, 3
CHAMPION_DAY = 11  # the first champion's as_of, days after the warehouse's first day; retrains follow
IDLE_S = 30.0  # longer than a full-set read of a million rows on a busy machine
PAUSE_S = 0.05
ENTITY = "u00000042"
PHASES = ("idle", "writing", "retrain_only")


def _as_of(day: int) -> dt.datetime:
    from tests.models.warehouse import START

    return dt.datetime.combine(START + dt.timedelta(days=day), dt.time(), dt.UTC)


@contextmanager
def mlflow_store(backend: str, work: Path) -> Iterator[str]:
    """The tracking store and registry: a SQLite file, or a PostgreSQL database created and dropped here."""
    if backend == "sqlite":
        yield f"sqlite:///{work / 'mlflow.db'}"
        return
    with common.pg_database("bench_mlflow") as url:
        yield url


def _settings(work: Path, db_url: str, mlflow_uri: str) -> Any:
    from tasks.settings import Settings

    return Settings(home=work / "home", db_url=db_url, mlflow_tracking_uri=mlflow_uri, prefect_api_url=None)


def _champion(settings: Any, engine: Any) -> tuple[int, str]:
    """Train, register, gate and promote ad_ctr; (version, the policy it passed under)."""
    from tasks import lifecycle
    from tasks.models import catalog
    from tasks.models.spec import PromotionPolicy, ValueThreshold

    trained = lifecycle.train_candidate(
        settings, engine, MODEL, _as_of(CHAMPION_DAY), code_version="bench", flow_run_id=None
    )
    registered = lifecycle.register(settings, MODEL, trained["run_id"])
    report = lifecycle.gate(settings, engine, MODEL, registered["version"], trained["run_id"])
    policy = "catalog"
    if not report.passed:
        policy = "lenient (AUC > 0.5)"
        lenient = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))
        catalog.MODELS[MODEL] = dataclasses.replace(catalog.MODELS[MODEL], policy=lenient)
        report = lifecycle.gate(settings, engine, MODEL, registered["version"], trained["run_id"])
    promoted = lifecycle.promote_if_passed(
        settings, engine, report, actor="bench", flow_run_id=None, reason="benchmark"
    )
    if not promoted["promoted"]:
        raise RuntimeError(f"{MODEL} was not promoted: {promoted}")
    return int(registered["version"]), policy


def _ship(engine: Any, version: int, rows: int, as_of: int) -> dict[str, float]:
    """Write, validate and publish a set of ``rows`` synthetic scores; seconds of each step."""
    from tasks.scoring import publish, validate_score_set, write_score_set
    from tests.lifecycle.score_writer import frame

    scored = frame(rows, seed=as_of % 1000)
    t0 = time.monotonic()
    set_id = write_score_set(
        engine,
        model=MODEL,
        version=version,
        as_of=as_of,
        run_id=f"bench-{as_of}",
        frame=scored,
        created_ts=as_of,
    )
    t1 = time.monotonic()
    validate_score_set(engine, set_id, (0.0, 1.0), frame=scored)
    t2 = time.monotonic()
    result = publish(engine, MODEL, set_id, published_ts=as_of)
    t3 = time.monotonic()
    if not result.published:
        raise RuntimeError(f"set {set_id} was not published: {result.reason}")
    return {"write_s": t1 - t0, "validate_s": t2 - t1, "publish_s": t3 - t2, "total_s": t3 - t0}


def _retrain(work: str, db_url: str, mlflow_uri: str, day: int, out: str) -> None:
    """A retrain of ad_ctr in a process of its own: train_candidate, register, gate (no promotion,
    so the champion the readers load and the set being published stay valid)."""
    from tasks.settings import apply_process_defaults

    apply_process_defaults()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from tasks import lifecycle
    from tasks.db import make_engine

    start = time.monotonic()
    settings = _settings(Path(work), db_url, mlflow_uri)
    engine = make_engine(db_url)
    trained = lifecycle.train_candidate(
        settings, engine, MODEL, _as_of(day), code_version="bench-retrain", flow_run_id=None
    )
    registered = lifecycle.register(settings, MODEL, trained["run_id"])
    report = lifecycle.gate(settings, engine, MODEL, registered["version"], trained["run_id"])
    engine.dispose()
    result = {"seconds": time.monotonic() - start, "version": registered["version"], "passed": report.passed}
    Path(out).write_text(json.dumps(result))


def case_backend(p: Params) -> dict[str, Any]:
    """One backend: setup, then the readers across ``runs`` runs of idle / writing / retrain only."""
    from tasks.db import make_engine
    from tasks.settings import apply_process_defaults
    from tasks.warehouse import upgrade_schema
    from tests.lifecycle.load import ReaderConfig, Window, percentiles, readers
    from tests.models.warehouse import build_warehouse

    apply_process_defaults()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    backend, rows, runs, count = p["backend"], int(p["rows"]), int(p["runs"]), int(p["readers"])
    work = Path(p["work"]) / backend
    work.mkdir(parents=True)
    with common.database(backend, work, "bench_load") as url, mlflow_store(backend, work) as mlflow_uri:
        settings = _settings(work, url, mlflow_uri)
        engine = make_engine(url)
        upgrade_schema(engine)
        t0 = time.monotonic()
        build_warehouse(settings, engine, users=USERS, streamers=STREAMERS, days=DAYS, seed=SEED)
        warehouse_s = time.monotonic() - t0
        t0 = time.monotonic()
        champion, policy = _champion(settings, engine)
        lifecycle_s = time.monotonic() - t0
        sizes = tuple(rows - (runs - i) for i in range(runs + 1))  # every published set a size of its own
        base_ts = int(_as_of(DAYS).timestamp())
        first = _ship(engine, champion, sizes[0], base_ts)
        config = ReaderConfig(url, mlflow_uri, MODEL, ENTITY, sizes, champion, PAUSE_S, str(work / "readers"))
        ctx = mp.get_context("forkserver")
        from tests.benchmarks import bench_load  # by module name, also when run as __main__

        windows: list[dict[str, Window]] = []
        ships: list[dict[str, float]] = []
        retrains: list[dict[str, Any]] = []
        loads: list[float] = []
        t0 = time.monotonic()
        with readers(config, count) as readings:
            readers_start_s = time.monotonic() - t0
            for run in range(runs):
                loads.append(os.getloadavg()[0])
                idle = time.monotonic()
                time.sleep(IDLE_S)
                out = work / f"retrain-{run}.json"
                retrain = ctx.Process(
                    target=bench_load._retrain,
                    args=(str(work), url, mlflow_uri, CHAMPION_DAY + 1 + run, str(out)),
                )
                writing = time.monotonic()
                retrain.start()
                ships.append(_ship(engine, champion, sizes[run + 1], base_ts + 1 + run))
                published = time.monotonic()
                retrain.join()
                done = time.monotonic()
                if retrain.exitcode != 0 or not out.exists():
                    raise RuntimeError(f"the retrain failed (exit {retrain.exitcode})")
                retrains.append(json.loads(out.read_text()))
                windows.append(
                    {
                        "idle": (idle, writing),
                        "writing": (writing, published),
                        "retrain_only": (published, done),
                    }
                )
                log(
                    f"{backend} run {run + 1}: ship {ships[-1]['total_s']:.1f} s, "
                    f"retrain {retrains[-1]['seconds']:.1f} s"
                )
        engine.dispose()
    per_run = []
    for w in windows:
        phases = {}
        for phase in PHASES:
            span = [w[phase]]
            phases[phase] = {
                "ops": {
                    op: percentiles(readings.latencies(op, span))
                    for op in ("entity", "full_set", "load_approved")
                },
                "errors": readings.count("error", span),
                "partial": readings.count("partial", span),
                "reads": sum(readings.count(o, span) for o in ("ok", "partial", "error")),
                "seconds": span[0][1] - span[0][0],
            }
        per_run.append(phases)
    return {
        "seconds": time.monotonic() - t0,
        "backend": backend,
        "rows": rows,
        "sizes": sizes,
        "warehouse_s": warehouse_s,
        "lifecycle_s": lifecycle_s,
        "policy": policy,
        "champion": champion,
        "first_ship": first,
        "readers_start_s": readers_start_s,
        "ships": ships,
        "retrains": retrains,
        "per_run": per_run,
        "errors": readings.count("error"),
        "partial": readings.count("partial"),
        "reads": len(readings.samples),
        "problems": readings.problems[:10],
        "sets_seen": len(readings.seen),
        "loadavg_at_runs": loads,
    }


CASES = {"backend": case_backend}


# --------------------------------------------------------------------------- orchestration


def _arg(argv: list[str], name: str, default: int) -> int:
    return int(argv[argv.index(name) + 1]) if name in argv else default


def main(argv: list[str]) -> None:
    """Run the load benchmark on each backend and write results/load.md (and refresh RESULTS.md)."""
    quick = "--quick" in argv
    rows = _arg(argv, "--rows", 100_000 if quick else 1_000_000)
    runs = _arg(argv, "--runs", 1 if quick else 3)
    count = _arg(argv, "--readers", 20)
    started = time.monotonic()
    pg_reason = common.pg_available()
    backends = ["sqlite"] + (["postgresql"] if pg_reason is None else [])
    if "--backend" in argv:
        backends = [argv[argv.index("--backend") + 1]]
    notes = [] if pg_reason is None else [f"PostgreSQL skipped: {pg_reason}"]
    work = Path(tempfile.mkdtemp(prefix="liveyield-bench-load-"))
    results = {}
    try:
        for backend in backends:
            params = {"backend": backend, "rows": rows, "runs": runs, "readers": count, "work": str(work)}
            results[backend] = common.run_case(MODULE, "backend", params, timeout=3600)
            r = results[backend]
            log(f"{backend}: {r['reads']} reads, {r['errors']} errors, {r['partial']} partial")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.write_section("load", report(rows, runs, count, results, notes, time.monotonic() - started))


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value * 1000:,.0f}"


def report(rows: int, runs: int, count: int, results: dict[str, Any], notes: list[str], wall: float) -> str:
    """The Markdown section."""
    lines = [
        "## Load: consumers during publish and retrain (bench_load)",
        "",
        f"{count} reader processes (forked from one fork server that imported the platform once; each with "
        f"its own connections) repeat: one entity from `current_scores`, a grouped count of the model's "
        f"whole published set, `load_approved` of the champion; {PAUSE_S * 1000:.0f} ms think time between "
        f"reads. Score sets of about {rows:,} rows (each a size of its own) are written, validated "
        "(the `scores` suite on the frame written) and published by this process while a retrain of "
        f"ad_ctr (train_candidate → register → gate, in a process of its own) runs. Small warehouse: "
        f"{USERS} users, {STREAMERS} streamers, {DAYS} days. MLflow store and registry: SQLite file next "
        "to the SQLite warehouse, a PostgreSQL database of its own next to the PostgreSQL warehouse. "
        f"Phases: idle = readers only ({IDLE_S:.0f} s), writing = write + validate + publish (retrain "
        "running), retrain only = after the publish until the retrain ends. Latency = successful reads "
        f"started in the phase; figures are medians over {runs} run(s). "
        f"Section wall time {wall / 60:.1f} min.",
        "",
        "### Completeness and errors (all reads of all runs, setup excluded)",
        "",
    ]
    rows_out = []
    for backend, r in results.items():
        rows_out.append(
            [
                backend,
                f"{r['reads']:,}",
                r["errors"],
                r["partial"],
                r["sets_seen"],
                f"{r['readers_start_s']:.0f}",
                "; ".join(r["problems"][:3]) or "none",
            ]
        )
    lines += [
        table(
            ["backend", "reads", "errors", "partial reads", "sets read whole", "readers warm s", "problems"],
            rows_out,
        ),
        "",
        "### Read latency, ms (p50 / p95 / p99)",
        "",
    ]
    lat_rows = []
    for backend, r in results.items():
        for op in ("entity", "full_set", "load_approved"):
            cells = [backend, op]
            for phase in PHASES:
                stats = [run[phase]["ops"][op] for run in r["per_run"]]
                p = [median([s[k] for s in stats]) for k in ("p50", "p95", "p99")]
                n = sum(int(s["n"]) for s in stats)
                cells.append(f"{_ms(p[0])} / {_ms(p[1])} / {_ms(p[2])} ({n:,})")
            lat_rows.append(cells)
    lines += [
        table(["backend", "read", "idle (reads)", "writing (reads)", "retrain only (reads)"], lat_rows),
        "",
        "### Write + publish and retrain, s",
        "",
    ]
    ship_rows = []
    for backend, r in results.items():
        ships, retrains = r["ships"], r["retrains"]
        ship_rows.append(
            [
                backend,
                f"{r['rows']:,}",
                f"{median([s['write_s'] for s in ships]):.1f}",
                f"{median([s['validate_s'] for s in ships]):.1f}",
                f"{median([s['publish_s'] for s in ships]):.2f}",
                f"{median([s['total_s'] for s in ships]):.1f}",
                f"{r['first_ship']['total_s']:.1f}",
                f"{median([t['seconds'] for t in retrains]):.1f}",
                ", ".join("passed" if t["passed"] else "refused" for t in retrains),
                f"{r['warehouse_s']:.0f} + {r['lifecycle_s']:.0f} ({r['policy']})",
                ", ".join(f"{v:.1f}" for v in r["loadavg_at_runs"]),
            ]
        )
    lines += [
        table(
            [
                "backend",
                "rows",
                "write",
                "validate",
                "publish",
                "total under load",
                "total, first set (no readers)",
                "retrain",
                "retrain gate",
                "setup: warehouse + champion s (policy)",
                "1-min load avg at each run",
            ],
            ship_rows,
        ),
        "",
        *[f"- {n}" for n in notes],
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if not common.case_main(CASES, sys.argv):
        main(sys.argv)
