"""Feast's local DuckDB offline store on bench_retrieval's data, run in a separate venv.

Usage: python ref_feast.py FEATURES.parquet ENTITIES.parquet TTL_S WORKDIR OUT.json

Feast needs datetime columns, so the Parquet files are converted once (untimed) into a
Feast-shaped copy; the timed part is ``get_historical_features(...).to_df()``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path


def _rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> None:
    """Build a throwaway Feast repo, run one historical retrieval and write a JSON summary."""
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RepoConfig
    from feast.types import Float64

    features, entities, ttl, workdir, out_path = argv[1], argv[2], int(argv[3]), Path(argv[4]), argv[5]
    workdir.mkdir(parents=True, exist_ok=True)
    feast_features = workdir / "features_feast.parquet"
    feat = pd.read_parquet(features)
    names = [c for c in feat.columns if c[1:].isdigit() and c[0] == "f"]
    feat["feature_time"] = pd.to_datetime(feat["feature_ts"], unit="s", utc=True)
    feat["created_time"] = pd.to_datetime(feat["created_ts"], unit="s", utc=True)
    feat[["user_key", "feature_time", "created_time", *names]].to_parquet(feast_features, index=False)
    del feat
    ent = pd.read_parquet(entities)
    entity_df = pd.DataFrame(
        {
            "row_id": ent["row_id"].to_numpy(),
            "user_key": ent["user_key"].astype(object).to_numpy(),
            "event_timestamp": pd.to_datetime(ent["event_ts"], unit="s", utc=True),
        }
    )
    del ent

    config = RepoConfig(
        project="liveyield_bench",
        registry=str(workdir / "registry.db"),
        provider="local",
        offline_store=DuckDBOfflineStoreConfig(),
        online_store=SqliteOnlineStoreConfig(path=str(workdir / "online.db")),
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    user = Entity(name="user", join_keys=["user_key"], value_type=ValueType.STRING)
    source = FileSource(
        path=str(feast_features), timestamp_field="feature_time", created_timestamp_column="created_time"
    )
    view = FeatureView(
        name="bench",
        entities=[user],
        ttl=timedelta(seconds=ttl),
        schema=[Field(name=n, dtype=Float64) for n in names],
        source=source,
        online=False,
    )
    store.apply([user, view])
    rss_before = _rss_mib()
    start = time.perf_counter()
    out = store.get_historical_features(entity_df=entity_df, features=[f"bench:{n}" for n in names]).to_df()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = {
        "seconds": elapsed,
        "rows": len(out),
        "non_null": {n: int(out[n].notna().sum()) for n in names},
        "peak_rss_mib": peak,
        "rss_before_mib": rss_before,
    }
    with open(out_path, "w") as handle:
        json.dump(info, handle)


if __name__ == "__main__":
    main(sys.argv)
