"""train-model and score-model flows end to end, under the shared Prefect harness (R2, R5, consumers)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, select

from flows.cli import main
from flows.models import PipelineFailed, pipeline, score_model, train_model
from tasks import lifecycle
from tasks.db import make_engine
from tasks.gates import ledger
from tasks.models import catalog
from tasks.models.evaluation import predict
from tasks.registry import load_approved
from tasks.registry.register import model_versions
from tasks.registry.tags import CHALLENGER, CHAMPION
from tasks.schema import alias_ledger, model_champions, published_scores, score_sets
from tasks.scoring import published_score_set, read_current_scores
from tasks.settings import Settings
from tasks.warehouse import upgrade_schema
from tests.integration.train_racer import LENIENT
from tests.models.warehouse import START, build_warehouse

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)


@pytest.fixture
def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A small simulated warehouse with features, and ad_ctr under a lenient policy."""
    engine = make_engine(settings.db_url)
    upgrade_schema(engine)
    build_warehouse(settings, engine, users=250, streamers=20, days=DAYS, seed=5)
    spec = catalog.MODELS["ad_ctr"]
    monkeypatch.setitem(catalog.MODELS, "ad_ctr", dataclasses.replace(spec, policy=LENIENT))
    yield engine
    engine.dispose()


def _client(settings: Settings) -> MlflowClient:
    return lifecycle.mlflow_client(settings)


def test_train_gate_promote_score_and_consume(
    platform: Engine, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = train_model("ad_ctr", as_of=AS_OF, build=False)
    assert first.version == 1 and first.gate_passed and first.promoted
    # R5: the same data and params again: no second version, no alias move, no new ledger entry.
    second = train_model("ad_ctr", as_of=AS_OF, build=False)
    assert second.version == 1 and not second.created and not second.promoted
    assert len(ledger(platform, "ad_ctr")) == 1
    client = _client(settings)
    assert str(client.get_model_version_by_alias("ad_ctr", "champion").version) == "1"
    tags = client.get_model_version("ad_ctr", "1").tags
    for tag in ("model_sha256", "holdout_fingerprint", "feature_versions", "validation_run_ids",
                "code_version", "flow_run_id", "gate_verdict"):  # fmt: skip
        assert tags.get(tag), tag

    scored = score_model("ad_ctr", as_of=AS_OF)
    current = read_current_scores(platform, "ad_ctr")
    assert len(current) == scored.rows > 0
    assert current["entity_key"].is_unique and set(current["model_version"]) == {1}
    assert current["score"].between(0, 1).all()
    score_model("ad_ctr", as_of=AS_OF)  # a rescoring publishes a new set; readers see one set
    assert len(read_current_scores(platform, "ad_ctr")) == scored.rows

    # A consumer pulls the approved model and scores a frame with it.
    assert main(["models", "pull", "ad_ctr", "--to", str(tmp_path / "pulled")]) == 0
    assert "pulled ad_ctr" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if "ad_ctr" in line]
    assert len(listed) == 1 and listed[0].count("v1") == 2  # champion and challenger
    approved = load_approved(settings.mlflow_tracking_uri, "ad_ctr")
    spec = catalog.get_spec("ad_ctr")
    frame = pd.DataFrame({c: [0.0, 1.0] for c in spec.input_columns})
    frame["device"] = "ios"
    predictions = predict(spec, approved.model, frame)
    assert predictions.shape == (2,) and ((predictions > 0) & (predictions < 1)).all()


def _state(engine: Engine, client: MlflowClient, model: str) -> dict[str, object]:
    """Everything a training run could change: registry versions and aliases, champion and ledger
    rows, the published score set and every score set."""
    found = sorted(int(v.version) for v in client.search_model_versions(f"name='{model}'"))
    # search_model_versions leaves aliases out; get_model_version reports them.
    versions = [
        (str(v.version), v.run_id, tuple(sorted(v.aliases)))
        for v in (client.get_model_version(model, str(n)) for n in found)
    ]
    with engine.connect() as conn:
        tables = {
            table.name: sorted(tuple(row) for row in conn.execute(select(table)).all())
            for table in (model_champions, alias_ledger, published_scores, score_sets)
        }
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {"versions": versions, "runs": sorted(r.info.run_id for r in runs), **tables}


