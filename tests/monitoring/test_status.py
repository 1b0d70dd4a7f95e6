"""`liveyield status` on a real platform: ad_ctr trained, gated, scored and monitored through the
flows on SQLite and PostgreSQL; every cell read back against the store that owns it (the champion
ledger, MLflow's gate verdicts, score_sets, monitoring_checks), and the next runs from a real
Prefect API.

The tests of the platform fixture run in file order: each builds on the state the previous left.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from sqlalchemy import Connection, Engine, func, select, update

from flows.cli import main
from tasks.featurestore import FEATURE_VIEWS, feature_table
from tasks.gates import current_champion, ledger
from tasks.models import catalog
from tasks.models.spec import LabelWindow, PromotionPolicy, ValueThreshold
from tasks.monitoring import DriftPolicy, latest_checks
from tasks.monitoring.run import model_views
from tasks.ops.servers import free_port
from tasks.ops.status import NONE, NOT_SERVED, StatusReport, cells, collect, next_runs
from tasks.schema import score_sets
from tasks.settings import Settings
from tasks.warehouse import raw_table, validated_dates
from tests.conftest import BACKENDS
from tests.models.warehouse import START, build_model_warehouse, fresh_warehouse

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 7
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
DAY = dt.timedelta(days=1)
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))
UNREACHABLE = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.999),))
SMALL = {"max_depth": 2, "learning_rate": 0.1, "n_estimators": 100}


@dataclasses.dataclass
class Platform:
    """The warehouse and the settings the flows read from the environment."""

    engine: Engine
    settings: Settings


@pytest.fixture(scope="module", params=BACKENDS)
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """ad_ctr's data of a small simulated week, nothing trained; ad_ctr with fewer trees and a
    lenient policy."""
    home = tmp_path_factory.mktemp(f"status-{request.param}")
    with fresh_warehouse(request.param, home) as backend, pytest.MonkeyPatch.context() as env:
        for key, value in backend.env.items():
            env.setenv(key, value)
        env.delenv("PREFECT_API_URL", raising=False)
        build_model_warehouse(
            backend.settings, backend.engine, catalog.get_spec("ad_ctr"), users=200, days=DAYS
        )
        spec = catalog.MODELS["ad_ctr"]
        env.setitem(catalog.MODELS, "ad_ctr", dataclasses.replace(spec, policy=LENIENT, params=SMALL))
        yield Platform(backend.engine, backend.settings)


def _status(
    platform: Platform, *models: str, as_of: dt.datetime = AS_OF, api: str | None = None
) -> StatusReport:
    now = int(time.time())
    return collect(platform.settings, platform.engine, list(models), as_of, now=now, api_url=api)


def _texts(report: StatusReport, model: str) -> list[str]:
    row = next(r for r in report.models if r.model == model)
    return [text for text, _ in cells(report, row)]


def test_before_any_training_each_cell_says_so(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _status(platform, "ad_ctr", "churn")
    assert [r.model for r in report.models] == ["ad_ctr", "churn"]
    assert report.schedule == NOT_SERVED and not report.served
    for row in report.models:
        assert (row.champion, row.training, row.scoring, row.drift, row.realised) == (None,) * 5
        texts = _texts(report, row.model)
        assert texts[1] == "no champion" and texts[2] == texts[3] == NONE and texts[-1] == NOT_SERVED
    ad_ctr, churn = report.models
    assert ad_ctr.freshness.status == "ok"  # its views were built up to the last day
    # churn reads views this platform never built: stale, naming one of them.
    unbuilt = {v.name for v in model_views(catalog.get_spec("churn"))} - {
        v.name for v in model_views(catalog.get_spec("ad_ctr"))
    }
    assert unbuilt and churn.freshness.status == "error"
    assert churn.freshness.detail.split(":")[0] in unbuilt

    day = (AS_OF - DAY).date().isoformat()  # a date means the end of that day: AS_OF
    assert main(["status", "ad_ctr", "churn", "--as-of", day]) == 0
    out = capsys.readouterr().out
    assert "no champion" in out and NOT_SERVED in out and "0 of 2 models have a champion" in out
    assert main(["status", "churn", "--json", "--as-of", day]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["models"][0]["champion"] is None and shown["models"][0]["freshness"]["status"] == "error"
    assert shown["as_of"] == AS_OF.isoformat()
    assert main(["status", "no_such_model"]) != 0
    assert "unknown model 'no_such_model'" in capsys.readouterr().err


def test_champion_and_gate_verdicts_follow_the_ledger(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.models import train_model

    engine = platform.engine
    first = train_model("ad_ctr", as_of=AS_OF, build=False)
    assert first.promoted
    row = _status(platform, "ad_ctr").models[0]
    moves = ledger(engine, "ad_ctr")
    assert row.champion == current_champion(engine, "ad_ctr") == moves[-1]["to_version"] == first.version
    assert row.champion_since == moves[-1]["created_ts"]
    assert row.training is not None
    assert (row.training.run_id, row.training.version, row.training.verdict) == (
        first.run_id, first.version, "passed",
    )  # fmt: skip

    # A different model (fewer trees) under a bound no model reaches: a new version, gate failed,
    # the champion unchanged.
    spec = catalog.MODELS["ad_ctr"]
    fewer = dataclasses.replace(spec, policy=UNREACHABLE, params={**SMALL, "n_estimators": 60})
    monkeypatch.setitem(catalog.MODELS, "ad_ctr", fewer)
    failed = train_model("ad_ctr", as_of=AS_OF, build=False)
    assert not failed.gate_passed and failed.version != first.version
    report = _status(platform, "ad_ctr")
    row = report.models[0]
    assert row.champion == current_champion(engine, "ad_ctr") == first.version
    assert row.training is not None
    assert (row.training.run_id, row.training.version, row.training.verdict) == (
        failed.run_id, failed.version, "failed",
    )  # fmt: skip
    assert row.training.reason == failed.gate_reason[:5000]
    texts = _texts(report, "ad_ctr")
    assert texts[1].startswith(f"v{first.version} ") and texts[2].startswith(f"v{failed.version} failed")

    # Ten days later every input is past its TTL: stale, named.
    later = _status(platform, "ad_ctr", as_of=AS_OF + 10 * DAY).models[0]
    assert later.freshness.status == "error" and "stale" in later.freshness.detail


def _clicked_next_day(conn: Connection, window: LabelWindow) -> pd.DataFrame:
    """Test labels: per user at midnight T, whether any impression in [T, T + 1 d) was clicked."""
    imp = raw_table("raw_ad_impressions")
    query = (
        select(imp.c.user_key, func.max(imp.c.clicked).label("label"))
        .where(imp.c.event_ts >= window.start_ts, imp.c.event_ts < window.start_ts + 86_400)
        .where(imp.c.event_date.in_(validated_dates(imp.name)))
        .group_by(imp.c.user_key)
    )
    frame = pd.DataFrame(conn.execute(query).all(), columns=["user_key", "label"])
    frame["event_ts"] = window.start_ts
    return frame


def _shift_watch_minutes(engine: Engine, day: dt.date, factor: float) -> int:
    """Multiply the watch minutes and sessions of every user in one partition of user_watch."""
    table = feature_table(FEATURE_VIEWS["user_watch"])
    with engine.begin() as conn:
        result = conn.execute(
            update(table)
            .where(table.c.partition_date == day)
            .values(
                watch_minutes_7d=table.c.watch_minutes_7d * factor + 60,
                watch_minutes_28d=table.c.watch_minutes_28d * factor + 60,
                sessions_7d=table.c.sessions_7d * factor + 3,
            )
        )
    return int(result.rowcount)


def _status_artifact() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["liveyield-status"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, "no liveyield-status artifact"
    return str(found[0].data)


def test_scoring_drift_realised_performance_and_the_artifact(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last: it changes the last day's feature rows."""
    from flows.models import score_model
    from flows.monitor import monitor_model

    engine = platform.engine
    # Realised performance needs a label horizon: one day, labels = a click the next day.
    spec = dataclasses.replace(catalog.MODELS["ad_ctr"], horizon_days=1, build_labels=_clicked_next_day)
    monkeypatch.setitem(catalog.MODELS, "ad_ctr", spec)
    scored = score_model("ad_ctr", as_of=AS_OF - DAY)
    published = next(line for line in _status_artifact().splitlines() if line.startswith("| ad_ctr |"))
    assert f"| {(AS_OF - DAY):%m-%d}: {scored.rows:,} rows, " in published  # score-model's last step
    monitor_model("ad_ctr", as_of=AS_OF)
    row = _status(platform, "ad_ctr").models[0]
    with engine.connect() as conn:
        stored = conn.execute(
            select(score_sets).where(score_sets.c.score_set_id == scored.score_set_id)
        ).one()
    assert row.scoring is not None
    assert (row.scoring.score_set_id, row.scoring.rows, row.scoring.version) == (
        scored.score_set_id, stored.rows, stored.model_version,
    )  # fmt: skip
    assert row.scoring.as_of == int((AS_OF - DAY).timestamp()) and row.scoring.rows == scored.rows > 0
    checks = {(c.check, c.statistic): c for c in latest_checks(engine, "ad_ctr")}
    realised, holdout = (
        checks[("realised_performance", "auc")],
        checks[("realised_performance", "holdout_auc")],
    )
    assert row.realised is not None and row.realised.statistic == "auc"
    assert (row.realised.value, row.realised.reference, row.realised.status) == (
        realised.value, holdout.value, realised.status,
    )  # fmt: skip
    assert row.drift is not None and row.drift.as_of == int(AS_OF.timestamp())
    assert row.drift.status == checks[("dataset_drift", "drift_share")].status == "ok"

    # Drift planted in the last day's features: the next monitoring run finds it, status shows it.
    monkeypatch.setitem(
        catalog.MODELS, "ad_ctr", dataclasses.replace(spec, drift=DriftPolicy(dataset_drift_share=0.08))
    )
    assert _shift_watch_minutes(engine, START + (DAYS - 1) * DAY, 4.0) > 0
    assert monitor_model("ad_ctr", as_of=AS_OF)["status"] == "drift"
    report = _status(platform, "ad_ctr")
    row = report.models[0]
    assert row.drift is not None and row.drift.status == "drift" and row.drift.version == row.champion
    assert _texts(report, "ad_ctr")[5].startswith("drift ")

    # The monitoring flow's last step published the same table as the liveyield-status artifact.
    artifact = _status_artifact()
    line = next(line for line in artifact.splitlines() if line.startswith("| ad_ctr |"))
    shown = [cell.strip() for cell in line.strip("|").split("|")]
    mine = _texts(report, "ad_ctr")
    assert shown[1].startswith(f"v{row.champion} ") and shown[5].startswith("drift ")
    assert shown[4:7] == [text.replace("\n", ", ") for text in mine[4:7]]  # no ages in these: the same

    from flows.monitor import platform_status  # the flow that only refreshes it

    refreshed = platform_status(as_of=AS_OF)
    assert refreshed is not None and refreshed == _status_artifact()


