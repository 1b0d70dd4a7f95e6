"""Compare-and-set promotion, the alias ledger, rollback and reconcile (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine, select

from tasks.gates import (
    NoChampion,
    NothingToRollBack,
    PromotionError,
    PromotionResult,
    current_champion,
    evaluate_gate,
    ledger,
    promote,
    reconcile_alias,
    record_gate_verdict,
    resolve_champion,
    rollback,
)
from tasks.models.spec import ChangeThreshold, PromotionPolicy, ValueThreshold
from tasks.registry import UnapprovedModel, load_approved
from tasks.registry.tags import CHAMPION, SHA_TAG
from tasks.registry.writes import alias_version
from tasks.schema import model_champions
from tests.lifecycle.conftest import Store
from tests.lifecycle.helpers import ev, passing_report, race_processes, versions

POLICY = PromotionPolicy(
    value_thresholds=(ValueThreshold("auc", lower=0.6),),
    change_thresholds=(ChangeThreshold("auc", slack=0.0),),
    beat_baseline=("auc",),
)


def alias(client: MlflowClient, name: str) -> int | None:
    value = client.get_registered_model(name).aliases.get("champion")
    return None if value is None else int(value)


def do_promote(
    engine: Engine, client: MlflowClient, name: str, version: int, expected: int | None, ts: int
) -> PromotionResult:
    return promote(
        engine,
        client,
        name,
        candidate_version=version,
        expected_champion=expected,
        report=passing_report(name, version, expected),
        actor="test",
        flow_run_id=f"flow-{version}",
        reason=f"promote v{version}",
        created_ts=ts,
    )


def test_first_promotion_then_compare_and_set(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, v2, v3 = versions(client, mlflow_store, model_name, 3)
    assert current_champion(engine, model_name) is None
    with pytest.raises(NoChampion):
        resolve_champion(engine, client, model_name)
    first = do_promote(engine, client, model_name, v1, None, 100)
    assert first.promoted and first.alias_moved and first.from_version is None
    assert current_champion(engine, model_name) == v1 == alias(client, model_name)
    assert client.get_model_version(model_name, str(v1)).tags["gate"] == "passed"
    # A stale expectation (the gate compared against "no champion") loses and writes nothing.
    stale = do_promote(engine, client, model_name, v2, None, 101)
    assert (stale.promoted, stale.lost_race, stale.current_champion) == (False, True, v1)
    assert len(ledger(engine, model_name)) == 1 and alias(client, model_name) == v1
    second = do_promote(engine, client, model_name, v3, v1, 102)
    assert second.promoted and resolve_champion(engine, client, model_name) == v3
    rows = ledger(engine, model_name)
    assert [(r["from_version"], r["to_version"], r["action"], r["created_ts"]) for r in rows] == [
        (None, v1, "promote", 100),
        (v1, v3, "promote", 102),
    ]
    assert json.loads(rows[1]["report"])["candidate_version"] == v3
    assert rows[1]["actor"] == "test" and rows[1]["flow_run_id"] == f"flow-{v3}"


def test_m1_failed_gate_is_not_promoted_and_reason_recorded(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, v2 = versions(client, mlflow_store, model_name, 2)
    do_promote(engine, client, model_name, v1, None, 1)
    report = evaluate_gate(
        POLICY,
        candidate=ev(auc=0.65),
        champion=ev(auc=0.70),
        baseline=ev(auc=0.5),
        deltas={},
        data_validated=True,
        model=model_name,
        candidate_version=v2,
        champion_version=v1,
    )
    record_gate_verdict(client, report)
    with pytest.raises(PromotionError, match="gate failed"):
        promote(
            engine,
            client,
            model_name,
            candidate_version=v2,
            expected_champion=v1,
            report=report,
            actor="test",
            flow_run_id=None,
            reason="nope",
        )
    tags = client.get_model_version(model_name, str(v2)).tags
    assert tags["gate_verdict"] == "failed" and "change_threshold" in tags["gate_reason"]
    assert json.loads(tags["gate_report"])["passed"] is False
    assert current_champion(engine, model_name) == v1 == alias(client, model_name)
    assert len(ledger(engine, model_name)) == 1
    with pytest.raises(UnapprovedModel):  # never approved, so not loadable pinned either
        load_approved(mlflow_store.uri, model_name, version=v2, warehouse=engine)


def test_report_must_match_the_promotion(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, v2 = versions(client, mlflow_store, model_name, 2)
    with pytest.raises(PromotionError, match="compared against"):
        promote(
            engine,
            client,
            model_name,
            candidate_version=v1,
            expected_champion=None,
            report=passing_report(model_name, v1, v2),
            actor="t",
            flow_run_id=None,
            reason="r",
        )
    with pytest.raises(PromotionError, match="judged"):
        promote(
            engine,
            client,
            model_name,
            candidate_version=v1,
            expected_champion=None,
            report=passing_report(model_name, v2, None),
            actor="t",
            flow_run_id=None,
            reason="r",
        )


def test_m3_racing_promotions(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    racers = 4
    pool = versions(client, mlflow_store, model_name, 3 * racers)
    champion: int | None = None
    winners: list[int] = []
    for round_ in range(3):
        candidates = pool[round_ * racers : (round_ + 1) * racers]
        barrier = threading.Barrier(racers)
        results: dict[int, Any] = {}

        def race(
            version: int,
            expected: int | None = champion,
            results: dict[int, Any] = results,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            try:
                results[version] = do_promote(engine, client, model_name, version, expected, 1000 + version)
            except Exception as exc:  # any error (e.g. "database is locked") fails the test
                results[version] = exc

        threads = [threading.Thread(target=race, args=(v,)) for v in candidates]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        errors = [r for r in results.values() if isinstance(r, BaseException)]
        assert not errors, errors
        won = [v for v, r in results.items() if r.promoted]
        assert len(won) == 1, results
        lost = [r for r in results.values() if not r.promoted]
        assert all(r.lost_race and r.current_champion == won[0] for r in lost)
        champion = won[0]
        winners.append(champion)
    rows = ledger(engine, model_name)
    assert [r["to_version"] for r in rows] == winners
    assert [r["from_version"] for r in rows] == [None, *winners[:-1]]  # each from = previous to
    assert current_champion(engine, model_name) == winners[-1]
    assert reconcile_alias(engine, client, model_name) == winners[-1] == alias(client, model_name)
    assert client.get_model_version(model_name, str(winners[-1])).tags["gate"] == "passed"


def test_m4_rollback_is_one_call(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, v2, v3 = versions(client, mlflow_store, model_name, 3)
    with pytest.raises(NothingToRollBack):
        rollback(engine, client, model_name, actor="oncall", reason="no champion yet")
    do_promote(engine, client, model_name, v1, None, 1)
    with pytest.raises(NothingToRollBack, match="first champion"):
        rollback(engine, client, model_name, actor="oncall", reason="nothing before v1")
    do_promote(engine, client, model_name, v2, v1, 2)
    do_promote(engine, client, model_name, v3, v2, 3)
    assert rollback(engine, client, model_name, actor="oncall", reason="v3 is bad", created_ts=4) == v2
    assert current_champion(engine, model_name) == v2 == alias(client, model_name)
    last = ledger(engine, model_name)[-1]
    assert (last["action"], last["from_version"], last["to_version"], last["actor"], last["reason"]) == (
        "rollback",
        v3,
        v2,
        "oncall",
        "v3 is bad",
    )
    assert client.get_model_version(model_name, str(v3)).tags["gate"] == "rolled_back"
    with pytest.raises(UnapprovedModel):
        load_approved(mlflow_store.uri, model_name, version=v3, warehouse=engine)
    assert load_approved(mlflow_store.uri, model_name, warehouse=engine).version == v2
    # Rollbacks pop the history: v2 -> v1, then nothing is left.
    assert rollback(engine, client, model_name, actor="oncall", reason="v2 too") == v1
    with pytest.raises(NothingToRollBack):
        rollback(engine, client, model_name, actor="oncall", reason="again")
    # After a rollback the gate compares against the restored champion.
    assert do_promote(engine, client, model_name, v3, v1, 9).promoted


def test_reconcile_repairs_the_alias_from_the_database(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, v2 = versions(client, mlflow_store, model_name, 2)
    client.set_registered_model_alias(model_name, "champion", str(v2))  # set behind the ledger's back
    assert reconcile_alias(engine, client, model_name) is None
    assert alias(client, model_name) is None
    do_promote(engine, client, model_name, v1, None, 1)
    client.set_registered_model_alias(model_name, "champion", str(v2))  # a slow writer's stale move
    assert resolve_champion(engine, client, model_name) == v1 == alias(client, model_name)


def test_m4_alias_moves_during_scoring_run(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    """M4 with scoring done by hand; through lifecycle.score: tests/lifecycle/test_platform_gate.py."""
    import numpy as np
    import pandas as pd

    from tasks.scoring import publish, read_current_scores, validate_score_set, write_score_set

    v1, v2 = versions(client, mlflow_store, model_name, 2)
    do_promote(engine, client, model_name, v1, None, 1)
    version = resolve_champion(engine, client, model_name)  # once, at the start of the run
    approved = load_approved(mlflow_store.uri, model_name, version=version, warehouse=engine)
    x = np.random.default_rng(0).normal(size=(40, 3))
    first = approved.model.predict_proba(x[:20])[:, 1]
    do_promote(engine, client, model_name, v2, v1, 2)  # the alias moves mid-run
    assert alias(client, model_name) == v2
    second = approved.model.predict_proba(x[20:])[:, 1]
    frame = pd.DataFrame(
        {"entity_key": [f"u{i}" for i in range(40)], "score": np.concatenate([first, second])}
    )
    set_id = write_score_set(
        engine, model=model_name, version=version, as_of=10, run_id="r1", frame=frame, created_ts=10
    )
    validate_score_set(engine, set_id, (0.0, 1.0))
    # The whole set was scored with v1, but v2 is champion now: compare-and-set keeps it unpublished.
    result = publish(engine, model_name, set_id, published_ts=11)
    assert not result.published and f"champion is now v{v2}" in result.reason
    assert read_current_scores(engine, model_name).empty


def test_checksum_tag_rewritten_after_promotion_is_not_trusted(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    """S6: a rewritten checksum tag changes nothing: loads check the warehouse ledger's record."""
    (v1,) = versions(client, mlflow_store, model_name, 1)
    do_promote(engine, client, model_name, v1, None, 1)
    recorded = ledger(engine, model_name)[0]["model_sha256"]
    client.set_model_version_tag(model_name, str(v1), SHA_TAG, "0" * 64)  # the tag now disagrees
    # The artifact is checked against the warehouse's record, so a rewritten tag changes nothing.
    assert load_approved(mlflow_store.uri, model_name, warehouse=engine).sha256 == recorded != "0" * 64


