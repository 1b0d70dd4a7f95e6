"""M1, M2, M4 and M5 through the real lifecycle on a real platform, SQLite and PostgreSQL.

One small simulated warehouse per backend with ad_ctr's features and a SQLite MLflow store beside
it. The module trains a few ad_ctr runs once, each through ``lifecycle.train_candidate`` (a real
MLflow run with its logged model and holdout):

* ``strong``: ad_ctr's recipe with fewer trees, the champion of most tests;
* ``stump``: one depth-1 tree, worse than ``strong`` overall;
* ``android_reversed``: ``strong``'s recipe whose ranking of android impressions is reversed, a
  candidate that regressed on one device (a critical slice of the test policy);
* ``outage``: ``strong``'s recipe trained while the clicks of the holdout period were lost (a click
  tracking outage): every holdout label is 0, so the AUC on the holdout is undefined (NaN);
* ``truncated``: a run whose holdout artifact a test empties (a truncated evaluation set).

Each test registers the runs it needs under a model name of its own (a copy of ad_ctr's spec with
the test's policy) and takes the steps the train-model and score-model flows take:
``lifecycle.register``, ``lifecycle.gate`` (the real evaluation on the stored holdout, the champion
re-scored on it), ``lifecycle.promote_if_passed``, ``lifecycle.score`` and ``liveyield models
rollback``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sqlalchemy import Engine, event, select, update

from flows.cli import main
from tasks import lifecycle
from tasks.db import make_engine
from tasks.gates import GateReport, current_champion, ledger, resolve_champion
from tasks.models import catalog
from tasks.models.spec import ChangeThreshold, ModelSpec, PromotionPolicy, ValueThreshold
from tasks.models.tracking import HOLDOUT_ARTIFACT, load_holdout
from tasks.registry import UnapprovedModel, load_approved
from tasks.registry.tags import CHAMPION, GATE_TAG
from tasks.registry.writes import alias_version
from tasks.schema import scores
from tasks.scoring import publication, published_score_set, read_current_scores, score_set_status
from tasks.settings import Settings
from tasks.warehouse import raw_table
from tests.conftest import BACKENDS
from tests.models.warehouse import START, build_model_warehouse, fresh_warehouse

# The module's platform is built and its five runs trained once per backend: 20-70 s of setup.
pytestmark = pytest.mark.slow

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
DAY = dt.timedelta(days=1)
BASE = catalog.MODELS["ad_ctr"]
SMALL = {"max_depth": 2, "learning_rate": 0.1, "n_estimators": 100}  # ad_ctr's shape, fewer trees
STUMP = {"max_depth": 1, "learning_rate": 0.1, "n_estimators": 1}
# The gate of M1 and M2: a floor, no overall regression beyond 0.005 AUC, none beyond 0.02 on any
# device (the critical slice; ad_ctr's own policy names region, whose slices this small platform
# leaves too few clicks to decide).
GATE = PromotionPolicy(
    value_thresholds=(ValueThreshold("auc", lower=0.5),),
    change_thresholds=(ChangeThreshold("auc", slack=-0.005), ChangeThreshold("auc", -0.02, "device")),
)
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))  # lets a weak model in


class AndroidReversed(Pipeline):
    """ad_ctr's pipeline whose ranking of android impressions is reversed (the values stay the same,
    their order among android rows is flipped), as a broken encoding of one device's inputs would."""

    def predict_proba(self, X: pd.DataFrame, **params: Any) -> np.ndarray:
        proba = np.array(super().predict_proba(X, **params), dtype="float64")
        rows = np.flatnonzero(X["device"].astype(str).to_numpy() == "android")
        values = proba[rows, 1]
        flipped = np.empty_like(values)
        flipped[np.argsort(values, kind="stable")] = np.sort(values)[::-1]
        proba[rows, 1], proba[rows, 0] = flipped, 1 - flipped
        return proba


def _recipe(params: dict[str, Any], variant: str = "", reversed_android: bool = False) -> dict[str, Any]:
    """Spec fields of one training recipe; ``variant`` is logged with the params (and keeps the
    training fingerprint of otherwise equal recipes apart)."""

    def make(given: Any) -> Any:
        pipeline = BASE.make_estimator({k: v for k, v in given.items() if k != "variant"})
        return AndroidReversed(pipeline.steps) if reversed_android else pipeline

    return {"params": {**params, "variant": variant} if variant else params, "make_estimator": make}


