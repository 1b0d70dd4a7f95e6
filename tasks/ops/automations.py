"""Automations of the platform's Prefect server that no deployment owns (`liveyield serve` makes them).

Zombie flow runs: a flow run whose process dies with its worker (a killed machine, an OOM kill of
the worker's process tree) never reports a final state and would stay Running for ever. Every
flow run sends a ``prefect.flow-run.heartbeat`` event every ``heartbeat_s`` seconds (the worker's
PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set by tasks/ops/servers.py ``flow_env``); this automation
waits, after each heartbeat, for the next heartbeat or a final (or paused) state, and marks the
run Crashed when neither came within ``MISSED_BEATS`` heartbeats. This is the pattern of Prefect's
"detect zombie flows" guide; the server's trigger service evaluates it (proactive triggers are
checked every few seconds), so a zombie is Crashed at most a few seconds after the window.

The retraining triggers are not here: each belongs to its deployment (infra/prefect.yaml,
tasks/ops/deployments.py ``retrain_trigger``) and `prefect deploy` replaces them with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from tasks.settings import whole_number

HEARTBEAT_S = 60  # Prefect's default is 180 s and its minimum 30 s
MISSED_BEATS = 3  # a run is a zombie once this many heartbeats in a row did not come
ZOMBIE_AUTOMATION = "liveyield-crash-zombie-flow-runs"
CRASH_MESSAGE = "liveyield: no heartbeat for {within} s, the flow run's process is gone (marked Crashed)"
# What ends the wait after a heartbeat: the next one, a final state, or a pause (a paused run
# waiting for an approval may stop beating; it beats again once it runs).
_ALIVE_OR_DONE = (
    "prefect.flow-run.heartbeat",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Paused",
    "prefect.flow-run.Suspended",
)


def heartbeat_s(env: Mapping[str, str]) -> int:
    """The flow runs' heartbeat interval: LIVEYIELD_HEARTBEAT_S, else ``HEARTBEAT_S`` (at least 30)."""
    value = whole_number(env, "LIVEYIELD_HEARTBEAT_S", minimum=0, unit="seconds")
    return HEARTBEAT_S if value is None else max(value, 30)


def zombie_window_s(heartbeat: int) -> int:
    """How long after a heartbeat a run without a next one is marked Crashed."""
    return MISSED_BEATS * heartbeat


def zombie_automation(heartbeat: int) -> Any:
    """The automation that marks a flow run Crashed when its heartbeats stop (module notes)."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    within = zombie_window_s(heartbeat)
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=f"Mark a flow run Crashed when it sent no heartbeat for {within} s "
        f"({MISSED_BEATS} heartbeats of {heartbeat} s): its process died with its worker.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            after={"prefect.flow-run.heartbeat"},
            expect=set(_ALIVE_OR_DONE),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=dt.timedelta(seconds=within),
        ),
        actions=[
            ChangeFlowRunState(
                name=None, state=StateType.CRASHED, message=CRASH_MESSAGE.format(within=within), force=False
            )
        ],
    )


def ensure_automations(
    api_url: str,
    *,
    heartbeat: int = HEARTBEAT_S,
    auth_string: str | None = None,
    say: Callable[[str], None] = lambda _msg: None,
) -> list[str]:
    """Create (or replace, by name) the platform's automations on the Prefect API; their names.

    ``auth_string``: the server's basic-auth string (`liveyield serve` passes its credentials);
    None uses PREFECT_API_AUTH_STRING from the environment, if any."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    wanted = [zombie_automation(heartbeat)]
    updates: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if auth_string:
        updates[PREFECT_API_AUTH_STRING] = auth_string
    with temporary_settings(updates), get_client(sync_client=True) as client:
        for automation in wanted:
            for existing in client.read_automations_by_name(automation.name):
                client.delete_automation(existing.id)
            client.create_automation(automation)
    names = [a.name for a in wanted]
    say(f"automations: {', '.join(names)} (heartbeat every {heartbeat} s)")
    return names


def main() -> int:
    """Create the automations on the Prefect API of PREFECT_API_URL (the compose stack's deploy job)."""
    import os

    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        print("PREFECT_API_URL is not set: no Prefect server to create automations on")
        return 1
    ensure_automations(str(api), heartbeat=heartbeat_s(os.environ), say=print)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
