"""Builds a small simulated, validated warehouse with every feature view materialised (tests, demo)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from sqlalchemy import Engine

from tasks.featurestore import FEATURE_VIEWS, materialize_views
from tasks.ingest import ingest_table
from tasks.models.families.ad_impressions import CVR_FEATURES as MODEL_REFS
from tasks.schema import RAW_TABLES
from tasks.settings import Settings
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation

START = dt.date(2026, 1, 5)
CREATED_TS = 1_700_000_000  # a fixed build time before every event: backfilled rows never leak


def build_warehouse(
    settings: Settings,
    engine: Engine,
    *,
    users: int,
    streamers: int,
    days: int,
    seed: int,
    start: dt.date = START,
    refs: tuple[str, ...] = MODEL_REFS,
) -> SimConfig:
    """Simulate, ingest every raw table and materialise the views ``refs`` read; returns the config."""
    config = SimConfig(users=users, streamers=streamers, days=days, seed=seed, start=start)
    config = dataclasses.replace(config, pseudonym_key=b"test-key")
    run_simulation(settings, engine, config)
    for table in RAW_TABLES:
        ingest_table(engine, Path(settings.landing_dir), table, max_ts=config.end_epoch + 86_400)
    last = start + dt.timedelta(days=days - 1)
    first = start - dt.timedelta(days=2)  # covers the longest TTL (2 days) at the first event
    views = [FEATURE_VIEWS[name] for name in sorted({ref.split(":")[0] for ref in refs})]
    materialize_views(engine, views, created_ts=CREATED_TS, start=first, end=last)
    return config
