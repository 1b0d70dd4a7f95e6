"""Reference point-in-time joins for bench_retrieval, run in a separate venv (never the project's).

Usage: python ref_asof.py {duckdb,merge_asof} FEATURES.parquet ENTITIES.parquet TTL_S OUT.json

Both methods return, for each entity row (in input order), the latest feature row of the same
key with feature_ts <= event_ts and feature_ts >= event_ts - TTL_S, nulls when there is none:
the semantics of tasks.featurestore.get_historical_features. Only the standard library,
pandas, pyarrow and duckdb are imported here.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def _rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _duckdb(features: str, entities: str, ttl: int) -> tuple[float, dict[str, Any]]:
    import duckdb

    con = duckdb.connect()
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{features}')").fetchall()]
    feats = [n for n in names if n[1:].isdigit() and n[0] == "f"]
    picked = ", ".join(f"CASE WHEN f.feature_ts >= e.event_ts - {ttl} THEN f.{n} END AS {n}" for n in feats)
    sql = (
        f"SELECT e.row_id, {picked} FROM "
        f"read_parquet('{entities}') e "
        f"ASOF LEFT JOIN read_parquet('{features}') f "
        f"ON e.user_key = f.user_key AND e.event_ts >= f.feature_ts ORDER BY e.row_id"
    )
    start = time.perf_counter()
    out = con.execute(sql).df()
    elapsed = time.perf_counter() - start
    return elapsed, {"rows": len(out), "non_null": {n: int(out[n].notna().sum()) for n in feats}}


def _merge_asof(features: str, entities: str, ttl: int) -> tuple[float, dict[str, Any]]:
    import pandas as pd

    start_read = time.perf_counter()
    feat = pd.read_parquet(features)
    ent = pd.read_parquet(entities)
    read_s = time.perf_counter() - start_read
    feats = [c for c in feat.columns if c[1:].isdigit() and c[0] == "f"]
    start = time.perf_counter()
    left = ent[["row_id", "user_key", "event_ts"]].sort_values("event_ts", kind="stable")
    right = feat[["user_key", "feature_ts", *feats]].sort_values("feature_ts", kind="stable")
    joined = pd.merge_asof(
        left,
        right,
        left_on="event_ts",
        right_on="feature_ts",
        by="user_key",
        direction="backward",
        tolerance=ttl,
    )
    out = joined.sort_values("row_id").reset_index(drop=True)
    elapsed = time.perf_counter() - start
    return elapsed, {
        "rows": len(out),
        "read_s": read_s,
        "non_null": {n: int(out[n].notna().sum()) for n in feats},
    }


def main(argv: list[str]) -> None:
    """Run one method and write its timing, result summary and memory as JSON."""
    method, features, entities, ttl, out_path = argv[1], argv[2], argv[3], int(argv[4]), argv[5]
    rss_before = _rss_mib()
    elapsed, info = (_duckdb if method == "duckdb" else _merge_asof)(features, entities, ttl)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info.update(seconds=elapsed, peak_rss_mib=peak, rss_before_mib=rss_before)
    with open(out_path, "w") as handle:
        json.dump(info, handle)


if __name__ == "__main__":
    main(sys.argv)
