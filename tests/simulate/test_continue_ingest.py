"""A platform continued with a shift from its first continued day ingests cleanly (test plan O2).

`liveyield simulate` lands a few days, `simulate --continue --shift interests --shift-from D`
(D the first continued day) lands the next ones. The first run generated local day D unshifted
(its early UTC hours belong to the last landed day), the continued run generates it shifted,
with another number of events; event ids are numbered per UTC day, so the continued days reuse
no landed id. Every raw table is then ingested: no partition is rejected, no row is quarantined,
dropped as a duplicate or skipped as already loaded, and each table holds what landed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flows.cli import main
from tasks import landing
from tasks.ingest import PartitionResult, ingest_table
from tasks.schema import RAW_TABLES
from tests.conftest import BACKENDS
from tests.models.warehouse import START, Backend, fresh_warehouse

pytestmark = pytest.mark.slow

BEFORE, AFTER = 3, 2  # days landed by the first run, days continued with the shift
SIZE = ["--users", "300", "--streamers", "20", "--seed", "7"]  # the old numbering reused ids here
SHIFT_FROM = START + dt.timedelta(days=BEFORE)


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    with fresh_warehouse(request.param, tmp_path) as made:
        for key, value in made.env.items():
            monkeypatch.setenv(key, value)
        yield made


def _landed_rows(root: Path) -> dict[str, int]:
    """Rows waiting in the landing zone, per raw table."""
    return {
        table: sum(len(landing.read_verified(path)) for paths in parts.values() for path in paths)
        for table, parts in landing.pending(root).items()
    }


def test_continuing_with_a_shift_ingests_every_landed_row_once(backend: Backend) -> None:
    first = ["simulate", *SIZE, "--start", START.isoformat(), "--days", str(BEFORE), "--no-ingest"]
    assert main(first) == 0
    shift = ["--shift", "interests", "--shift-from", SHIFT_FROM.isoformat(), "--shift-size", "1"]
    assert main(["simulate", "--continue", "--days", str(AFTER), *shift, "--no-ingest"]) == 0

    root = Path(backend.settings.landing_dir)
    landed = _landed_rows(root)
    assert {"raw_watch_sessions", "raw_gifts", "raw_orders", "raw_ad_impressions"} <= set(landed)
    end = dt.datetime.combine(START + dt.timedelta(days=BEFORE + AFTER), dt.time(), dt.UTC)
    results: list[PartitionResult] = []
    for table in RAW_TABLES:
        results += ingest_table(backend.engine, root, table, max_ts=int(end.timestamp()) + 86_400)

    troubled = [
        (r.table, r.partition, r.message)
        for r in results
        if not r.accepted or r.skipped or r.rows_duplicate or r.rows_skipped or r.rows_quarantined
    ]
    assert troubled == []
    loaded: dict[str, int] = {}
    for r in results:
        loaded[r.table] = loaded.get(r.table, 0) + r.rows_loaded
    assert loaded == {table: rows for table, rows in landed.items() if rows}
    with backend.engine.connect() as conn:
        held = {t: conn.execute(select(func.count()).select_from(RAW_TABLES[t])).scalar_one() for t in landed}
    assert held == landed
    # The continued days landed: the shift's first day is a partition of the busiest tables.
    days = {(r.table, r.partition) for r in results}
    assert {("raw_watch_sessions", SHIFT_FROM.isoformat()), ("raw_gifts", SHIFT_FROM.isoformat())} <= days
