"""Approvals: a model whose policy requires one pauses for typed input and promotes only on approve."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from flows.cli import main
from flows.models import train_model
from tasks.db import make_engine
from tasks.gates import current_champion, ledger
from tasks.models import catalog
from tasks.models.spec import PromotionPolicy, ValueThreshold
from tasks.settings import Settings
from tasks.warehouse import upgrade_schema
from tests.models.warehouse import START, build_warehouse

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
AS_OF_ARG = (START + dt.timedelta(days=DAYS - 1)).isoformat()  # --as-of D means the end of day D
# A policy this tiny platform passes, with an approval required before promotion.
NEEDS_APPROVAL = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),), requires_approval=True)


@pytest.fixture
def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A small simulated warehouse with features, and ad_ctr under a policy that needs an approval."""
    engine = make_engine(settings.db_url)
    upgrade_schema(engine)
    build_warehouse(settings, engine, users=250, streamers=20, days=DAYS, seed=5)
    spec = catalog.MODELS["ad_ctr"]
    monkeypatch.setitem(catalog.MODELS, "ad_ctr", dataclasses.replace(spec, policy=NEEDS_APPROVAL))
    yield engine
    engine.dispose()


def _paused_run(started_after: dt.datetime, timeout_s: float = 180) -> Any:
    """The train-model flow run that paused after ``started_after``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    start_time=FlowRunFilterStartTime(after_=started_after)  # type: ignore[arg-type]
                )
            )
            for run in runs:
                if run.state is not None and run.state.is_paused() and run.name.startswith("train-ad_ctr"):
                    return run
            time.sleep(1)
    raise AssertionError("no train-model run paused for approval")


# The approval logic does not depend on the database; ledger writes are tested on both backends in
# tests/lifecycle. Each case here trains three times, so it runs on SQLite only.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_approval_is_asked_and_recorded(
    platform: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process, nobody can answer a pause: the command refuses without a decision...
    assert main(["retrain", "ad_ctr", "--as-of", AS_OF_ARG, "--no-build"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error:") and "needs an approval" in error and "--approve" in error
    # ...and a flow run without one trains, gates and keeps the candidate out of @champion.
    quiet = train_model("ad_ctr", as_of=AS_OF, build=False)
    assert quiet.gate_passed and not quiet.promoted and quiet.approval.decision == "not asked"
    assert current_champion(platform, "ad_ctr") is None

    # A rejection decided in advance: not promoted, and the result says who and why.
    assert main(["retrain", "ad_ctr", "--as-of", AS_OF_ARG, "--no-build", "--no-approve",
                 "--reason", "holdout too small"]) == 0  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "rejected by" in out and "holdout too small" in out
    assert ledger(platform, "ad_ctr") == [] and current_champion(platform, "ad_ctr") is None

    # With a server, the run pauses for typed input; an approval from the UI (here: its API) promotes.
    from prefect.artifacts import Artifact
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(
            result=train_model("ad_ctr", as_of=AS_OF, build=False, approval_timeout_s=600)
        )
    )
    runner.start()
    try:
        paused = _paused_run(started)
        report: Any = Artifact.get("gate-ad-ctr")
        assert report is not None and report.flow_run_id == paused.id  # the gate report is visible
        resume_flow_run(
            paused.id,
            run_input={"approve": True, "approver": "release-manager", "reason": "reviewed the gate report"},
        )
    finally:
        runner.join(timeout=300)
    result = outcome["result"]
    assert result.promoted and result.approval.decision == "approved"
    assert current_champion(platform, "ad_ctr") == result.version
    [move] = ledger(platform, "ad_ctr")
    assert (move["actor"], move["reason"]) == ("release-manager", "reviewed the gate report")
    assert move["flow_run_id"] == str(paused.id)
