"""Monitoring on a real platform: ad_ctr trained and promoted through the flows, then monitored.

One small simulated warehouse per backend; the checks land in monitoring_checks on SQLite and
PostgreSQL. Drift is planted by changing real feature rows of the last day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import Connection, Engine, delete, func, select, update

from flows.cli import main
from tasks.dates import floor_to_day
from tasks.db import write_tx
from tasks.featurestore import FEATURE_VIEWS, feature_table
from tasks.models import catalog
from tasks.models.scoring_frame import StaleFeatures
from tasks.models.spec import LabelWindow, ModelSpec, PromotionPolicy, ValueThreshold
from tasks.monitoring import DriftPolicy, events, latest_checks
from tasks.monitoring.reference import load_reference
from tasks.monitoring.run import Finding, MonitorResult, findings, realised_rows
from tasks.monitoring.store import CheckRow
from tasks.schema import monitoring_checks, published_scores
from tasks.settings import Settings
from tasks.warehouse import raw_table, validated_dates
from tests.conftest import BACKENDS
from tests.models.warehouse import START, build_model_warehouse, fresh_warehouse
from tests.monitoring.test_events import model_events

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 7
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
DAY = dt.timedelta(days=1)
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))
SMALL = {"max_depth": 2, "learning_rate": 0.1, "n_estimators": 100}  # ad_ctr's shape, fewer trees


@dataclasses.dataclass
class Platform:
    """The warehouse, its settings, the monitoring run before any champion, the champion's run."""

    engine: Engine
    settings: Settings
    skipped: dict[str, Any]
    run_id: str
    started: dt.datetime  # before the platform's first promotion (events since then are its own)


