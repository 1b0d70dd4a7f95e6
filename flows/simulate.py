"""simulate-daily: a served simulated platform receives yesterday's data shortly after midnight.

Deployed only when the platform is the simulator (`liveyield serve --simulate`, from
infra/prefect-simulate.yaml). It continues the platform recorded under the home
(tasks/simulate/platform.py) through the last full day before the run's scheduled time, landing
the new days for the usual ingest-validate; a day already simulated is not simulated again, so a
late or repeated run adds nothing twice.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger

from flows.schedule import last_full_day, latest_wins, name_day, run_as_of


def _run_name() -> str:
    from prefect.runtime import flow_run

    day = flow_run.parameters.get("day")
    return f"simulate-daily-{day or last_full_day(dt.datetime.fromisoformat(name_day(None))).isoformat()}"


@flow(name="simulate-daily", flow_run_name=_run_name, log_prints=True)
@latest_wins
def simulate_daily(day: dt.date | None = None) -> dict[str, int]:
    """Land the simulated platform's days through ``day`` (default: the last full day before the
    run's scheduled time, i.e. yesterday); rows landed per table, empty when already there."""
    from tasks.settings import get_settings
    from tasks.simulate.platform import last_day, load_state
    from tasks.simulate.run import continue_configured_platform

    logger = get_run_logger()
    until = day or last_full_day(run_as_of(None))
    recorded = load_state(get_settings())
    if last_day(recorded) >= until:
        logger.info("the platform is already simulated through %s; nothing to add", last_day(recorded))
        return {}
    config, rows = continue_configured_platform(until=until)
    logger.info("simulated %s → %s: %d rows landed", last_day(recorded), last_day(config), sum(rows.values()))
    return rows
