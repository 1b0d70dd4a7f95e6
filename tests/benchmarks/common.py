"""Shared benchmark machinery: one subprocess per measured case, fresh databases, results files.

Every measured case runs in its own Python process (``python -m tests.benchmarks.<bench>
--case NAME --params JSON``) so that its peak RSS (``ru_maxrss``) belongs to that case alone.
The parent process only orchestrates, takes medians and writes Markdown.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parents[1]
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
PG_URL = os.environ.get("LIVEYIELD_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
VENV_ROOT = Path(
    os.environ.get("LIVEYIELD_BENCH_VENVS", Path(tempfile.gettempdir()) / "liveyield-bench-venvs")
)
RESULT_TAG = "BENCH_RESULT "
SECTION_ORDER = [
    "ingest",
    "import",
    "retrieval",
    "lifecycle",
    "model_quality",
    "catalog",
    "forecasts",
    "recs_retail",
    "recs_scale",
    "segments_retail",
    "segments_scale",
    "load",
    "monitoring",
    "cluster_scoring",
    "live_chain",
]
# Load average when this benchmark process started (imported at start): other users share the cores.
START_LOADAVG = os.getloadavg()

Params = dict[str, Any]
Case = Callable[[Params], dict[str, Any]]


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_main(cases: Mapping[str, Case], argv: Sequence[str]) -> bool:
    """Run ``--case NAME --params JSON`` if given (child side); returns False when not a case call."""
    if "--case" not in argv:
        return False
    name = argv[argv.index("--case") + 1]
    params = json.loads(argv[argv.index("--params") + 1]) if "--params" in argv else {}
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    result = cases[name](params)
    result.setdefault("peak_rss_mib", peak_rss_mib())
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)
    return True


def run_case(module: str, case: str, params: Params, *, timeout: float = 1800) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return its JSON result (raises on failure)."""
    cmd = [sys.executable, "-m", module, "--case", case, "--params", json.dumps(params)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return dict(json.loads(line[len(RESULT_TAG) :]))
    raise RuntimeError(
        f"case {case} {params} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def repeat(
    module: str, case: str, params: Params, runs: int, *, log: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Run a case `runs` times, each in its own process."""
    out = []
    for i in range(runs):
        result = run_case(module, case, params)
        out.append(result)
        if log:
            log(f"  {case} run {i + 1}/{runs}: {result.get('seconds', 0):.2f} s")
    return out


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def med(results: Sequence[dict[str, Any]], key: str) -> float:
    """Median of one numeric key over several case results."""
    return median([float(r[key]) for r in results])


def pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not available"
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()
    return None


@contextmanager
def pg_schema(prefix: str = "bench") -> Iterator[str]:
    """A fresh PostgreSQL schema for one case; yields its URL and drops it afterwards."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def pg_database(prefix: str = "bench") -> Iterator[str]:
    """A PostgreSQL database of its own for one run (a store that wants a whole database, e.g.
    MLflow's, or an import that should not share a catalog); yields its URL, dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def database(backend: str, workdir: Path, prefix: str = "bench") -> Iterator[str]:
    """A fresh, empty database URL of the backend: a SQLite file in workdir or a PG schema."""
    if backend == "postgresql":
        with pg_schema(prefix) as url:
            yield url
        return
    path = workdir / f"{prefix}_{uuid.uuid4().hex[:8]}.db"
    try:
        yield f"sqlite:///{path}"
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` holds the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def ensure_venv(name: str, packages: list[str], check: str) -> tuple[Path | None, str]:
    """A separate venv under VENV_ROOT with packages from the package index; (python, note).

    Returns (None, reason) when it cannot be built; the caller skips that reference.
    """
    venv = VENV_ROOT / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-ok"
    if stamp.exists() and python.exists():
        return python, stamp.read_text().strip()
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *packages],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        probe = subprocess.run(
            [str(python), "-c", check], check=True, capture_output=True, text=True, timeout=120
        )
    except subprocess.CalledProcessError as exc:
        tail = ((exc.stderr or "") if isinstance(exc.stderr, str) else "").strip().splitlines()[-3:]
        return None, f"venv {name} could not be built: `{' '.join(map(str, exc.cmd))[:120]}` failed: " + (
            " / ".join(tail) or f"exit {exc.returncode}"
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        return None, f"venv {name} could not be built: {exc}"
    note = probe.stdout.strip()
    stamp.write_text(note)
    return python, note


def cpu_name() -> str:
    """The CPU's model name (the first of /proc/cpuinfo), else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def machine_header(date: str) -> str:
    """The RESULTS.md header: the machine and library versions the figures were measured with."""
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    mem_kib = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    libs = []
    for package in (
        "pandas",
        "numpy",
        "pyarrow",
        "sqlalchemy",
        "psycopg",
        "great-expectations",
        "prefect",
    ):
        try:
            libs.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            libs.append(f"{package} (not installed)")
    pg = "unavailable"
    if pg_available() is None:
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            pg = str(conn.execute(text("SHOW server_version")).scalar_one())
        engine.dispose()
    return "\n".join(
        [
            "# Benchmark results",
            "",
            "Written by `make bench` (`python -m tests.benchmarks.run_all`); each section by its own",
            "`python -m tests.benchmarks.bench_<name> [--quick]`. Medians of several runs unless a",
            "section says otherwise; every measured case ran alone in its own process, and its peak",
            "memory is that process's `ru_maxrss` (the PostgreSQL server's own memory is not in it).",
            "",
            f"- date: {date}",
            f"- machine that assembled this file: {os.cpu_count()} cores ({cpu_name()}), "
            f"{mem_kib / 1024**2:.1f} GiB RAM, {platform.system()} {platform.release()}; each "
            "section's load line names the CPU it was measured on (machines of one kind differ)",
            f"- Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; PostgreSQL {pg}",
            f"- libraries: {', '.join(libs)}",
            "",
        ]
    )


def write_section(name: str, markdown: str) -> Path:
    """Write one benchmark's section and refresh RESULTS.md from every section present."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown.rstrip() + "\n\n" + load_note() + "\n")
    assemble(os.environ.get("LIVEYIELD_BENCH_DATE") or dt.date.today().isoformat())
    return path


def load_note() -> str:
    """One line: the load average before this benchmark started and when it wrote its results."""
    end = os.getloadavg()
    fmt = "/".join  # 1 / 5 / 15-minute averages
    return (
        f"Measured on {cpu_name()}. Load average (1/5/15 min) on this {os.cpu_count()}-core machine: "
        "before the benchmark "
        f"{fmt(f'{v:.2f}' for v in START_LOADAVG)}, when it finished {fmt(f'{v:.2f}' for v in end)}. "
        "The benchmark's own processes add about 1–2; anything well above that means other work "
        "(other people's tests) shared the cores and the figures above are pessimistic."
    )


def assemble(date: str) -> Path:
    """Concatenate the sections under results/ into RESULTS.md below the machine header."""
    sections = sorted(
        RESULTS_DIR.glob("*.md"),
        key=lambda p: (SECTION_ORDER.index(p.stem) if p.stem in SECTION_ORDER else 99, p.stem),
    )
    body = "\n".join(p.read_text() for p in sections)
    RESULTS_MD.write_text(machine_header(date) + "\n" + body)
    return RESULTS_MD


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rate(rows: float, seconds: float) -> str:
    """Rows per second, human-readable (k / M)."""
    if seconds <= 0:
        return "n/a"
    value = rows / seconds
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"


def mib(value: float) -> str:
    """MiB with no decimals."""
    return f"{value:,.0f}"


def log(message: str) -> None:
    """Progress to stderr (the results go to the Markdown files)."""
    print(message, file=sys.stderr, flush=True)


def sqlite_tuples(frame: Any) -> list[tuple[Any, ...]]:
    """Column-wise conversion to DB-API tuples: None for missing, ISO text for dates."""
    import pandas as pd

    columns = []
    for name in frame.columns:
        s = frame[name]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            values = s.dt.strftime("%Y-%m-%d").to_numpy(dtype=object, na_value=None).tolist()
        elif pd.api.types.is_integer_dtype(s.dtype) and not s.hasnans:
            values = s.to_numpy(dtype="int64").tolist()
        else:
            values = s.to_numpy(dtype=object, na_value=None).tolist()
        columns.append(values)
    return list(zip(*columns, strict=True))


def csv_bytes(frame: Any) -> bytes:
    """The frame as header-less CSV for COPY, encoded by pyarrow (datetime columns as dates)."""
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    frame = frame.copy(deep=False)
    for name in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[name].dtype):
            frame[name] = frame[name].dt.date
    buffer = io.BytesIO()
    pacsv.write_csv(
        pa.Table.from_pandas(frame, preserve_index=False), buffer, pacsv.WriteOptions(include_header=False)
    )
    return buffer.getvalue()


def raw_limit_write(engine: Any, table: str, frame: Any) -> tuple[float, float]:
    """The raw-limit bulk write of a frame into an empty table: (prep seconds, write seconds).

    PostgreSQL: psycopg COPY FROM STDIN of an in-memory CSV. SQLite: one executemany
    transaction (WAL, synchronous=NORMAL). Prep (building the CSV / tuples) is timed apart.
    """
    cols = ", ".join(frame.columns)
    if engine.dialect.name == "postgresql":
        import psycopg

        t0 = time.perf_counter()
        view = memoryview(csv_bytes(frame))
        prep = time.perf_counter() - t0
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as raw:
            start = time.perf_counter()
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as copy:
                for i in range(0, len(view), 1 << 20):
                    copy.write(view[i : i + (1 << 20)])
            raw.commit()
            return prep, time.perf_counter() - start
    import sqlite3

    t0 = time.perf_counter()
    rows = sqlite_tuples(frame)
    prep = time.perf_counter() - t0
    raw_db = sqlite3.connect(engine.url.database, isolation_level=None)
    raw_db.execute("PRAGMA journal_mode=WAL")
    raw_db.execute("PRAGMA synchronous=NORMAL")
    sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in frame.columns)})"
    start = time.perf_counter()
    raw_db.execute("BEGIN IMMEDIATE")
    raw_db.executemany(sql, rows)
    raw_db.execute("COMMIT")
    seconds = time.perf_counter() - start
    raw_db.close()
    return prep, seconds