RECIPES = {
    "strong": _recipe(SMALL),
    "stump": _recipe(STUMP),
    "android_reversed": _recipe(SMALL, "android reversed", reversed_android=True),
    "truncated": _recipe(STUMP, "holdout truncated by the test"),
}


@dataclasses.dataclass
class Platform:
    """The warehouse, its settings, and the run id of every recipe."""

    engine: Engine
    settings: Settings
    runs: dict[str, str]


def _train(platform: Platform, env: pytest.MonkeyPatch, recipe: dict[str, Any]) -> str:
    env.setitem(catalog.MODELS, "ad_ctr", dataclasses.replace(BASE, **recipe))
    trained = lifecycle.train_candidate(
        platform.settings, platform.engine, "ad_ctr", AS_OF, code_version="test", flow_run_id=None
    )
    return str(trained["run_id"])


def _train_through_click_outage(platform: Platform, env: pytest.MonkeyPatch) -> str:
    """Train ``strong``'s recipe while every click from the holdout's first event on is lost."""
    cut = int(load_holdout(platform.settings.mlflow_tracking_uri, platform.runs["strong"])["event_ts"].min())
    impressions = raw_table("raw_ad_impressions")
    with platform.engine.begin() as conn:
        lost = list(
            conn.execute(
                select(impressions.c.event_id).where(
                    impressions.c.event_ts >= cut, impressions.c.clicked == 1
                )
            ).scalars()
        )
        conn.execute(update(impressions).where(impressions.c.event_id.in_(lost)).values(clicked=0))
    assert lost, "the holdout period had no clicks to lose"
    try:
        return _train(platform, env, _recipe(SMALL, "trained through a click outage"))
    finally:  # the other recipes and tests see the clicks again
        with platform.engine.begin() as conn:
            conn.execute(update(impressions).where(impressions.c.event_id.in_(lost)).values(clicked=1))


@pytest.fixture(scope="module", params=BACKENDS)
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The simulated warehouse of one backend, its settings in the environment, every recipe trained."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_available")  # exits when PostgreSQL is down and not skipped
    home = tmp_path_factory.mktemp(f"platform-gate-{request.param}")
    with fresh_warehouse(request.param, home) as backend, pytest.MonkeyPatch.context() as env:
        for key, value in backend.env.items():
            env.setenv(key, value)
        build_model_warehouse(backend.settings, backend.engine, BASE, users=1500, days=DAYS)
        built = Platform(backend.engine, backend.settings, {})
        for name, recipe in RECIPES.items():
            built.runs[name] = _train(built, env, recipe)
        built.runs["outage"] = _train_through_click_outage(built, env)
        env.setitem(catalog.MODELS, "ad_ctr", BASE)
        yield built


def _model(monkeypatch: pytest.MonkeyPatch, policy: PromotionPolicy, **changes: Any) -> str:
    """A model name of this test's own: ad_ctr's spec under that name, with the given policy."""
    name = f"ad_ctr_{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(catalog.MODELS, name, dataclasses.replace(BASE, name=name, policy=policy, **changes))
    return name


def _candidate(platform: Platform, name: str, recipe: str) -> tuple[int, GateReport]:
    """Register a recipe's run as a version of ``name`` and gate it: the flow's register and gate steps."""
    run_id = platform.runs[recipe]
    version = int(lifecycle.register(platform.settings, name, run_id)["version"])
    return version, lifecycle.gate(platform.settings, platform.engine, name, version, run_id)


def _promote(platform: Platform, report: GateReport, engine: Engine | None = None) -> dict[str, Any]:
    """The flow's promote step."""
    return lifecycle.promote_if_passed(
        platform.settings,
        engine or platform.engine,
        report,
        actor="test",
        flow_run_id=None,
        reason=f"promote v{report.candidate_version}",
    )


def _champion(platform: Platform, name: str, recipe: str) -> int:
    version, report = _candidate(platform, name, recipe)
    assert report.passed, report.reason
    assert _promote(platform, report)["promoted"]
    return version


def _failed(report: GateReport) -> list[tuple[str, str | None, str | None]]:
    return [(c.name, c.metric, c.slice) for c in report.failed]


