"""Concurrent consumers of published scores and the approved model: the load test and benchmark.

Each reader is a process of its own, with its own engine and MLflow client:
that is how consumers reach the warehouse in production, SQLite's locking is per connection and
file (readers in threads of the writer's process would share its page cache and GIL and queue on
the interpreter, not the database), and the latencies measured are the database's plus the CPU's,
not the GIL's.

Readers are forked from a fork server that imported the platform's modules once (before any
connection exists), so twenty readers start in about the time of one import.

A reader repeats one cycle until told to stop: read one entity from ``current_scores``, count the
whole published set of the model grouped by score set and as_of, then ``load_approved`` the
model's champion. A set read is *complete* when every row of it belongs to one score set and one
as_of and the row count is the size of a set that was published (the publishing contract:
consumers see the old complete set or the new complete set, never a mix or a part); the one
entity must come back exactly once. Anything else counts as a partial read; an exception, or a
loaded model of a version the warehouse does not approve, counts as an error.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OPS = ("entity", "full_set", "load_approved")
PRELOAD = ["tasks.registry", "tasks.scoring.publish", "mlflow.sklearn", "sklearn.pipeline", "xgboost"]
Window = tuple[float, float]  # time.monotonic() bounds, the same clock in every process on Linux


@dataclass(frozen=True)
class ReaderConfig:
    """What every reader reads and what counts as complete."""

    db_url: str
    tracking_uri: str
    model: str
    entity: str  # an entity_key present in every published set
    sizes: tuple[int, ...]  # the row counts of every set that is or will be published
    champion: int  # the version load_approved must return (no promotion runs meanwhile)
    pause_s: float = 0.05  # think time between two reads of one reader
    out: str = ""  # folder the reader writes its samples to


def _reader(index: int, config: ReaderConfig, ready: Any, stop: Any) -> None:
    """One reader process: warm up (one untimed cycle), report ready, then read until stopped."""
    import os

    from tasks.settings import apply_process_defaults

    apply_process_defaults()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from sqlalchemy import func, select

    from tasks.db import make_engine
    from tasks.registry import load_approved
    from tasks.scoring.publish import current_scores

    engine = make_engine(config.db_url)
    view = current_scores.c
    entity_query = select(view.score_set_id, view.as_of, view.score).where(
        view.model_name == config.model, view.entity_key == config.entity
    )
    full_query = (
        select(view.score_set_id, view.as_of, func.count())
        .where(view.model_name == config.model)
        .group_by(view.score_set_id, view.as_of)
    )
    sizes = set(config.sizes)
    seen: set[str] = set()  # the score sets this reader saw whole

    def entity() -> str:
        with engine.connect() as conn:
            rows = conn.execute(entity_query).all()
        return "" if len(rows) == 1 else f"entity {config.entity}: {len(rows)} rows {rows[:3]}"

    def full_set() -> str:
        with engine.connect() as conn:
            groups = conn.execute(full_query).all()
        if len(groups) == 1 and int(groups[0][2]) in sizes:
            seen.add(str(groups[0][0]))
            return ""
        return f"set of {config.model}: groups (score_set_id, as_of, rows) {[tuple(g) for g in groups][:4]}"

    def approved() -> str:
        loaded = load_approved(config.tracking_uri, config.model, warehouse=engine)
        if loaded.version != config.champion or loaded.model is None:
            raise RuntimeError(
                f"load_approved returned v{loaded.version}, the champion is v{config.champion}"
            )
        return ""

    calls = {"entity": entity, "full_set": full_set, "load_approved": approved}
    samples: list[tuple[str, float, float, str]] = []  # (op, start, seconds, outcome)
    problems: list[str] = []
    for call in calls.values():  # first-use costs (imports, connections, MLflow store) untimed
        call()
    ready.release()
    while not stop.is_set():
        for op, call in calls.items():
            start = time.monotonic()
            try:
                detail = call()
                outcome = "partial" if detail else "ok"
                if detail and len(problems) < 20:
                    problems.append(f"{op}: {detail}")
            except Exception as exc:  # counted, never fatal: the reader keeps reading
                outcome = "error"
                if len(problems) < 20:
                    problems.append(f"{op}: {type(exc).__name__}: {exc}"[:500])
            samples.append((op, start, time.monotonic() - start, outcome))
            if stop.wait(config.pause_s):
                break
    engine.dispose()
    result = {"samples": samples, "problems": problems, "seen": sorted(seen)}
    Path(config.out, f"reader-{index}.json").write_text(json.dumps(result))


def _guarded(index: int, config: ReaderConfig, ready: Any, stop: Any) -> None:
    try:
        _reader(index, config, ready, stop)
    except BaseException:
        Path(config.out, f"reader-{index}.json").write_text(
            json.dumps(
                {"samples": [], "problems": [f"reader died: {traceback.format_exc()[-2000:]}"], "seen": []}
            )
        )
        ready.release()
        raise


@dataclass
class Readings:
    """Every timed read of every reader, and what went wrong."""

    samples: list[tuple[str, float, float, str]]
    problems: list[str]
    readers: int
    seen: set[str]  # the score sets some reader read whole

    def count(self, outcome: str, window: Sequence[Window] | None = None) -> int:
        """Reads with this outcome (ok, partial, error), optionally only those started in windows."""
        return sum(1 for s in self.samples if s[3] == outcome and _inside(s[1], window))

    def latencies(self, op: str, window: Sequence[Window] | None = None) -> list[float]:
        """Seconds of the successful reads of one kind started inside the windows."""
        return [s[2] for s in self.samples if s[0] == op and s[3] == "ok" and _inside(s[1], window)]


def _inside(t: float, windows: Sequence[Window] | None) -> bool:
    return windows is None or any(a <= t < b for a, b in windows)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (and the read count) of latencies in seconds; NaN when there are none."""
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "p99": values[0], "n": 1}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": statistics.median(values), "p95": cuts[94], "p99": cuts[98], "n": len(values)}


@contextmanager
def readers(config: ReaderConfig, count: int, *, start_timeout_s: float = 300) -> Iterator[Readings]:
    """Start ``count`` reader processes, wait until all are warm, yield; on exit stop and collect them.

    The yielded Readings is filled once the block ends (the readers hand their samples back then).
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    ready = ctx.Semaphore(0)
    stop = ctx.Event()
    Path(config.out).mkdir(parents=True, exist_ok=True)
    procs = [ctx.Process(target=_guarded, args=(i, config, ready, stop), daemon=True) for i in range(count)]
    for proc in procs:
        proc.start()
    readings = Readings([], [], count, set())
    try:
        deadline = time.monotonic() + start_timeout_s
        for _ in procs:
            if not ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"readers not ready after {start_timeout_s} s")
        yield readings
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=120)
            if proc.is_alive():
                proc.kill()
                readings.problems.append(f"reader pid {proc.pid} did not stop")
        for i in range(count):
            path = Path(config.out, f"reader-{i}.json")
            if not path.exists():
                readings.problems.append(f"reader {i} left no samples (exit {procs[i].exitcode})")
                continue
            data = json.loads(path.read_text())
            readings.samples += [tuple(s) for s in data["samples"]]  # type: ignore[misc]
            readings.problems += data["problems"]
            readings.seen.update(data["seen"])


def config_dict(config: ReaderConfig) -> dict[str, Any]:
    """The configuration as plain data (for reports)."""
    return asdict(config)
