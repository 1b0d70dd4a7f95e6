"""Integrity that does not trust the store it protects (SQLite and PostgreSQL).

Promotion records each champion's artifact SHA-256, gate verdict and gate-report digest in the
warehouse's alias ledger; ``load_approved`` checks downloads against that record, never against
MLflow tags; registration refuses a logged model whose artifacts are incomplete.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow.sklearn
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, update

from tasks.gates import PromotionError, ledger, rollback
from tasks.gates.promotion import record_integrity
from tasks.registry import (
    IncompleteModel,
    MissingRecord,
    TamperedModel,
    UnapprovedModel,
    artifact_sha256,
    load_approved,
    model_versions,
    pull,
    register_candidate,
)
from tasks.registry.tags import GATE_TAG, SHA_TAG
from tasks.schema import alias_ledger
from tests.lifecycle.conftest import Store
from tests.lifecycle.helpers import log_tiny_model, promote_passing, training_data


def fresh_version(client: MlflowClient, store: Store, name: str, seed: int) -> tuple[int, str, Path]:
    """Log and register a model of its own (safe to tamper with); (version, sha256, artifact dir)."""
    run_id = log_tiny_model(store.uri, store.experiment_id, seed=seed)
    info = register_candidate(client, name, run_id, tags={"training_fingerprint": f"integrity-{seed}"})
    return info.version, info.sha256, Path(client.get_model_version_download_uri(name, str(info.version)))


def test_promotion_records_checksum_verdict_and_report_digest(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, sha1, _ = fresh_version(client, mlflow_store, model_name, seed=21)
    promote_passing(engine, client, model_name, v1, None)
    [row] = ledger(engine, model_name)
    assert row["model_sha256"] == sha1
    assert row["gate_verdict"] == "passed"
    assert row["report_sha256"] == hashlib.sha256(row["report"].encode("utf-8")).hexdigest()
    loaded = load_approved(mlflow_store.uri, model_name, warehouse=engine)
    assert (loaded.version, loaded.sha256, loaded.metadata["ledger_id"]) == (v1, sha1, row["id"])


def test_tampered_tags_are_not_trusted(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    """S6: someone with registry access rewrites the champion's checksum tag, and tags another
    version's gate verdict "passed" and points @champion at it: the consumer loader goes by the
    warehouse ledger's record, loads the recorded champion and refuses the tag-approved version."""
    v1, sha1, _ = fresh_version(client, mlflow_store, model_name, seed=22)
    v2, sha2, _ = fresh_version(client, mlflow_store, model_name, seed=23)
    promote_passing(engine, client, model_name, v1, None)
    # Someone with MLflow access rewrites the checksum tag of the champion: loads still verify
    # against the warehouse record and succeed.
    client.set_model_version_tag(model_name, str(v1), SHA_TAG, "0" * 64)
    assert load_approved(mlflow_store.uri, model_name, warehouse=engine).sha256 == sha1
    assert load_approved(mlflow_store.uri, model_name, version=v1, warehouse=engine).sha256 == sha1
    # ...and approves v2 by tag and alias: the warehouse still names v1, and v2 is not approved.
    client.set_model_version_tag(model_name, str(v2), GATE_TAG, "passed")
    client.set_registered_model_alias(model_name, "champion", str(v2))
    assert load_approved(mlflow_store.uri, model_name, warehouse=engine).version == v1
    with pytest.raises(UnapprovedModel, match=f"v{v2}: not approved"):
        load_approved(mlflow_store.uri, model_name, version=v2, warehouse=engine)
    assert sha2 != sha1


def test_tampered_artifact_is_refused_naming_both_digests(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str, tmp_path: Path
) -> None:
    """S6: the champion's artifact is replaced and its checksum tag rewritten to match: the loader
    checks the download against the warehouse ledger's record and refuses, naming both digests."""
    v1, sha1, location = fresh_version(client, mlflow_store, model_name, seed=24)
    promote_passing(engine, client, model_name, v1, None)
    # Overwrite the pickle under the artifact root with another valid model, and the tag to match.
    x, y = training_data(99)
    saved = tmp_path / "other"
    mlflow.sklearn.save_model(LogisticRegression().fit(x, y), str(saved), serialization_format="pickle")
    (location / "model.pkl").write_bytes((saved / "model.pkl").read_bytes())
    forged = artifact_sha256(location)
    client.set_model_version_tag(model_name, str(v1), SHA_TAG, forged)
    for call in (
        lambda: load_approved(mlflow_store.uri, model_name, warehouse=engine),
        lambda: load_approved(mlflow_store.uri, model_name, version=v1, warehouse=engine),
        lambda: pull(mlflow_store.uri, model_name, tmp_path / "served", warehouse=engine),
    ):
        with pytest.raises(TamperedModel) as refused:
            call()
        message = str(refused.value)
        assert model_name in message and f"v{v1}" in message
        assert forged in message and sha1 in message
    assert not (tmp_path / "served" / "model").exists()


