"""Ingest benchmark: simulate, load-only and end-to-end ingest rows/s next to each backend's raw limit,
and the data-quality gate's rows/s and peak memory against hand-written numpy checks.

    python -m tests.benchmarks.bench_ingest [--quick]

Raw limits, measured on the very same typed rows in this script:
PostgreSQL — psycopg ``COPY ... FROM STDIN`` of a CSV buffer already built in memory;
SQLite — one transaction of ``executemany`` over a list of tuples already built.
Only the driver call and the commit are timed for the limit; building the buffer / tuples is
reported apart ("prep"), because the platform's path has to do that work too.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks import common
from tests.benchmarks.common import Params, log, med, mib, rate, table

MODULE = "tests.benchmarks.bench_ingest"
MAIN_TABLES = ["raw_watch_sessions", "raw_ad_impressions"]
MAX_TS = 2_000_000_000  # the caller's "now" for the gate: after every simulated event
TARGET = 0.70


# --------------------------------------------------------------------------- child cases


def _engine(url: str, migrate: bool = True) -> Any:
    from tasks.db import make_engine
    from tasks.warehouse import upgrade_schema

    engine = make_engine(url)
    if migrate:
        upgrade_schema(engine)
    return engine


def case_simulate(p: Params) -> dict[str, Any]:
    """run_simulation into a landing folder (and truth tables into the DB), timed."""
    from tasks.schema import RAW_TABLES
    from tasks.settings import Settings
    from tasks.simulate import SimConfig
    from tasks.simulate.run import run_simulation

    engine = _engine(p["url"])
    settings = Settings(home=Path(p["home"]), db_url=p["url"], mlflow_tracking_uri="", prefect_api_url=None)
    config = SimConfig(users=p["users"], streamers=max(20, p["users"] // 16), days=p["days"], seed=7)
    rss_before = common.rss_mib()
    start = time.perf_counter()
    rows = run_simulation(settings, engine, config)
    seconds = time.perf_counter() - start
    engine.dispose()
    raw = sum(n for t, n in rows.items() if t in RAW_TABLES)
    return {
        "seconds": seconds,
        "rows": sum(rows.values()),
        "raw_rows": raw,
        "per_table": rows,
        "rss_before_mib": rss_before,
    }


def case_prepare(p: Params) -> dict[str, Any]:
    """Typed frames of the main tables, exactly as ingest hands them to insert_frame (untimed)."""
    import pandas as pd

    from tasks import landing, quality
    from tasks.warehouse import raw_table

    out = {}
    for name in p["tables"]:
        frames = []
        for key, files in landing.pending(Path(p["landing"]), name).get(name, {}).items():
            if key == landing.UNKNOWN:
                continue
            frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            frame["event_date"] = dt.date.fromisoformat(key)
            frames.append(frame[~frame["event_id"].duplicated().to_numpy()])
        typed, _ = quality.coerce_frame(name, pd.concat(frames, ignore_index=True))
        typed = typed[[c.name for c in raw_table(name).columns]]
        path = Path(p["out"]) / f"typed_{name}.parquet"
        typed.to_parquet(path, index=False)
        out[name] = {"rows": len(typed), "path": str(path)}
    return {"tables": out}


def case_load(p: Params) -> dict[str, Any]:
    """Load one typed frame into an empty raw table: tasks.db.insert_frame or the raw limit."""
    import pandas as pd
    from sqlalchemy import func, select

    from tasks.db import insert_frame, write_tx
    from tasks.warehouse import raw_table

    url, name, method = p["url"], p["table"], p["method"]
    engine = _engine(url)
    frame = pd.read_parquet(p["path"])
    target = raw_table(name)
    prep = 0.0
    rss_before = common.rss_mib()
    if method == "insert_frame":
        start = time.perf_counter()
        with write_tx(engine) as conn:
            insert_frame(conn, target, frame)
        seconds = time.perf_counter() - start
    else:
        prep, seconds = common.raw_limit_write(engine, name, frame)
    with engine.connect() as conn:
        stored = int(conn.execute(select(func.count()).select_from(target)).scalar_one())
    engine.dispose()
    if stored != len(frame):
        raise RuntimeError(f"{name}: stored {stored} rows of {len(frame)}")
    return {"seconds": seconds, "rows": len(frame), "prep_s": prep, "rss_before_mib": rss_before}


def _warm_gate() -> float:
    """Import GX and run one (empty-batch) validation, so that the timed run pays neither."""
    from tasks import quality

    start = time.perf_counter()
    quality.validate_empty("raw_ads", dt.date(2026, 1, 5), max_ts=MAX_TS)
    return time.perf_counter() - start


def case_ingest(p: Params) -> dict[str, Any]:
    """tasks.ingest.ingest_table over every raw table of a landing folder (validation + load)."""
    from tasks.ingest import ingest_table
    from tasks.schema import RAW_TABLES

    engine = _engine(p["url"])
    warm = _warm_gate()
    rss_before = common.rss_mib()
    per_table: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for name in RAW_TABLES:
        t0 = time.perf_counter()
        results = ingest_table(engine, Path(p["landing"]), name, max_ts=MAX_TS)
        per_table[name] = {
            "seconds": time.perf_counter() - t0,
            "rows_loaded": sum(r.rows_loaded for r in results),
            "rows_total": sum(r.rows_total for r in results),
            "quarantined": sum(r.rows_quarantined for r in results),
            "rejected": sum(not r.accepted for r in results),
            "partitions": len(results),
        }
    seconds = time.perf_counter() - start
    engine.dispose()
    return {
        "seconds": seconds,
        "rows": sum(t["rows_loaded"] for t in per_table.values()),
        "per_table": per_table,
        "gx_warm_s": warm,
        "rss_before_mib": rss_before,
    }


def case_gx_import(p: Params) -> dict[str, Any]:
    """Cold import of Great Expectations plus the gate's ephemeral context."""
    start = time.perf_counter()
    import great_expectations  # noqa: F401

    imported = time.perf_counter() - start
    from tasks.quality.engine import gx_context

    gx_context()
    return {"seconds": time.perf_counter() - start, "import_s": imported}


