"""train-model and score-model flows end to end, under the shared Prefect harness (R2, R5, consumers)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, func, select

from flows.cli import main
from flows.models import score_model, train_model
from tasks import lifecycle
from tasks.db import make_engine
from tasks.gates import ledger
from tasks.models import catalog
from tasks.models.evaluation import predict
from tasks.models.spec import PromotionPolicy, ValueThreshold
from tasks.registry import load_approved
from tasks.schema import score_sets
from tasks.scoring import read_current_scores
from tasks.settings import Settings
from tasks.warehouse import upgrade_schema
from tests.models.warehouse import START, build_warehouse

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
# The flow's mechanics are under test here, not this tiny platform's model quality: a
# policy any sane classifier passes (AUC above chance) stands in for the catalog's.
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))


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


def test_failing_train_step_fails_the_flow_and_changes_nothing(
    platform: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R2: nothing registered, no alias moved, no scores written."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("training diverged")

    monkeypatch.setattr(lifecycle, "fit_candidate", broken)
    with pytest.raises(RuntimeError, match="training diverged"):
        train_model("ad_ctr", as_of=AS_OF, build=False)
    assert _client(settings).search_registered_models() == []
    assert ledger(platform, "ad_ctr") == []
    with platform.connect() as conn:
        assert conn.execute(select(func.count()).select_from(score_sets)).scalar_one() == 0


def test_scoring_without_a_champion_fails_clearly(platform: Engine) -> None:
    from tasks.gates import NoChampion

    with pytest.raises(NoChampion):
        score_model("ad_ctr", as_of=AS_OF)
