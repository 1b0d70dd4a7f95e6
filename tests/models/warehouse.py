"""Test warehouses: a fresh migrated database per backend, and a small simulated, validated one with
the feature views materialised (model tests and benchmarks)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from tasks.db import make_engine
from tasks.featurestore import FEATURE_VIEWS, FeatureView, materialize_incremental
from tasks.ingest import ingest_table
from tasks.models.families.ad_impressions import CVR_FEATURES as MODEL_REFS
from tasks.models.spec import ModelSpec
from tasks.schema import RAW_TABLES
from tasks.settings import Settings, get_settings
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation
from tasks.warehouse import upgrade_schema
from tests.conftest import PG_URL

START = dt.date(2026, 1, 5)
CREATED_TS = 1_700_000_000  # a fixed build time before every event: backfilled rows never leak


@dataclass
class Backend:
    """A fresh, migrated warehouse on one backend, and the settings and environment that point at it."""

    name: str
    settings: Settings
    engine: Engine
    env: dict[str, str]


@contextmanager
def fresh_warehouse(backend: str, folder: Path) -> Iterator[Backend]:
    """An empty migrated warehouse: a SQLite file under ``folder``, or a PostgreSQL schema of its own.

    The PostgreSQL schema is dropped on exit; ``LIVEYIELD_SKIP_PG=1`` skips the PostgreSQL case.
    MLflow and the local home live under ``folder``.
    """
    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'warehouse.db'}"
    else:
        if os.environ.get("LIVEYIELD_SKIP_PG") == "1":
            pytest.skip("PostgreSQL cases skipped (LIVEYIELD_SKIP_PG=1)")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    env = {
        "LIVEYIELD_HOME": str(folder / "home"),
        "LIVEYIELD_DB_URL": url,
        "LIVEYIELD_PSEUDONYM_KEY": "test-key",
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
    }
    engine = make_engine(url)
    try:
        upgrade_schema(engine)
        yield Backend(backend, get_settings(env), engine, env)
    finally:
        engine.dispose()
        if schema is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


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
    views = [FEATURE_VIEWS[name] for name in sorted({ref.split(":")[0] for ref in refs})]
    materialize_all(engine, views, end=start + dt.timedelta(days=days - 1))
    return config


def build_model_warehouse(
    settings: Settings,
    engine: Engine,
    spec: ModelSpec,
    *,
    users: int,
    days: int,
    streamers: int = 15,
    seed: int = 5,
) -> SimConfig:
    """Simulate ``days`` from START, ingest only what ``spec`` reads (its label tables and its views'
    sources) and materialise its views through the last simulated day; returns the config."""
    from tasks.monitoring.run import model_views

    config = SimConfig(users=users, streamers=streamers, days=days, seed=seed, start=START)
    config = dataclasses.replace(config, pseudonym_key=b"test-key")
    run_simulation(settings, engine, config)
    views = model_views(spec)
    for table in sorted({*spec.label_sources, *(s for v in views for s in v.sources)}):
        ingest_table(engine, Path(settings.landing_dir), table, max_ts=config.end_epoch + 86_400)
    materialize_all(engine, views, end=START + dt.timedelta(days=days - 1))
    return config


def materialize_all(engine: Engine, views: Iterable[FeatureView], *, end: dt.date) -> None:
    """Build every validated partition of the views through ``end``, as the build-features flow does.

    Not from the first simulated day only: the simulator backfills signups (raw_users partitions
    weeks before it), and a model whose labels reach back there (user_growth's signups) must find
    the history rows the pipeline would serve it, not a training row without inputs.
    """
    for view in views:
        materialize_incremental(engine, view, created_ts=CREATED_TS, end=end)
