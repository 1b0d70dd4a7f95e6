"""The approval round trip: a flow run pauses for typed input (approve, approver, reason).

A model whose policy says ``requires_approval`` asks here after a passing gate. On a Prefect
server the run pauses until someone resumes it in the UI with an :class:`Approval`. In-process
runs, which no UI can resume, take their decision in advance from :func:`decided`, or get
none (the candidate is not promoted).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from prefect import get_run_logger
from prefect.input import RunInput
from pydantic import Field

from tasks.settings import get_settings

APPROVAL_TIMEOUT_S = 24 * 3600


class Approval(RunInput):
    """The decision on a candidate that passed its gate, given in the Prefect UI."""

    approve: bool = Field(default=False, description="Promote this candidate to @champion.")
    approver: str = Field(min_length=1, description="Who decides (recorded in the alias ledger).")
    reason: str = Field(min_length=1, description="Why (recorded in the alias ledger).")


_DECISION: ContextVar[Approval | None] = ContextVar("liveyield_approval", default=None)


@contextmanager
def decided(approve: bool, approver: str, reason: str) -> Iterator[None]:
    """Decide approvals in advance for the flows run inside this block (in-process runs)."""
    token = _DECISION.set(Approval(approve=approve, approver=approver, reason=reason))
    try:
        yield
    finally:
        _DECISION.reset(token)


def ask_for_approval(model: str, version: int, gate_markdown: str, timeout_s: int) -> Approval | None:
    """The decision on a passing candidate: decided in advance, asked in the UI, or None (no server).

    Must be called inside the flow run that is to pause; a timeout fails that run.
    """
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    decision = _DECISION.get()
    if decision is not None:
        return decision
    if get_settings().prefect_api_url is None:  # the ephemeral API: no UI anyone could resume from
        return None
    logger = get_run_logger()
    logger.info("%s v%s passed its gate and needs approval: resume this run in the UI", model, version)
    form = Approval.with_initial_data(
        description=f"Approve {model} v{version} as @champion?\n\n{gate_markdown}", approve=False
    )
    try:
        return pause_flow_run(
            wait_for_input=form,
            timeout=timeout_s,
            poll_interval=5,
            key=f"approve-{model.replace('_', '-')}-v{version}",
        )
    except FlowPauseTimeout:
        # Prefect fails a run whose pause timed out; say why before it does.
        logger.error("%s v%s: no decision within %d s; not promoted", model, version, timeout_s)
        raise