def case_make_frame(p: Params) -> dict[str, Any]:
    """A raw_ad_impressions-like typed frame over 30 partitions with 1 % bad rows, to Parquet."""
    import numpy as np

    from tests.data.quality_frames import good_frame

    rows = int(p["rows"])
    frame = good_frame("raw_ad_impressions", rows, days=30)
    rng = np.random.default_rng(7)
    broken = rng.choice(rows, size=rows // 100, replace=False)
    frame.loc[broken, "position"] = 99  # out of range: quarantined, partitions still accepted
    frame.to_parquet(p["path"], index=False)
    return {"rows": rows, "bad": len(broken)}


def numpy_gate(name: str, frame: Any, max_ts: int) -> tuple[int, int]:
    """The suite's rules written by hand with numpy/pandas vectorised ops: (bad rows, rejected parts).

    Same rules as expectations/<table>.json, read from the same declarations (tasks.quality.generate):
    not-null, string lengths, closed vocabularies, ranges, event_ts in its partition day, column
    pairs, event_id uniqueness, device mostly-not-null and the bad-row share per partition.
    """
    import numpy as np

    from tasks.quality.columns import MIN_TS, table_columns
    from tasks.quality.generate import DEVICE_MOSTLY, ENUMS, PAIRS, RANGES
    from tasks.quality.suites import load_suite

    limit = load_suite(name).max_bad_share
    n = len(frame)
    day = frame["event_date"].to_numpy(dtype="datetime64[D]")
    uniq, codes = np.unique(day, return_inverse=True)
    sizes = np.bincount(codes, minlength=len(uniq))
    bad = np.zeros(n, dtype=bool)
    rejected = np.zeros(len(uniq), dtype=bool)
    for spec in table_columns(name):
        col = frame[spec.name]
        null = col.isna().to_numpy()
        if not spec.nullable:
            bad |= null
        elif spec.name == "device":
            share = np.bincount(codes[null], minlength=len(uniq)) / sizes
            rejected |= share > 1 - DEVICE_MOSTLY
        if spec.kind == "str" and spec.length is not None:
            lengths = col.str.len().to_numpy(dtype="float64", na_value=np.nan)
            with np.errstate(invalid="ignore"):
                bad |= (lengths < 1) | (lengths > spec.length)
        enum = ENUMS.get((name, spec.name), ENUMS.get((None, spec.name)))
        if enum is not None:
            bad |= ~null & ~col.isin(enum).to_numpy()
        bounds = RANGES.get((name, spec.name), RANGES.get((None, spec.name)))
        values = None
        if spec.kind in ("int", "float"):
            values = col.to_numpy(dtype="float64", na_value=np.nan)
        if bounds is not None and values is not None:
            with np.errstate(invalid="ignore"):
                bad |= (values < bounds[0]) | (values > bounds[1])
        if spec.name == "event_ts" and values is not None:
            start = day.astype("datetime64[s]").astype("int64").astype("float64")
            with np.errstate(invalid="ignore"):
                bad |= (values < MIN_TS) | (values > max_ts) | (values < start) | (values >= start + 86_400)
    for table_name, a, b, or_equal, _ in PAIRS:
        if table_name != name:
            continue
        va = frame[a].to_numpy(dtype="float64", na_value=np.nan)
        vb = frame[b].to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad |= ~np.isnan(va) & ~np.isnan(vb) & ~((va >= vb) if or_equal else (va > vb))
    duplicated = frame["event_id"].duplicated(keep=False).to_numpy()
    rejected |= np.bincount(codes[duplicated], minlength=len(uniq)) > 0
    per_part = np.bincount(codes[bad], minlength=len(uniq))
    rejected |= per_part / sizes > limit
    return int(bad.sum()), int(rejected.sum())


def case_validate(p: Params) -> dict[str, Any]:
    """coerce_frame + validate_partitions (method gx) or numpy_gate (method numpy) on one frame."""
    import pandas as pd

    frame = pd.read_parquet(p["path"])
    name = "raw_ad_impressions"
    if p["method"] == "gx":
        from tasks.quality import coerce_frame, validate_partitions

        validate_partitions(name, frame.head(100), max_ts=MAX_TS)  # import + warm GX, untimed
        rss_before = common.rss_mib()
        start = time.perf_counter()
        typed, cast_bad = coerce_frame(name, frame)
        verdicts = validate_partitions(name, typed, max_ts=MAX_TS, cast_failures=cast_bad)
        seconds = time.perf_counter() - start
        bad = sum(int(v.bad_rows["row"].nunique()) for v in verdicts.values() if not v.bad_rows.empty)
        rejected = sum(not v.accepted for v in verdicts.values())
        parts = len(verdicts)
    else:
        numpy_gate(name, frame.head(100), MAX_TS)  # imports, untimed
        rss_before = common.rss_mib()
        start = time.perf_counter()
        bad, rejected = numpy_gate(name, frame, MAX_TS)
        seconds = time.perf_counter() - start
        parts = int(frame["event_date"].nunique())
    return {
        "seconds": seconds,
        "rows": len(frame),
        "bad_rows": bad,
        "rejected": rejected,
        "partitions": parts,
        "rss_before_mib": rss_before,
    }


CASES = {
    "simulate": case_simulate,
    "prepare": case_prepare,
    "load": case_load,
    "ingest": case_ingest,
    "gx_import": case_gx_import,
    "make_frame": case_make_frame,
    "validate": case_validate,
}


# --------------------------------------------------------------------------- orchestration


def _extra(r: dict[str, Any]) -> float:
    return float(r["peak_rss_mib"]) - float(r.get("rss_before_mib", 0.0))


def main(argv: list[str]) -> None:
    """Run the ingest benchmark and write results/ingest.md (and refresh RESULTS.md)."""
    quick = "--quick" in argv
    runs = 1 if quick else 3
    users, days = (2_000, 28) if quick else (16_000, 28)
    sizes = [200_000] if quick else [1_000_000, 5_000_000]
    started = time.perf_counter()
    pg_reason = common.pg_available()
    backends = ["sqlite"] + (["postgresql"] if pg_reason is None else [])
    work = Path(tempfile.mkdtemp(prefix="liveyield-bench-ingest-"))
    notes: list[str] = []
    if pg_reason is not None:
        notes.append(f"PostgreSQL skipped: {pg_reason}")
    try:
        sim: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        e2e: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        typed: dict[str, Any] = {}
        for backend in backends:
            for run in range(runs):
                home = work / f"home_{backend}_{run}"
                with common.database(backend, work, "bench_ingest") as url:
                    r = common.run_case(
                        MODULE, "simulate", {"url": url, "home": str(home), "users": users, "days": days}
                    )
                    sim[backend].append(r)
                    log(f"simulate {backend} run {run + 1}: {r['raw_rows']:,} raw rows, {r['seconds']:.1f} s")
                    if not typed:
                        typed = common.run_case(
                            MODULE,
                            "prepare",
                            {"landing": str(home / "landing"), "tables": MAIN_TABLES, "out": str(work)},
                        )["tables"]
                    r = common.run_case(MODULE, "ingest", {"url": url, "landing": str(home / "landing")})
                    e2e[backend].append(r)
                    log(f"ingest {backend} run {run + 1}: {r['rows']:,} rows, {r['seconds']:.1f} s")
                shutil.rmtree(home, ignore_errors=True)

        load: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for backend in backends:
            for name in MAIN_TABLES:
                for _ in range(runs):
                    for method in ("limit", "insert_frame"):  # interleaved: drift hits both alike
                        with common.database(backend, work, "bench_load") as url:
                            r = common.run_case(
                                MODULE,
                                "load",
                                {"url": url, "table": name, "method": method, "path": typed[name]["path"]},
                            )
                        load.setdefault((backend, name, method), []).append(r)
                        log(f"load {backend} {name} {method}: {r['rows']:,} rows {r['seconds']:.2f} s")

        gx_import = [common.run_case(MODULE, "gx_import", {}) for _ in range(runs)]
        validation: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for size in sizes:
            path = work / f"quality_{size}.parquet"
            common.run_case(MODULE, "make_frame", {"rows": size, "path": str(path)})
            for _ in range(runs):
                for method in ("gx", "numpy"):
                    r = common.run_case(MODULE, "validate", {"path": str(path), "method": method})
                    validation.setdefault((size, method), []).append(r)
                    log(f"validate {size:,} {method}: {r['seconds']:.2f} s, {r['bad_rows']} bad")
            path.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - started
    common.write_section(
        "ingest",
        report(quick, users, days, runs, backends, sim, e2e, load, gx_import, validation, notes, wall),
    )
    log(f"bench_ingest done in {wall:.0f} s")


def report(
    quick: bool,
    users: int,
    days: int,
    runs: int,
    backends: list[str],
    sim: dict[str, list[dict[str, Any]]],
    e2e: dict[str, list[dict[str, Any]]],
    load: dict[tuple[str, str, str], list[dict[str, Any]]],
    gx_import: list[dict[str, Any]],
    validation: dict[tuple[int, str], list[dict[str, Any]]],
    notes: list[str],
    wall: float,
) -> str:
    """The Markdown section of this benchmark."""
    first = sim[backends[0]][0]
    out = [
        "## Ingest (bench_ingest)" + (" — quick run" if quick else ""),
        "",
        f"Simulated platform: {users:,} users × {days} days, {max(20, users // 16):,} streamers, seed 7 "
        f"→ {first['raw_rows']:,} raw rows ({first['rows']:,} rows with truth and identity tables); "
        f"raw_watch_sessions {first['per_table'].get('raw_watch_sessions', 0):,}, "
        f"raw_ad_impressions {first['per_table'].get('raw_ad_impressions', 0):,}. "
        f"Medians of {runs} runs, each in a fresh process and a fresh database "
        "(SQLite file in a temp dir / PostgreSQL schema of its own). "
        f"Section wall time {wall / 60:.1f} min.",
        "",
        "### Simulate (tasks.simulate.run.run_simulation → landing Parquet + truth tables)",
        "",
    ]
    rows = []
    for b in backends:
        s = med(sim[b], "seconds")
        rows.append(
            [
                b,
                f"{s:.1f}",
                rate(sim[b][0]["raw_rows"], s),
                rate(sim[b][0]["rows"], s),
                mib(med(sim[b], "peak_rss_mib")),
            ]
        )
    out += [table(["truth tables in", "s", "raw rows/s", "all rows/s", "peak RSS MiB"], rows), ""]

    out += [
        "### Load only: tasks.db.insert_frame vs the raw limit on the same rows",
        "",
        "Typed frames exactly as ingest passes them (after coerce_frame), into an empty raw table, "
        "one transaction. Limit = driver call + commit only (PostgreSQL: psycopg COPY FROM STDIN of a "
        "CSV buffer built in memory; SQLite: executemany of prebuilt tuples); *prep* = building that "
        "buffer/tuples, untimed in the limit.",
        "",
    ]
    rows = []
    verdicts = []
    for b in backends:
        for name in MAIN_TABLES:
            lim, ins = load[(b, name, "limit")], load[(b, name, "insert_frame")]
            n = lim[0]["rows"]
            ratio = med(lim, "seconds") / med(ins, "seconds")
            met = "met" if ratio >= TARGET else "NOT met"
            verdicts.append(f"{b} {name}: insert_frame = {ratio:.0%} of the limit ({met})")
            rows.append(
                [
                    b,
                    name,
                    f"{n:,}",
                    rate(n, med(lim, "seconds")),
                    f"{med(lim, 'prep_s'):.2f}",
                    rate(n, med(ins, "seconds")),
                    f"**{ratio:.0%}** ({met})",
                    f"{mib(med(lim, 'peak_rss_mib'))} / {mib(med(ins, 'peak_rss_mib'))}",
                    f"{mib(median_extra(lim))} / {mib(median_extra(ins))}",
                ]
            )
    out += [
        table(
            [
                "backend",
                "table",
                "rows",
                "raw limit rows/s",
                "limit prep s",
                "insert_frame rows/s",
                "insert_frame / limit (target ≥ 70 %)",
                "peak RSS MiB limit / insert_frame",
                "extra over loaded frame MiB",
            ],
            rows,
        ),
        "",
    ]

    out += [
        "### End to end: tasks.ingest.ingest_table for every raw table (gate + load + records)",
        "",
        "Landing folder of the simulate run above, into the same database; GX imported and warmed "
        "before the timer (cold import is reported below). Rows = rows loaded into raw tables.",
        "",
    ]
    rows = []
    for b in backends:
        runs_ = e2e[b]
        secs = med(runs_, "seconds")
        total = runs_[0]["rows"]
        rejected = sum(t["rejected"] for t in runs_[0]["per_table"].values())
        cells = [b, "all raw tables", f"{total:,}", f"{secs:.1f}", rate(total, secs), "", ""]
        rows.append([*cells, mib(med(runs_, "peak_rss_mib")), str(rejected)])
        for name in MAIN_TABLES:
            ts = common.median([r["per_table"][name]["seconds"] for r in runs_])
            n = runs_[0]["per_table"][name]["rows_loaded"]
            limit_s = med(load[(b, name, "limit")], "seconds")
            limit_rate = load[(b, name, "limit")][0]["rows"] / limit_s
            ratio = (n / ts) / limit_rate
            met = "met" if ratio >= TARGET else "NOT met"
            verdicts.append(f"{b} {name}: end-to-end ingest = {ratio:.0%} of the load limit ({met})")
            rows.append(
                [
                    b,
                    name,
                    f"{n:,}",
                    f"{ts:.1f}",
                    rate(n, ts),
                    rate(limit_rate, 1.0),
                    f"**{ratio:.0%}** ({met})",
                    "",
                    str(runs_[0]["per_table"][name]["rejected"]),
                ]
            )
    out += [
        table(
            [
                "backend",
                "table",
                "rows loaded",
                "s",
                "ingest rows/s",
                "raw limit rows/s",
                "ingest / limit (target ≥ 70 %)",
                "peak RSS MiB",
                "rejected partitions",
            ],
            rows,
        ),
        "",
        "Against the target (≥ 70 % of the raw limit):",
        "",
        *[f"- {v}" for v in verdicts],
        "",
    ]

    out += [
        "### Data-quality gate: coerce_frame + validate_partitions "
        "(raw_ad_impressions-like, 30 partitions, 1 % bad rows)",
        "",
        f"GX cold import + ephemeral context: median {med(gx_import, 'seconds'):.2f} s "
        f"(import alone {med(gx_import, 'import_s'):.2f} s), not included below. Baseline: the same "
        "rules hand-written with numpy/pandas vectorised ops (`numpy_gate` in this file). "
        "Extra MiB = peak RSS minus RSS just before the timed call (frame already loaded).",
        "",
    ]
    rows = []
    for size in sorted({k[0] for k in validation}):
        gx, npy = validation[(size, "gx")], validation[(size, "numpy")]
        same = gx[0]["bad_rows"] == npy[0]["bad_rows"] and gx[0]["rejected"] == npy[0]["rejected"]
        rows.append(
            [
                f"{size:,}",
                f"{med(gx, 'seconds'):.2f}",
                rate(size, med(gx, "seconds")),
                f"{mib(med(gx, 'peak_rss_mib'))} (+{mib(median_extra(gx))})",
                f"{med(npy, 'seconds'):.2f}",
                rate(size, med(npy, "seconds")),
                f"{mib(med(npy, 'peak_rss_mib'))} (+{mib(median_extra(npy))})",
                f"{med(gx, 'seconds') / med(npy, 'seconds'):.1f}×",
                f"{gx[0]['bad_rows']:,} / {npy[0]['bad_rows']:,}" + ("" if same else " (DIFFER)"),
            ]
        )
    out += [
        table(
            [
                "rows",
                "gate s",
                "gate rows/s",
                "gate peak RSS MiB (extra)",
                "numpy s",
                "numpy rows/s",
                "numpy peak RSS MiB (extra)",
                "gate / numpy time",
                "bad rows gate / numpy",
            ],
            rows,
        ),
        "",
    ]
    out += [f"Note: {n}" for n in notes]
    return "\n".join(out) + "\n"


def median_extra(results: list[dict[str, Any]]) -> float:
    """Median of peak RSS minus RSS before the timed part."""
    return common.median([_extra(r) for r in results])


if __name__ == "__main__":
    if not common.case_main(CASES, sys.argv):
        main(sys.argv)