def _promote_racer(
    warehouse_url: str, uri: str, name: str, report: dict[str, Any], start: Any, out: str
) -> None:
    """A promoting process: judge-and-promote one version like train-model's last steps, started
    together with the others; writes what happened and every warning or error it logged."""
    from tasks.db import make_engine
    from tasks.gates import GateReport
    from tasks.settings import apply_process_defaults

    apply_process_defaults()
    logged: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(f"{record.levelname} {record.name}: {record.getMessage()}")
            if record.exc_info and record.exc_info[1] is not None:
                logged.append(repr(record.exc_info[1]))

    logging.getLogger().addHandler(Keep(logging.WARNING))
    gate = GateReport.from_dict(report)
    version = gate.candidate_version
    assert version is not None
    engine = make_engine(warehouse_url)
    client = MlflowClient(tracking_uri=uri)
    current_champion(engine, name)  # connect to both stores before the start line
    client.get_registered_model(name)
    start.wait(timeout=300)
    began = time.monotonic()
    outcome: dict[str, Any]
    try:
        record_gate_verdict(client, gate)  # what the gate step records, passed or failed
        result = promote(
            engine,
            client,
            name,
            candidate_version=version,
            expected_champion=gate.champion_version,
            report=gate,
            actor="racer",
            flow_run_id=f"racer-{version}",
            reason=f"race v{version}",
        )
        outcome = {
            "promoted": result.promoted,
            "lost_race": result.lost_race,
            "current": result.current_champion,
            "alias_moved": result.alias_moved,
        }
    except PromotionError as exc:
        outcome = {"refused": str(exc)}
    except Exception as exc:  # e.g. "database is locked" or a unique violation: fails the test
        outcome = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    finally:
        engine.dispose()
    outcome |= {"version": version, "logged": logged, "span": [began, time.monotonic()]}
    Path(out).write_text(json.dumps(outcome))


