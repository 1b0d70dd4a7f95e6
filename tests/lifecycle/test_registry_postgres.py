"""MLflow's tracking store and registry on PostgreSQL, the production store.

One PostgreSQL database per test module (``pg_store``, migrated by MLflow on first use, dropped
after) holds the runs and logged models of tiny real models. The project's own functions register
versions in it, promote them by compare-and-set, roll back and load the approved model; processes
registering versions of one model at the same moment end with every version there, numbered
distinctly, and no error; identical registrations racing leave one version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from sqlalchemy import Engine, create_engine, make_url, text

from tasks.gates import promote, rollback
from tasks.ops.doctor import check_mlflow
from tasks.registry import load_approved, register_candidate
from tasks.registry.consumer import show
from tasks.registry.register import model_versions
from tasks.registry.tags import CHALLENGER, CHAMPION, FINGERPRINT_TAG
from tasks.settings import get_settings
from tests.lifecycle.conftest import Store
from tests.lifecycle.helpers import passing_report, promote_passing, race_processes, training_data

PROCESSES = 4
EACH = 3


def test_the_store_is_postgresql(pg_store: Store) -> None:
    """The runs and logged models really live in the PostgreSQL database, not in a local file."""
    engine = create_engine(pg_store.uri)
    try:
        with engine.connect() as conn:
            ids = set(conn.execute(text("SELECT run_uuid FROM runs")).scalars())
    finally:
        engine.dispose()
    assert set(pg_store.runs.values()) <= ids


def test_doctor_checks_a_postgresql_store(pg_store: Store, tmp_path: Path) -> None:
    """`liveyield doctor` connects to a PostgreSQL tracking store instead of looking for a file."""
    env = {"LIVEYIELD_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": pg_store.uri}
    assert check_mlflow(get_settings(env)).ok
    down = make_url(pg_store.uri).set(port=1, password="secret", query={"connect_timeout": "2"})
    failed = check_mlflow(get_settings({**env, "MLFLOW_TRACKING_URI": down.render_as_string(False)}))
    assert not failed.ok and "cannot reach" in failed.detail
    assert "secret" not in failed.target + failed.detail


def test_register_promote_roll_back_and_load_on_postgresql(
    engine: Engine, pg_store: Store, model_name: str
) -> None:
    client = MlflowClient(tracking_uri=pg_store.uri)
    a = register_candidate(client, model_name, pg_store.runs["a"], tags={FINGERPRINT_TAG: "fa"})
    again = register_candidate(client, model_name, pg_store.runs["a"], tags={FINGERPRINT_TAG: "fa"})
    b = register_candidate(client, model_name, pg_store.runs["b"], tags={FINGERPRINT_TAG: "fb"})
    assert (a.version, b.version) == (1, 2) and a.created and b.created
    assert again.version == a.version and not again.created  # found by a tag search on PostgreSQL
    assert int(client.get_model_version_by_alias(model_name, CHALLENGER).version) == b.version

    promote_passing(engine, client, model_name, a.version, None, created_ts=1)
    loaded = load_approved(pg_store.uri, model_name, warehouse=engine)
    assert (loaded.version, loaded.sha256) == (a.version, a.sha256)
    x, _ = training_data(1)
    assert loaded.model.predict_proba(x).shape == (len(x), 2)

    promote_passing(engine, client, model_name, b.version, a.version, created_ts=2)
    assert load_approved(pg_store.uri, model_name, warehouse=engine).version == b.version
    assert int(client.get_model_version_by_alias(model_name, CHAMPION).version) == b.version
    stale = promote(
        engine,
        client,
        model_name,
        candidate_version=a.version,
        expected_champion=a.version,  # the champion moved since: compare-and-set refuses
        report=passing_report(model_name, a.version, a.version),
        actor="test",
        flow_run_id=None,
        reason="stale",
    )
    assert stale.lost_race and stale.current_champion == b.version

    assert rollback(engine, client, model_name, actor="test", reason="b is wrong") == a.version
    assert load_approved(pg_store.uri, model_name, warehouse=engine).version == a.version
    shown = show(pg_store.uri, model_name)
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["aliases"][CHAMPION] == a.version


def _register(uri: str, name: str, run_id: str, prefix: str, count: int, start: Any, out: str) -> None:
    """A registrant process: wait for the others, then register ``count`` versions of one model."""
    from tasks.settings import apply_process_defaults

    apply_process_defaults()
    client = MlflowClient(tracking_uri=uri)
    client.search_registered_models(max_results=1)  # connect before the start line
    start.wait(timeout=300)
    began = time.monotonic()
    done: list[dict[str, Any]] = []
    errors: list[str] = []
    for i in range(count):
        fingerprint = f"{prefix}-{i}"
        try:
            info = register_candidate(client, name, run_id, tags={FINGERPRINT_TAG: fingerprint})
            done.append({"version": info.version, "fingerprint": fingerprint, "created": info.created})
        except Exception as exc:  # reported to the test, which expects none
            errors.append(f"{type(exc).__name__}: {exc}"[:500])
    span = [began, time.monotonic()]  # the same clock in every process
    Path(out).write_text(json.dumps({"done": done, "errors": errors, "span": span}))


def _race(store: Store, name: str, prefixes: list[str], count: int, folder: Path) -> list[dict[str, Any]]:
    """Run one registrant process per prefix, started together; their results."""
    jobs = [(store.uri, name, store.runs["a"], prefix, count) for prefix in prefixes]
    return race_processes(_register, jobs, folder, preload=["mlflow", "tasks.registry"])


def test_concurrent_registrations_get_distinct_versions(
    pg_store: Store, model_name: str, tmp_path: Path
) -> None:
    results = _race(pg_store, model_name, [f"p{i}" for i in range(PROCESSES)], EACH, tmp_path)
    assert [r["errors"] for r in results] == [[]] * PROCESSES
    done = [d for r in results for d in r["done"]]
    numbers = [d["version"] for d in done]
    assert len(done) == PROCESSES * EACH and all(d["created"] for d in done)
    assert sorted(numbers) == list(range(1, PROCESSES * EACH + 1))  # distinct, no gaps
    # They really raced: every registrant was still registering when the last one began.
    assert max(r["span"][0] for r in results) < min(r["span"][1] for r in results)
    client = MlflowClient(tracking_uri=pg_store.uri)
    stored = {int(mv.version): mv.tags[FINGERPRINT_TAG] for mv in model_versions(client, model_name)}
    assert stored == {d["version"]: d["fingerprint"] for d in done}  # each version is who made it


def test_identical_registrations_racing_leave_one_version(
    pg_store: Store, model_name: str, tmp_path: Path
) -> None:
    results = _race(pg_store, model_name, ["same"] * PROCESSES, 1, tmp_path)
    assert [r["errors"] for r in results] == [[]] * PROCESSES
    done = [d for r in results for d in r["done"]]
    assert {d["version"] for d in done} == {1} and sum(d["created"] for d in done) == 1
    client = MlflowClient(tracking_uri=pg_store.uri)
    assert [int(mv.version) for mv in model_versions(client, model_name)] == [1]
    assert int(client.get_model_version_by_alias(model_name, CHALLENGER).version) == 1