def _assert_not_promoted_and_recorded(
    platform: Platform, name: str, champion: int, version: int, report: GateReport, rule: str
) -> None:
    """No promotion (warehouse champion, MLflow alias and ledger as they were, the candidate not
    loadable) and the verdict, naming ``rule``, on the version's tags and in its run's gate report."""
    outcome = _promote(platform, report)
    assert (outcome["promoted"], outcome["champion"], outcome["detail"]) == (False, champion, report.reason)
    client = lifecycle.mlflow_client(platform.settings)
    assert current_champion(platform.engine, name) == champion == alias_version(client, name, CHAMPION)
    assert [(r["action"], r["to_version"]) for r in ledger(platform.engine, name)] == [("promote", champion)]
    with pytest.raises(UnapprovedModel):
        load_approved(platform.settings.mlflow_tracking_uri, name, version=version, warehouse=platform.engine)
    tags = client.get_model_version(name, str(version)).tags
    assert tags["gate_verdict"] == "failed" and rule in tags["gate_reason"], tags.get("gate_reason")
    assert json.loads(tags["gate_report"])["passed"] is False
    run_id = str(client.get_model_version(name, str(version)).run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, f"gate/report-v{version}.json", tmp)
        logged = json.loads(Path(path).read_text())
    assert logged["passed"] is False and rule in logged["reason"]
    assert logged["candidate_version"] == version and logged["champion_version"] == champion