@pytest.fixture
def race_store(db_url: str, request: pytest.FixtureRequest) -> Store:
    """The tracking store beside the warehouse: SQLite with SQLite, PostgreSQL with PostgreSQL."""
    return request.getfixturevalue("mlflow_store" if db_url.startswith("sqlite") else "pg_store")


def test_m3_racing_promotion_processes_with_a_failing_gate(
    engine: Engine, db_url: str, race_store: Store, model_name: str, tmp_path: Path
) -> None:
    """M3 as separate processes: each round, racers promote different versions of one model at once,
    one of them carrying a failed gate. The failed one is refused and never champion; exactly one
    passing racer wins and the others lose the compare-and-set; the ledger holds one move per round,
    chained, and the champion row and MLflow's @champion agree with it; nothing logs an error."""
    racers, rounds = 4, 2  # round 1 inserts the champion row, round 2 updates it
    client = MlflowClient(tracking_uri=race_store.uri)
    pool = versions(client, race_store, model_name, racers * rounds)
    champion: int | None = None
    winners: list[int] = []
    for round_ in range(rounds):
        candidates = pool[round_ * racers : (round_ + 1) * racers]
        failing, passing = candidates[0], candidates[1:]
        failed_gate = evaluate_gate(
            POLICY,
            candidate=ev(auc=0.55),  # under the value threshold (0.6)
            champion=None if champion is None else ev(auc=0.7),
            baseline=ev(auc=0.5),
            deltas={},
            data_validated=True,
            model=model_name,
            candidate_version=failing,
            champion_version=champion,
        )
        assert not failed_gate.passed
        reports = [failed_gate.to_dict()] + [
            passing_report(model_name, v, champion).to_dict() for v in passing
        ]
        jobs = [(db_url, race_store.uri, model_name, report) for report in reports]
        results = race_processes(
            _promote_racer, jobs, tmp_path / f"round-{round_}", preload=["mlflow", "tasks.gates"]
        )
        by_version = {r["version"]: r for r in results}
        assert [r.get("error") for r in results] == [None] * racers, results
        noise = [line for r in results for line in r["logged"]]
        assert not [line for line in noise if line.startswith(("ERROR", "CRITICAL"))], noise
        assert not [line for line in noise if "locked" in line or "unique" in line.lower()], noise
        # They really raced: every racer was still in promote when the last one began.
        assert max(r["span"][0] for r in results) < min(r["span"][1] for r in results)

        refused = by_version[failing]
        assert "gate failed" in refused.get("refused", ""), refused
        won = [v for v in passing if by_version[v].get("promoted")]
        assert len(won) == 1, results
        winner = won[0]
        assert by_version[winner]["alias_moved"]
        for v in passing:
            if v != winner:
                assert by_version[v]["lost_race"] and by_version[v]["current"] == winner, by_version[v]
        tags = client.get_model_version(model_name, str(failing)).tags
        assert tags["gate_verdict"] == "failed" and "value_threshold" in tags["gate_reason"]
        assert tags.get("gate") != "passed"
        champion = winner
        winners.append(winner)

        rows = ledger(engine, model_name)
        assert [r["to_version"] for r in rows] == winners  # one move per round, none lost
        assert [r["from_version"] for r in rows] == [None, *winners[:-1]]
        assert all(r["gate_verdict"] == "passed" and r["model_sha256"] for r in rows)
        with engine.connect() as conn:
            held = conn.execute(
                select(model_champions.c.version, model_champions.c.ledger_id).where(
                    model_champions.c.model_name == model_name
                )
            ).one()
        assert (held.version, held.ledger_id) == (winner, rows[-1]["id"])
        # Without a reconcile: the alias the winner moved already agrees with the database.
        assert alias_version(client, model_name, CHAMPION) == winner == current_champion(engine, model_name)

    failed_versions = {pool[r * racers] for r in range(rounds)}
    assert not failed_versions & {r["to_version"] for r in ledger(engine, model_name)}
    for version in failed_versions:
        with pytest.raises(UnapprovedModel):  # never approved, so not loadable pinned either
            load_approved(race_store.uri, model_name, version=version, warehouse=engine)