@pytest.fixture(scope="module", params=BACKENDS)
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A small simulated warehouse with ad_ctr's features, settings of its own in the environment,
    and ad_ctr (fewer trees, a lenient policy) trained and promoted once at AS_OF (the tests below
    run in file order: the last one changes feature rows)."""
    from flows.models import train_model

    home = tmp_path_factory.mktemp(f"monitoring-{request.param}")
    with fresh_warehouse(request.param, home) as backend, pytest.MonkeyPatch.context() as env:
        for key, value in backend.env.items():
            env.setenv(key, value)
        build_model_warehouse(
            backend.settings, backend.engine, catalog.get_spec("ad_ctr"), users=200, days=DAYS
        )
        spec = catalog.MODELS["ad_ctr"]
        env.setitem(catalog.MODELS, "ad_ctr", dataclasses.replace(spec, policy=LENIENT, params=SMALL))
        from flows.monitor import monitor_model

        skipped = monitor_model("ad_ctr", as_of=AS_OF)  # before any champion
        started = dt.datetime.now(dt.UTC)
        trained = train_model("ad_ctr", as_of=AS_OF, build=False)
        assert trained.promoted
        yield Platform(backend.engine, backend.settings, skipped, trained.run_id, started)


def _rows(engine: Engine, **where: object) -> list[dict[str, object]]:
    query = select(monitoring_checks)
    for column, value in where.items():
        query = query.where(monitoring_checks.c[column] == value)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(monitoring_checks.c.id))]


def _shift_watch_minutes(engine: Engine, day: dt.date, factor: float) -> int:
    """Multiply the 7- and 28-day watch minutes of every user in one partition of user_watch."""
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


def test_no_champion_is_a_clean_skip_and_the_same_data_does_not_drift(
    platform: Platform, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.models import score_model
    from flows.monitor import monitor_model
    from tasks import lifecycle

    engine = platform.engine
    skipped = platform.skipped  # monitored before the first promotion: a clear skip, recorded
    assert skipped["status"] == "skipped" and "no champion" in skipped["summary"]
    first = _rows(engine, model="ad_ctr")[0]
    assert (
        first["check"] == "reference" and first["version"] is None and "no champion" in str(first["detail"])
    )

    reference = load_reference(platform.settings.mlflow_tracking_uri, platform.run_id)
    assert reference is not None and reference.serving is not None
    assert set(reference.training.inputs.columns) == set(catalog.get_spec("ad_ctr").input_columns)
    assert reference.serving.inputs.rows > 0 and reference.training.predictions.count > 0

    # The same data as the reference: nothing drifts, every deciding statistic is ~0.
    same = monitor_model("ad_ctr", as_of=AS_OF)
    assert same["status"] == "ok", same["summary"]
    assert same["compared_with"] == "serving"
    drift_rows = [r for r in same["rows"] if r["check"] == "feature_drift"]
    assert {r["feature"] for r in drift_rows} == set(reference.columns)  # every input is checked
    assert max(r["value"] for r in same["rows"] if r["statistic"] == "psi") < 1e-9
    # ad_activity has no history for the reference impression: all-null on both sides is no drift
    assert [r["status"] for r in drift_rows if r["feature"] == "ad_activity__ctr_7d"] == ["ok"]
    assert not findings_of(engine, same)
    stored = _rows(engine, model="ad_ctr", as_of=int(AS_OF.timestamp()))
    assert {r["check"] for r in stored} >= {"freshness", "feature_drift", "dataset_drift", "prediction_drift"}

    # A scoring run builds and predicts its frame once and monitors exactly what it scores: one
    # more set of rows (every input, the predictions), recorded under the scoring run's id.
    built: list[dt.datetime] = []
    real_frame = lifecycle.scoring_frame

    def counted(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
        built.append(as_of)
        return real_frame(engine, spec, as_of)

    monkeypatch.setattr(lifecycle, "scoring_frame", counted)
    before = {r["id"] for r in _rows(engine, model="ad_ctr")}
    scored = score_model("ad_ctr", as_of=AS_OF)
    assert scored.rows > 0 and len(built) == 1
    added = [r for r in _rows(engine, model="ad_ctr") if r["id"] not in before]
    assert len({r["run_id"] for r in added}) == 1 and added[0]["run_id"] not in {None, "local"}
    assert {r["feature"] for r in added if r["check"] == "feature_drift"} == set(reference.columns)
    assert [r["status"] for r in added if r["check"] == "dataset_drift"] == ["ok"]
    with platform.engine.connect() as conn:
        published = pd.read_sql("SELECT score FROM current_scores WHERE model_name = 'ad_ctr'", conn)
    psi = [r for r in added if r["check"] == "prediction_drift" and r["statistic"] == "psi"]
    assert len(published) == scored.rows and len(psi) == 1
    assert float(psi[0]["value"]) < 1e-9  # type: ignore[arg-type]  # the reference's own frame

    # Every model with a champion (the end of the day before AS_OF is AS_OF).
    assert main(["monitor", "--as-of", (AS_OF - DAY).date().isoformat()]) == 0
    out = capsys.readouterr().out
    assert "ad_ctr — ok" in out and "monitored 1 model(s)" in out and "1 ok" in out


def findings_of(engine: Engine, summary: dict[str, Any]) -> list[Finding]:
    """The findings of the newest stored monitoring run of ``summary``'s model and as_of."""
    rows = _rows(engine, model=summary["model"], as_of=summary["as_of"])
    run = [CheckRow(**r) for r in rows if r["run_id"] == rows[-1]["run_id"]]  # type: ignore[arg-type]
    return findings(MonitorResult(summary["model"], 1, summary["as_of"], summary["status"], "", tuple(run)))


def test_stale_inputs_are_recorded_and_refuse_scoring(platform: Platform) -> None:
    from flows.models import score_model
    from flows.monitor import monitor_model

    later = AS_OF + 4 * DAY  # no data arrived for four days: every daily view is past its TTL
    report = monitor_model("ad_ctr", as_of=later)
    assert report["status"] == "error" and "stale" in report["summary"]
    stale = [r for r in report["rows"] if r["check"] == "freshness" and r["status"] == "error"]
    assert {r["feature"] for r in stale} >= {"user_ads", "user_watch"}
    assert not [r for r in report["rows"] if r["check"] == "feature_drift"]  # nothing compared

    with pytest.raises(StaleFeatures, match="refusing to score on stale inputs"):
        score_model("ad_ctr", as_of=later)
    recorded = _rows(platform.engine, model="ad_ctr", as_of=int(later.timestamp()), check="freshness")
    assert len([r for r in recorded if r["status"] == "error"]) == 2 * len(stale)  # monitor + score


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


