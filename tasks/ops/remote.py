"""Trigger deployment runs through a Prefect server's API and follow them to their end.

Every call carries the API's credentials when they are known (PREFECT_API_AUTH_STRING, or the
stack `liveyield serve` started when it serves that API): see ``prefect_client_settings``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

POLL_S = 2.0


class RemoteRunError(RuntimeError):
    """A deployment could not be run, or its run did not complete."""


def ui_url(api_url: str) -> str:
    """The Prefect UI address of an API address (the API lives under /api)."""
    return api_url.rstrip("/").removesuffix("/api")


def flow_run_url(api_url: str, flow_run_id: UUID | str) -> str:
    """The UI page of a flow run."""
    return f"{ui_url(api_url)}/runs/flow-run/{flow_run_id}"


def trigger(api_url: str, deployment: str, parameters: dict[str, Any]) -> tuple[UUID, str]:
    """Create a run of ``flow/deployment`` with these parameters; returns its id and name."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import temporary_settings

    from tasks.ops.servers import prefect_client_settings

    with temporary_settings(prefect_client_settings(api_url)):
        try:
            run: Any = run_deployment(
                deployment, parameters=parameters, timeout=0
            )  # a FlowRun, from sync code
        except ObjectNotFound:
            raise RemoteRunError(
                f"deployment {deployment} is not on {ui_url(api_url)}: deploy with `liveyield serve` "
                "or `prefect deploy --prefect-file infra/prefect.yaml --all`"
            ) from None
    return run.id, str(run.name)


def follow(
    api_url: str,
    flow_run_id: UUID,
    *,
    on_state: Callable[[str, str | None], None] = lambda _name, _message: None,
    on_paused: Callable[[], dict[str, Any] | None] = lambda: None,
    timeout_s: float | None = None,
) -> str:
    """Poll a flow run until it ends; returns its final state's name.

    ``on_state`` hears every state change; when the run pauses for input, ``on_paused`` may
    return the input to resume it with (or None to leave it to someone in the UI).
    """
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import temporary_settings

    from tasks.ops.servers import prefect_client_settings

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen: tuple[str, str | None] | None = None
    with temporary_settings(prefect_client_settings(api_url)), get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state is not None:
                current = (state.name or state.type.value, state.message)
                if current != seen:
                    seen = current
                    on_state(*current)
                    if state.is_paused() and (run_input := on_paused()) is not None:
                        resume_flow_run(flow_run_id, run_input=run_input)
                if state.is_final():
                    return str(state.name or state.type.value)
            if deadline is not None and time.monotonic() > deadline:
                raise RemoteRunError(f"flow run {flow_run_id} did not end within {timeout_s:.0f} s")
            time.sleep(POLL_S)


def table_artifact(api_url: str, flow_run_id: UUID, key: str) -> list[dict[str, Any]]:
    """The rows of a flow run's table artifact (empty when it made none)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.settings import temporary_settings

    from tasks.ops.servers import prefect_client_settings

    with temporary_settings(prefect_client_settings(api_url)), get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    if not artifacts:
        return []
    data = artifacts[-1].data
    rows = json.loads(data) if isinstance(data, str) else data
    return list(rows or [])
