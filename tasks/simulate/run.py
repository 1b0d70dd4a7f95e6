"""Running the simulator against the platform: raw tables to the landing zone, truth to the DB."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

import pandas as pd
from sqlalchemy import Engine

from tasks import landing
from tasks.db import insert_frame, write_tx
from tasks.schema import ORACLE_TABLES, RAW_TABLES, identity_users
from tasks.settings import Settings
from tasks.simulate import SimConfig, simulate_platform
from tasks.simulate.config import Shift
from tasks.simulate.platform import (
    check_same_platform,
    continue_platform,
    last_day,
    load_state,
    recorded_state,
    save_state,
)


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
    emit_from: int | None = None,
) -> dict[str, int]:
    """Simulate a platform into the landing zone (and truth tables); returns rows per table."""
    sink = PlatformSink(settings, engine)
    return simulate_platform(config, sink, progress=progress, emit_from=emit_from)


def simulate_configured_platform(
    config: SimConfig, progress: Callable[[str, int, int], None] | None = None
) -> dict[str, int]:
    """Simulate into the configured platform (settings from the environment): migrate the warehouse,
    pseudonymise with the platform's key, land the raw tables, write the truth tables and record
    the platform's state for `simulate --continue` (tasks/simulate/platform.py).

    With no key configured and no key file yet, the key is derived from the simulation seed
    (tasks.settings.pseudonym_key), so the same seed gives the same pseudonyms on every machine.
    """
    from tasks.settings import get_settings

    settings = get_settings()
    recorded = recorded_state(settings)
    if recorded is not None:
        check_same_platform(settings, recorded, config)
    rows = _on_platform(settings, config, None, progress)
    # Simulating fewer days than before lands nothing new; the record keeps the longer run.
    save_state(settings, config if recorded is None or config.days >= recorded.days else recorded)
    return rows


def catch_up_configured_platform(
    config: SimConfig, progress: Callable[[str, int, int], None] | None = None
) -> tuple[SimConfig, dict[str, int]]:
    """The configured platform through the last day of `config`: simulated anew when the home
    holds none, else the recorded one (same size and seed, any start) continued up to that day.
    Returns the platform's configuration and the rows landed."""
    from tasks.settings import get_settings

    settings = get_settings()
    recorded = recorded_state(settings)
    if recorded is None:
        return config, simulate_configured_platform(config, progress=progress)
    check_same_platform(settings, recorded, dataclasses.replace(config, start=recorded.start))
    until = last_day(config)
    if last_day(recorded) >= until:
        return recorded, {}

    def land(longer: SimConfig, emit_from: int | None) -> dict[str, int]:
        return _on_platform(settings, longer, emit_from, progress)

    return continue_platform(settings, recorded, land, until=until)


def continue_configured_platform(
    *,
    days: int | None = None,
    until: datetime.date | None = None,
    shift: Shift | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[SimConfig, dict[str, int]]:
    """Land the next days of the configured platform; its new configuration and rows per table.

    PlatformStateError when the home holds no simulated platform or the dates are already past.
    """
    from tasks.settings import get_settings

    settings = get_settings()
    config = load_state(settings)

    def land(longer: SimConfig, emit_from: int | None) -> dict[str, int]:
        return _on_platform(settings, longer, emit_from, progress)

    return continue_platform(settings, config, land, days=days, until=until, shift=shift)


def _on_platform(
    settings: Settings,
    config: SimConfig,
    emit_from: int | None,
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, int]:
    """Simulate into the platform's warehouse and landing zone with the platform's key."""
    from tasks.db import make_engine
    from tasks.settings import pseudonym_key
    from tasks.warehouse import upgrade_schema

    engine = make_engine(settings.db_url)
    try:
        upgrade_schema(engine)
        keyed = dataclasses.replace(config, pseudonym_key=pseudonym_key(settings, seed=config.seed))
        return run_simulation(settings, engine, keyed, progress=progress, emit_from=emit_from)
    finally:
        engine.dispose()
