"""Running the simulator against the platform: raw tables to the landing zone, truth to the DB."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pandas as pd
from sqlalchemy import Engine

from tasks import landing
from tasks.db import insert_frame, write_tx
from tasks.schema import ORACLE_TABLES, RAW_TABLES, identity_users
from tasks.settings import Settings
from tasks.simulate import SimConfig, simulate_platform


class PlatformSink:
    """Routes simulator output: raw batches land as files, oracle and identity rows go to the DB."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.files = 0

    def write(self, table: str, frame: pd.DataFrame) -> None:
        """Write one chunk of one table."""
        if table in RAW_TABLES:
            self.files += len(landing.write_batch(self.settings.landing_dir, table, frame))
            return
        target = ORACLE_TABLES.get(table) if table != identity_users.name else identity_users
        if target is None:
            raise ValueError(f"simulator wrote to an undeclared table {table!r}")
        with write_tx(self.engine) as conn:
            insert_frame(conn, target, frame)


def run_simulation(
    settings: Settings,
    engine: Engine,
    config: SimConfig,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, int]:
    """Simulate a platform into the landing zone (and truth tables); returns rows per table."""
    sink = PlatformSink(settings, engine)
    return simulate_platform(config, sink, progress=progress)


def simulate_configured_platform(
    config: SimConfig, progress: Callable[[str, int, int], None] | None = None
) -> dict[str, int]:
    """Simulate into the configured platform (settings from the environment): migrate the warehouse,
    pseudonymise with the platform's key, land the raw tables and write the truth tables.

    With no key configured and no key file yet, the key is derived from the simulation seed
    (tasks.settings.pseudonym_key), so the same seed gives the same pseudonyms on every machine.
    """
    from tasks.db import make_engine
    from tasks.settings import get_settings, pseudonym_key
    from tasks.warehouse import upgrade_schema

    settings = get_settings()
    engine = make_engine(settings.db_url)
    try:
        upgrade_schema(engine)
        keyed = dataclasses.replace(config, pseudonym_key=pseudonym_key(settings, seed=config.seed))
        return run_simulation(settings, engine, keyed, progress=progress)
    finally:
        engine.dispose()