def test_next_runs_from_a_served_api(settings: Settings, engine: Engine) -> None:
    """The next scheduled run of each deployment, by its model tag; a dead address is "unreachable"."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Scheduled

    api = PREFECT_API_URL.value()
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(f"status-test-{uuid.uuid4().hex[:8]}")
        scoring = client.create_deployment(flow_id, "ad_ctr-score", tags=["model:ad_ctr", "stage:score"])
        ingest = client.create_deployment(flow_id, "ingest-validate-daily", tags=["stage:ingest"])
        for deployment, at in ((scoring, soon + dt.timedelta(hours=5)), (scoring, soon), (ingest, soon)):
            client.create_flow_run_from_deployment(deployment, state=Scheduled(scheduled_time=at))

    where, runs = next_runs(api)
    assert where == f"served at {api}"
    mine = [r for r in runs["ad_ctr"] if r.deployment == "ad_ctr-score" and r.expected >= soon.timestamp()]
    assert [r.expected for r in mine] == [int(soon.timestamp())] and mine[0].state == "Scheduled"
    assert any(r.deployment == "ingest-validate-daily" for r in runs[None])

    report = collect(settings, engine, ["ad_ctr"], AS_OF, now=int(time.time()), api_url=api)
    assert report.served and f"score {soon:%a %H:%M}" in _texts(report, "ad_ctr")[-1]
    assert report.models[0].champion is None  # a fresh warehouse: the other cells still say so

    where, runs = next_runs(f"http://127.0.0.1:{free_port()}/api")
    assert where.startswith("unreachable") and runs == {}