def test_version_without_record_is_refused(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, sha1, _ = fresh_version(client, mlflow_store, model_name, seed=25)
    promote_passing(engine, client, model_name, v1, None)
    # A champion moved before integrity records existed: its ledger row carries no checksum.
    with engine.begin() as conn:
        conn.execute(
            update(alias_ledger)
            .where(alias_ledger.c.model_name == model_name)
            .values(model_sha256=None, gate_verdict=None, report_sha256=None)
        )
    with pytest.raises(MissingRecord) as refused:
        load_approved(mlflow_store.uri, model_name, warehouse=engine)
    message = str(refused.value)
    assert f"{model_name} v{v1}" in message and sha1 in message and "recorded sha256 none" in message
    # The one-off backfill attests the artifact against its registration checksum and records it.
    assert record_integrity(engine, client, model_name) == {v1: sha1}
    [row] = ledger(engine, model_name)
    assert (row["model_sha256"], row["gate_verdict"]) == (sha1, "passed")
    assert load_approved(mlflow_store.uri, model_name, warehouse=engine).sha256 == sha1
    assert record_integrity(engine, client, model_name) == {}  # nothing left to fill


def test_backfill_refuses_an_artifact_changed_since_registration(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, _, location = fresh_version(client, mlflow_store, model_name, seed=31)
    promote_passing(engine, client, model_name, v1, None)
    with engine.begin() as conn:
        conn.execute(
            update(alias_ledger).where(alias_ledger.c.model_name == model_name).values(model_sha256=None)
        )
    (location / "model.pkl").write_bytes(b"not a model")
    with pytest.raises(PromotionError, match="computed at registration"):
        record_integrity(engine, client, model_name)
    assert ledger(engine, model_name)[0]["model_sha256"] is None


def test_rollback_carries_the_restored_versions_record(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, sha1, _ = fresh_version(client, mlflow_store, model_name, seed=26)
    v2, sha2, _ = fresh_version(client, mlflow_store, model_name, seed=27)
    promote_passing(engine, client, model_name, v1, None)
    promote_passing(engine, client, model_name, v2, v1)
    assert rollback(engine, client, model_name, actor="test", reason="bad v2") == v1
    first, second, back = ledger(engine, model_name)
    assert (second["model_sha256"], back["action"]) == (sha2, "rollback")
    assert (back["model_sha256"], back["gate_verdict"], back["report_sha256"]) == (
        first["model_sha256"],
        first["gate_verdict"],
        first["report_sha256"],
    )
    assert load_approved(mlflow_store.uri, model_name, warehouse=engine).sha256 == sha1
    with pytest.raises(UnapprovedModel):  # the rolled-back version is no longer approved
        load_approved(mlflow_store.uri, model_name, version=v2, warehouse=engine)


def test_promotion_refuses_an_artifact_changed_since_registration(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1, _, location = fresh_version(client, mlflow_store, model_name, seed=28)
    (location / "extra.py").write_text("import os\n")
    with pytest.raises(PromotionError, match="computed at registration"):
        promote_passing(engine, client, model_name, v1, None)
    assert ledger(engine, model_name) == []


def test_incomplete_artifacts_are_never_registered(
    client: MlflowClient, mlflow_store: Store, model_name: str, tmp_path: Path
) -> None:
    # 1. A logged model whose pickle went missing from the artifact store.
    run_id = log_tiny_model(mlflow_store.uri, mlflow_store.experiment_id, seed=29)
    outputs = client.get_run(run_id).outputs
    assert outputs is not None
    [output] = outputs.model_outputs
    location = Path(client.get_logged_model(output.model_id).artifact_location)
    (location / "model.pkl").unlink()
    with pytest.raises(IncompleteModel, match=r"model\.pkl"):
        register_candidate(client, model_name, run_id, tags={})
    # 2. A logged model whose upload never finished (status PENDING), files and all.
    run = client.create_run(mlflow_store.experiment_id)
    pending = client.create_logged_model(
        mlflow_store.experiment_id, name="model", source_run_id=run.info.run_id
    )
    x, y = training_data(30)
    saved = tmp_path / "saved"
    mlflow.sklearn.save_model(LogisticRegression().fit(x, y), str(saved), serialization_format="pickle")
    client.log_model_artifacts(pending.model_id, str(saved))
    with pytest.raises(IncompleteModel, match="PENDING"):
        register_candidate(client, model_name, run.info.run_id, tags={})
    assert model_versions(client, model_name) == []