def test_m1_worse_candidate_is_not_promoted(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """M1: a retrained candidate worse than the champion overall (one stump against the champion's
    trees), judged by the real gate on its stored holdout with the champion re-scored on it, fails
    the change threshold on its whole paired interval: no promotion, the reason recorded."""
    name = _model(monkeypatch, GATE)
    champion = _champion(platform, name, "strong")
    version, report = _candidate(platform, name, "stump")
    assert ("change_threshold", "auc", None) in _failed(report)
    (overall,) = [c for c in report.checks if c.name == "change_threshold" and c.slice is None]
    assert overall.observed is not None and overall.high is not None and overall.high < -0.005
    assert "whole paired interval" in overall.detail
    _assert_not_promoted_and_recorded(platform, name, champion, version, report, "change_threshold auc:")


def test_m1_nan_metric_is_not_promoted(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """M1: a candidate trained through a click outage has no clicked impression in its holdout, so
    its AUC there is NaN: the NaN fails the value threshold (it is never compared as a number), no
    promotion, the reason recorded."""
    name = _model(monkeypatch, GATE)
    champion = _champion(platform, name, "strong")
    holdout = load_holdout(platform.settings.mlflow_tracking_uri, platform.runs["outage"])
    assert len(holdout) > 0 and holdout["label"].sum() == 0  # the fault: clicks lost, rows kept
    version, report = _candidate(platform, name, "outage")
    assert ("value_threshold", "auc", None) in _failed(report)
    (floor,) = [c for c in report.checks if c.name == "value_threshold"]
    assert floor.observed is None or np.isnan(floor.observed)
    _assert_not_promoted_and_recorded(
        platform, name, champion, version, report, "value_threshold auc: metric 'auc' is not finite"
    )


def test_m1_missing_metric_is_not_promoted(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """M1: the spec's metric list loses ``ece`` while its policy still bounds it: the gate's real
    evaluation of the candidate has no ece, and a missing metric fails the check rather than passing
    unchecked; no promotion, the reason recorded."""
    policy = PromotionPolicy(value_thresholds=(ValueThreshold("auc", 0.5), ValueThreshold("ece", upper=0.05)))
    name = _model(monkeypatch, policy)
    champion = _champion(platform, name, "strong")  # judged with ece: it passes
    without_ece = tuple(m for m in BASE.metrics if m != "ece")
    monkeypatch.setitem(catalog.MODELS, name, dataclasses.replace(catalog.MODELS[name], metrics=without_ece))
    version, report = _candidate(platform, name, "android_reversed")
    assert _failed(report) == [("value_threshold", "ece", None)]
    _assert_not_promoted_and_recorded(
        platform, name, champion, version, report, "value_threshold ece: metric 'ece' is missing"
    )


def test_m1_empty_evaluation_set_is_not_promoted(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """M1: the candidate's logged holdout is truncated to no rows (its columns kept) after training:
    the gate judges nothing on it and fails the size check, without re-scoring the champion on an
    empty frame; no promotion, the reason recorded."""
    name = _model(monkeypatch, GATE)
    champion = _champion(platform, name, "strong")
    run_id = platform.runs["truncated"]
    client = lifecycle.mlflow_client(platform.settings)
    stored = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / HOLDOUT_ARTIFACT
    pd.read_parquet(stored).iloc[:0].to_parquet(stored, index=False)
    assert load_holdout(platform.settings.mlflow_tracking_uri, run_id).empty
    version, report = _candidate(platform, name, "truncated")
    assert ("holdout_size", None, "candidate") in _failed(report)
    _assert_not_promoted_and_recorded(
        platform, name, champion, version, report, "empty evaluation set for the candidate"
    )


def test_m2_better_overall_worse_on_a_critical_slice(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M2: against a weak champion (one stump), a candidate better overall whose ranking of android
    impressions is reversed: the overall change check does not fail and its AUC is higher, the
    android slice fails on its whole paired interval, and that is the only failure; no promotion."""
    name = _model(monkeypatch, GATE)
    champion = _champion(platform, name, "stump")
    version, report = _candidate(platform, name, "android_reversed")
    assert _failed(report) == [("change_threshold", "auc", "device=android")]
    changes = {c.slice: c for c in report.checks if c.name == "change_threshold"}
    overall, android = changes[None], changes["device=android"]
    assert overall.passed and overall.observed is not None and overall.observed > 0  # better overall
    assert android.high is not None and android.high < -0.02 and "whole paired interval" in android.detail
    _assert_not_promoted_and_recorded(
        platform, name, champion, version, report, "change_threshold auc[device=android]"
    )


# M4 and M5: rollback, and the champion moving while a scoring run is under way.


def _score(platform: Platform, name: str, run: str, now: int, engine: Engine | None = None) -> dict[str, Any]:
    """The score-model flow's step: score every user with the champion and publish by compare-and-set."""
    return lifecycle.score(
        platform.settings, engine or platform.engine, name, AS_OF, run_id=f"{name}-{run}", now=now
    )


def _set_rows(engine: Engine, set_id: str) -> pd.DataFrame:
    query = select(scores.c.entity_key, scores.c.model_version, scores.c.score).where(
        scores.c.score_set_id == set_id
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=["entity_key", "model_version", "score"])


def _predicted_by(platform: Platform, name: str, version: int) -> pd.Series:
    """What ``version`` predicts for every entity the scoring run scores, by entity key."""
    spec: ModelSpec = catalog.get_spec(name)
    client = lifecycle.mlflow_client(platform.settings)
    model = mlflow.sklearn.load_model(client.get_model_version_download_uri(name, str(version)))
    frame = lifecycle.scoring_frame(platform.engine, spec, AS_OF).reset_index(drop=True)
    predicted = lifecycle.predict_chunks(spec, model, frame)["prediction"].to_numpy("float64")
    return pd.Series(predicted, index=frame[spec.scoring.key].astype(str).to_numpy())


def test_m4_roll_back_a_bad_champion_in_one_call(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """M4: a weak model that a lenient gate let in becomes champion and its scores are published;
    one ``liveyield models rollback`` restores the previous champion: the warehouse and MLflow's
    @champion name it, the ledger records the rollback, its latest score set is what consumers read
    again, the bad version is no longer loadable, and the next scoring run uses the restored one."""
    name = _model(monkeypatch, LENIENT)
    good = _champion(platform, name, "strong")
    good_set = _score(platform, name, "good", now=1_000)["score_set_id"]
    bad = _champion(platform, name, "stump")
    bad_scored = _score(platform, name, "bad", now=2_000)
    assert bad_scored["published"]
    assert set(read_current_scores(platform.engine, name)["model_version"]) == {bad}

    capsys.readouterr()
    assert main(["models", "rollback", name, "--reason", "v2 ranks users worse"]) == 0
    said = capsys.readouterr().out
    assert f"champion is now v{good}" in said and f"score set {good_set} of v{good}" in said

    client = lifecycle.mlflow_client(platform.settings)
    assert current_champion(platform.engine, name) == good == alias_version(client, name, CHAMPION)
    moves = [(r["action"], r["from_version"], r["to_version"]) for r in ledger(platform.engine, name)]
    assert moves == [("promote", None, good), ("promote", good, bad), ("rollback", bad, good)]
    assert ledger(platform.engine, name)[-1]["reason"] == "v2 ranks users worse"
    assert client.get_model_version(name, str(bad)).tags[GATE_TAG] == "rolled_back"
    assert published_score_set(platform.engine, name) == good_set
    assert score_set_status(platform.engine, bad_scored["score_set_id"]) == "superseded"
    current = read_current_scores(platform.engine, name)
    assert set(current["score_set_id"]) == {good_set} and set(current["model_version"]) == {good}
    uri = platform.settings.mlflow_tracking_uri
    assert load_approved(uri, name, warehouse=platform.engine).version == good
    with pytest.raises(UnapprovedModel):
        load_approved(uri, name, version=bad, warehouse=platform.engine)
    again = _score(platform, name, "after-rollback", now=3_000)
    assert (again["version"], again["published"]) == (good, True)


@contextmanager
def _when_scoring_reads_features(engine: Engine, move: Callable[[], None]) -> Iterator[threading.Event]:
    """Run ``move`` in a thread of its own when the scoring run first reads the feature store (it
    has resolved its champion and loaded the model by then), and hold the run at that statement
    until the move is done."""
    moved = threading.Event()
    errors: list[BaseException] = []

    def mover() -> None:
        try:
            move()
        except BaseException as exc:
            errors.append(exc)

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if moved.is_set() or "fs_" not in statement:
            return
        moved.set()
        thread = threading.Thread(target=mover, name="champion-mover")
        thread.start()
        thread.join(timeout=180)
        assert not thread.is_alive(), "the champion move did not finish"
        if errors:
            raise errors[0]

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield moved
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def _moved(ok: bool) -> None:
    assert ok, "the champion did not move"


@pytest.mark.parametrize("move", ["promotion", "rollback", "alias set in MLflow"])
def test_m4_m5_champion_moves_while_a_scoring_run_is_under_way(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, move: str
) -> None:
    """M4, M5: the champion moves after a scoring run has resolved its champion and loaded the model,
    before it reads its features: a promotion of another version (train-model), a rollback (M5: the
    run started before it and finishes after it), or @champion set by hand in MLflow. Every score of
    the run carries the one version it started with and is that version's prediction (not the
    other's). The run publishes only if that version is still the warehouse's champion: after a
    promotion or rollback it stays unpublished and consumers read the new champion's scores (the
    rolled-back-to version's latest set; none yet after a promotion); the MLflow-only move is
    ignored and reconciled."""
    name = _model(monkeypatch, LENIENT)
    first = _champion(platform, name, "strong")
    second, report = _candidate(platform, name, "stump")
    assert report.passed, report.reason
    restored_set = None
    scorer = make_engine(platform.settings.db_url)  # the scoring run's own engine, watched below
    mover_engine = make_engine(platform.settings.db_url)
    client = lifecycle.mlflow_client(platform.settings)
    actions: dict[str, Callable[[], None]] = {
        "promotion": lambda: _moved(_promote(platform, report, mover_engine)["promoted"]),
        "rollback": lambda: _moved(main(["models", "rollback", name, "--reason", "bad"]) == 0),
        "alias set in MLflow": lambda: client.set_registered_model_alias(name, CHAMPION, str(second)),
    }
    if move == "rollback":  # v1's scores published, then v2 promoted: the run scores with v2
        restored_set = _score(platform, name, "first", now=1_000)["score_set_id"]
        assert _promote(platform, report)["promoted"]
    started_with = second if move == "rollback" else first
    other = first if move == "rollback" else second
    assert current_champion(platform.engine, name) == started_with
    try:
        with _when_scoring_reads_features(scorer, actions[move]) as moved:
            run = _score(platform, name, "racing", now=2_000, engine=scorer)
        assert moved.is_set()
    finally:
        scorer.dispose()
        mover_engine.dispose()

    rows = _set_rows(platform.engine, run["score_set_id"])
    assert run["version"] == started_with and len(rows) == run["rows"] > 0
    assert set(rows["model_version"]) == {started_with}  # exactly one version in the run
    own, others = _predicted_by(platform, name, started_with), _predicted_by(platform, name, other)
    assert np.allclose(rows["score"], own[rows["entity_key"]].to_numpy())
    assert not np.allclose(rows["score"], others[rows["entity_key"]].to_numpy())

    now_champion = current_champion(platform.engine, name)
    if move == "alias set in MLflow":
        assert now_champion == started_with and run["published"]
        assert published_score_set(platform.engine, name) == run["score_set_id"]
        assert alias_version(client, name, CHAMPION) == other  # the hand-set alias, until reconciled
        assert resolve_champion(platform.engine, client, name) == started_with
        assert alias_version(client, name, CHAMPION) == started_with  # re-pointed
        return
    assert now_champion == other and not run["published"]
    assert f"champion is now v{other}" in run["publish_detail"]
    assert score_set_status(platform.engine, run["score_set_id"]) == "validated"  # kept, not lost
    assert published_score_set(platform.engine, name) == restored_set
    if restored_set is None:
        assert read_current_scores(platform.engine, name).empty
    else:
        state = publication(platform.engine, name)
        assert state is not None and (state["status"], state["model_version"]) == ("published", other)
        assert set(read_current_scores(platform.engine, name)["model_version"]) == {other}