def test_failing_train_step_in_the_pipeline_changes_nothing(
    platform: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R2: with a champion and its published scores in place, a pipeline whose train step fails names
    that step in its per-model error and leaves the registry, the champion, the alias ledger and the
    published score set exactly as they were."""
    before_day = AS_OF - dt.timedelta(days=1)
    first = train_model("ad_ctr", as_of=before_day, build=False)
    assert first.version == 1 and first.promoted and first.champion == 1
    published = score_model("ad_ctr", as_of=before_day)
    client = _client(settings)
    before = _state(platform, client, "ad_ctr")
    assert before["versions"] == [("1", first.run_id, ("challenger", "champion"))]
    assert before["model_champions"] and before["alias_ledger"]
    assert published_score_set(platform, "ad_ctr") == published.score_set_id

    def diverged(*_args: object, **_kwargs: object) -> None:
        raise FloatingPointError("loss is nan at iteration 3")

    # The fit inside the real train step fails; a day later, so a working fit would register v2.
    monkeypatch.setattr(lifecycle, "fit_candidate", diverged)
    with pytest.raises(PipelineFailed) as failed:
        pipeline(models=["ad_ctr"], as_of=AS_OF)
    outcome = failed.value.results.models["ad_ctr"]
    assert outcome.train is None and outcome.score is None
    assert outcome.error is not None and outcome.error.startswith("train-model failed: FloatingPointError")
    assert "ad_ctr: train-model failed" in str(failed.value)
    assert _state(platform, client, "ad_ctr") == before
    assert published_score_set(platform, "ad_ctr") == published.score_set_id
    assert str(client.get_model_version_by_alias("ad_ctr", "champion").version) == "1"
    current = read_current_scores(platform, "ad_ctr")
    assert set(current["score_set_id"]) == {published.score_set_id} and len(current) == published.rows


def test_scoring_without_a_champion_fails_clearly(platform: Engine) -> None:
    from tasks.gates import NoChampion

    with pytest.raises(NoChampion):
        score_model("ad_ctr", as_of=AS_OF)


@pytest.mark.slow
def test_r7_two_train_model_runs_of_one_model_at_once(
    platform: Engine, settings: Settings, tmp_path: Path
) -> None:
    """R7: two train-model runs of the same model, platform and as_of, as separate processes started
    together. Identical training registers one version (the fingerprint dedup), promoted once: both
    runs succeed and report that version; the one that did not promote says the champion is already
    that version. One ledger entry, the aliases agree, and neither run says "database is locked"."""
    from prefect.settings import PREFECT_API_URL

    go = tmp_path / "go"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "GX_ANALYTICS_ENABLED": "false"}
    command = [sys.executable, "-m", "tests.integration.train_racer", "ad_ctr", AS_OF.isoformat(), str(go)]
    root = Path(__file__).resolve().parents[2]
    racers = [
        subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for racer in racers:  # both imported and waiting: then draw the start line
            assert racer.stdout is not None and racer.stdout.readline().strip() == "READY"
        go.touch()
        outputs = [racer.communicate(timeout=600) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    for racer, (out, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err[-5000:]
        assert "database is locked" not in (out + err).lower(), err[-5000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    # They really raced: each run was still going when the other began.
    assert max(r["span"][0] for r in results) < min(r["span"][1] for r in results)
    assert [r["version"] for r in results] == [1, 1]
    assert sorted(r["created"] for r in results) == [False, True]
    assert all(r["gate_passed"] and r["champion"] == 1 for r in results), results
    assert sorted(r["promoted"] for r in results) == [False, True], results
    (loser,) = [r for r in results if not r["promoted"]]
    assert "already the champion" in loser["detail"], loser

    client = _client(settings)
    assert [int(mv.version) for mv in model_versions(client, "ad_ctr")] == [1]
    rows = ledger(platform, "ad_ctr")
    assert [(r["from_version"], r["to_version"], r["action"]) for r in rows] == [(None, 1, "promote")]
    assert int(client.get_model_version_by_alias("ad_ctr", CHAMPION).version) == 1
    assert int(client.get_model_version_by_alias("ad_ctr", CHALLENGER).version) == 1
