"""A simulated platform that lives on: its recorded state, and continuing it day after day.

What a platform needs to continue is small and lives in ``<home>/simulator/platform.json``: the
configuration (size, seed, first day, days simulated so far) and the planted shifts. Everything
else — users, streamers, campaigns, follows, memberships, follower counts — is re-derived by
simulating again from the first day with the same seed and writing only the new days (see
``simulate_platform(emit_from=...)``): every day is drawn from the seed and the day alone, so the
continued days are exactly what one longer run would have landed. The pseudonym key is not
recorded; it comes from the platform's settings as on the first run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from tasks.settings import Settings
from tasks.simulate.config import Shift, SimConfig

STATE_FILE = Path("simulator") / "platform.json"


class PlatformStateError(ValueError):
    """The platform cannot be continued as asked (never simulated, or a date already past)."""


def state_path(settings: Settings) -> Path:
    """Where a platform's simulator state lives."""
    return settings.home / STATE_FILE


def save_state(settings: Settings, config: SimConfig) -> None:
    """Record what continuing this platform needs (not the pseudonym key)."""
    fields = dataclasses.asdict(config)
    fields.pop("pseudonym_key")
    fields["start"] = config.start.isoformat()
    fields["shifts"] = [{**dataclasses.asdict(s), "start": s.start.isoformat()} for s in config.shifts]
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def load_state(settings: Settings) -> SimConfig:
    """The recorded configuration of the platform under this home."""
    path = state_path(settings)
    if not path.exists():
        raise PlatformStateError(
            f"no simulated platform under {settings.home}; run `liveyield simulate` or `liveyield demo` first"
        )
    fields = json.loads(path.read_text())
    fields["start"] = dt.date.fromisoformat(fields["start"])
    fields["shifts"] = tuple(
        Shift(**{**s, "start": dt.date.fromisoformat(s["start"])}) for s in fields.get("shifts", [])
    )
    return SimConfig(**fields)


def recorded_state(settings: Settings) -> SimConfig | None:
    """The recorded platform under this home, or None when nothing was simulated here."""
    return load_state(settings) if state_path(settings).exists() else None


def check_same_platform(settings: Settings, recorded: SimConfig, config: SimConfig) -> None:
    """PlatformStateError unless `config` describes the platform recorded here (any length):
    a home holds one platform, and a different one would reuse its event ids and user keys."""
    if dataclasses.replace(config, days=recorded.days, pseudonym_key=recorded.pseudonym_key) == recorded:
        return
    raise PlatformStateError(
        f"{settings.home} holds another simulated platform (from {recorded.start}, seed {recorded.seed}, "
        f"{recorded.users} users, {recorded.streamers} streamers, {len(recorded.shifts)} shifts); "
        "continue it with `liveyield simulate --continue`, or use a fresh LIVEYIELD_HOME"
    )


def last_day(config: SimConfig) -> dt.date:
    """The last simulated day."""
    return config.start + dt.timedelta(days=config.days - 1)


def extended(config: SimConfig, *, days: int | None, until: dt.date | None, shift: Shift | None) -> SimConfig:
    """The configuration that simulates `days` more days (or through `until`), with a new shift."""
    last = last_day(config)
    if until is not None:
        if until <= last:
            raise PlatformStateError(f"--until {until} is not after the last simulated day {last}")
        days = (until - last).days
    more = 1 if days is None else days
    if more < 1:
        raise PlatformStateError("--days must be at least 1")
    if shift is not None and shift.start <= last:
        raise PlatformStateError(f"--shift-from {shift.start} is not after the last simulated day {last}")
    if shift is not None and any((s.kind, s.start) == (shift.kind, shift.start) for s in config.shifts):
        raise PlatformStateError(f"a {shift.kind} shift from {shift.start} is already planted")
    shifts = config.shifts if shift is None else (*config.shifts, shift)
    return dataclasses.replace(config, days=config.days + more, shifts=shifts)


def continue_platform(
    settings: Settings,
    config: SimConfig,
    sink_run: Callable[[SimConfig, int | None], dict[str, int]],
    *,
    days: int | None = None,
    until: dt.date | None = None,
    shift: Shift | None = None,
) -> tuple[SimConfig, dict[str, int]]:
    """Simulate the days after the recorded ones through sink_run(config, emit_from); record the
    new state once they have landed. Returns the new configuration and rows per table."""
    longer = extended(config, days=days, until=until, shift=shift)
    rows = sink_run(longer, config.end_epoch)
    save_state(settings, longer)
    return longer, rows