def test_realised_performance_of_a_published_score_set(platform: Platform) -> None:
    from flows.models import score_model

    engine = platform.engine
    # Publishing refuses a set older than the published one (compare-and-set), and other tests of
    # this platform publish later days: start from no published set of this model.
    with write_tx(engine) as conn:
        conn.execute(delete(published_scores).where(published_scores.c.model_name == "ad_ctr"))
    result = score_model("ad_ctr", as_of=AS_OF - DAY)  # the snapshot of the last simulated day
    assert result.published, result
    spec = dataclasses.replace(catalog.get_spec("ad_ctr"), horizon_days=1, build_labels=_clicked_next_day)
    meta = {"recorded_at": 1, "run_id": "test"}
    as_of = int(AS_OF.timestamp())

    too_early, line = realised_rows(engine, spec, lambda v: 0.6, as_of - 3600, DriftPolicy(), **meta)
    assert too_early == [] and "no published score set" in line

    rows, _ = realised_rows(engine, spec, lambda v: 0.5, as_of, DriftPolicy(), **meta)
    realised = rows[0]
    # The same AUC computed independently from the stored scores and the raw impressions.
    with engine.connect() as conn:
        labels = _clicked_next_day(conn, LabelWindow(floor_to_day(as_of - 86_400), as_of, 86_400))
        scored = pd.read_sql("SELECT entity_key, score FROM current_scores WHERE model_name = 'ad_ctr'", conn)
    joined = scored.merge(labels.rename(columns={"user_key": "entity_key"}), on="entity_key")
    assert realised.value == pytest.approx(roc_auc_score(joined["label"], joined["score"]))
    assert realised.value is not None and realised.status == ("ok" if realised.value >= 0.45 else "drift")
    assert rows[1].statistic == "holdout_auc" and rows[1].value == 0.5

    # A champion whose holdout promised far more: the drop beyond the policy's share is drift.
    dropped, _ = realised_rows(engine, spec, lambda v: 0.99, as_of, DriftPolicy(), **meta)
    assert dropped[0].status == "drift" and dropped[0].threshold == pytest.approx(0.99 * 0.9)
    assert "holdout auc 0.99" in dropped[0].detail and dropped[0].value == realised.value


def test_planted_drift_is_found_reported_and_does_not_block_scoring(
    platform: Platform, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last in this module: it changes the last day's feature rows."""
    from flows.models import score_model
    from flows.monitor import monitor_model

    engine = platform.engine
    # The last day's watch features of every user move. Under a policy that calls the dataset
    # drifted when 8 % of its inputs drift (the spec's own thresholds), the changed inputs drift,
    # the others do not, and the run is a drift finding.
    spec = catalog.MODELS["ad_ctr"]
    policy = DriftPolicy(dataset_drift_share=0.08)
    monkeypatch.setitem(catalog.MODELS, "ad_ctr", dataclasses.replace(spec, drift=policy))
    assert _shift_watch_minutes(engine, START + dt.timedelta(days=DAYS - 1), 4.0) > 0
    shifted = monitor_model("ad_ctr", as_of=AS_OF)
    assert shifted["status"] == "drift", shifted["summary"]
    drifted = {
        r["feature"] for r in shifted["rows"] if r["check"] == "feature_drift" and r["statistic"] == "psi"
        and r["status"] == "drift"
    }  # fmt: skip
    assert {
        "user_watch__watch_minutes_7d",
        "user_watch__watch_minutes_28d",
        "user_watch__sessions_7d",
    } <= drifted
    assert not drifted & {"user_profile__days_since_signup", "device", "user_ads__ad_clicks_7d"}
    latest = {(r.check, r.feature, r.statistic): r for r in latest_checks(engine, "ad_ctr")}
    assert latest[("feature_drift", "user_watch__watch_minutes_7d", "psi")].status == "drift"
    assert latest[("dataset_drift", None, "drift_share")].status == "drift"
    assert "drift" in {f.kind for f in findings_of(engine, shifted)}
    # The finding went to the Prefect API as an event about ad_ctr, as did the promotion.
    [drift] = model_events("ad_ctr", platform.started, (events.DRIFT_DETECTED,), count=1)
    assert drift.payload["as_of"] == AS_OF.isoformat() and drift.payload["version"] == 1
    assert "user_watch__watch_minutes_7d" in drift.payload["details"][0]
    promoted = model_events("ad_ctr", platform.started, (events.PROMOTED,), count=1)
    assert [e.payload["version"] for e in promoted] == [1]

    # Drift does not block scoring; the command reports it and still exits 0.
    assert score_model("ad_ctr", as_of=AS_OF).rows > 0
    assert main(["monitor", "ad_ctr", "--as-of", (AS_OF - DAY).date().isoformat()]) == 0
    out = capsys.readouterr().out
    assert "ad_ctr — drift" in out and "user_watch__watch_minutes_7d" in out
