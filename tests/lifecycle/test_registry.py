"""Registration (lineage tags, checksum, R5 de-duplication) and the consumer loader (S2)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine

from tasks.gates import current_champion
from tasks.registry import (
    CHALLENGER,
    TamperedModel,
    UnapprovedModel,
    artifact_sha256,
    list_models,
    load_approved,
    pull,
    register_candidate,
    show,
)
from tests.lifecycle.conftest import Store
from tests.lifecycle.helpers import (
    Payload,
    log_runs_layout_model,
    log_tiny_model,
    promote_passing,
    training_data,
)

LINEAGE = {
    "training_fingerprint": "tf-1",
    "holdout_fingerprint": "hf-1",
    "feature_versions": "user_activity:abc123",
    "validation_run_ids": "r1,r2",
    "code_version": "deadbeef",
    "flow_run_id": "flow-1",
}


def approve(engine: Engine, client: MlflowClient, name: str, version: int) -> None:
    """Promote the version in the warehouse (tested in test_promotion and test_integrity)."""
    promote_passing(engine, client, name, version, current_champion(engine, name))


def test_register_records_lineage_checksum_and_challenger(
    client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    info = register_candidate(client, model_name, mlflow_store.runs["a"], tags=LINEAGE)
    assert info.created and info.version == 1 and info.model_id and info.model_id.startswith("m-")
    mv = client.get_model_version(model_name, "1")
    assert {k: mv.tags[k] for k in LINEAGE} == LINEAGE
    assert mv.tags["model_sha256"] == info.sha256 and len(info.sha256) == 64
    # The checksum covers the files consumers will download.
    location = Path(client.get_model_version_download_uri(model_name, "1"))
    assert artifact_sha256(location) == info.sha256
    assert client.get_registered_model(model_name).aliases == {CHALLENGER: 1}


def test_r5_same_fingerprint_and_model_gives_no_second_version(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    first = register_candidate(client, model_name, mlflow_store.runs["a"], tags=LINEAGE)
    approve(engine, client, model_name, first.version)
    again = register_candidate(client, model_name, mlflow_store.runs["a"], tags=LINEAGE)  # same run twice
    # A second training run on identical data and params: same content, new run ids in MLmodel.
    retrained = register_candidate(client, model_name, mlflow_store.runs["a_again"], tags=LINEAGE)
    assert (again.version, again.created) == (first.version, False)
    assert (retrained.version, retrained.created) == (first.version, False)
    assert retrained.sha256 == first.sha256
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
    assert client.get_registered_model(model_name).aliases == {"champion": 1, CHALLENGER: 1}
    # Different data (another fingerprint) is a new version and becomes the challenger.
    other = register_candidate(
        client, model_name, mlflow_store.runs["b"], tags={**LINEAGE, "training_fingerprint": "tf-2"}
    )
    assert other.created and other.version == 2
    assert client.get_registered_model(model_name).aliases == {"champion": 1, CHALLENGER: 2}


def test_r5_holds_for_the_skops_format(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    first = register_candidate(client, model_name, mlflow_store.runs["skops"], tags=LINEAGE)
    again = register_candidate(client, model_name, mlflow_store.runs["skops_again"], tags=LINEAGE)
    assert (again.version, again.created) == (first.version, False)
    approve(engine, client, model_name, first.version)
    assert load_approved(mlflow_store.uri, model_name, warehouse=engine).model.coef_.shape == (1, 3)


def test_runs_layout_is_registered_too(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str, tmp_path: Path
) -> None:
    run_id = log_runs_layout_model(mlflow_store.uri, mlflow_store.experiment_id, tmp_path, seed=3)
    info = register_candidate(client, model_name, run_id, tags={})
    assert info.model_id is None and info.created
    approve(engine, client, model_name, info.version)
    assert load_approved(mlflow_store.uri, model_name, warehouse=engine).sha256 == info.sha256


def test_load_approved_champion_and_pinned(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    v1 = register_candidate(client, model_name, mlflow_store.runs["a"], tags=LINEAGE)
    with pytest.raises(UnapprovedModel, match="no champion"):
        load_approved(mlflow_store.uri, model_name, warehouse=engine)
    with pytest.raises(UnapprovedModel, match="not approved"):
        load_approved(mlflow_store.uri, model_name, version=1, warehouse=engine)
    approve(engine, client, model_name, v1.version)
    loaded = load_approved(mlflow_store.uri, model_name, warehouse=engine)
    assert (loaded.version, loaded.sha256) == (1, v1.sha256)
    assert loaded.tags["training_fingerprint"] == "tf-1"
    assert loaded.metadata["run_id"] == mlflow_store.runs["a"]
    x, _ = training_data(1)
    assert loaded.model.predict_proba(x).shape == (60, 2)
    pinned = load_approved(mlflow_store.uri, model_name, version=1, warehouse=engine)
    assert np.allclose(pinned.model.coef_, loaded.model.coef_)


def test_pull_writes_verified_copy_and_metadata(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str, tmp_path: Path
) -> None:
    info = register_candidate(client, model_name, mlflow_store.runs["b"], tags=LINEAGE)
    approve(engine, client, model_name, info.version)
    dest = pull(mlflow_store.uri, model_name, tmp_path / "served", warehouse=engine)
    assert artifact_sha256(dest / "model") == info.sha256
    meta = json.loads((dest / "metadata.json").read_text())
    assert (meta["name"], meta["version"], meta["sha256"]) == (model_name, 1, info.sha256)
    # A second pull replaces the copy.
    pull(mlflow_store.uri, model_name, tmp_path / "served", warehouse=engine)
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == ["metadata.json", "model"]


def test_list_and_show(client: MlflowClient, mlflow_store: Store, model_name: str) -> None:
    info = register_candidate(client, model_name, mlflow_store.runs["a"], tags=LINEAGE)
    client.set_model_version_tag(model_name, "1", "gate_verdict", "failed")
    client.set_model_version_tag(model_name, "1", "gate_reason", "auc below 0.7")
    listed = {m["name"]: m for m in list_models(mlflow_store.uri)}
    assert listed[model_name]["aliases"] == {CHALLENGER: info.version}
    shown = show(mlflow_store.uri, model_name)
    assert shown["versions"][0]["tags"]["model_sha256"] == info.sha256
    assert shown["versions"][0]["aliases"] == [CHALLENGER]
    assert shown["latest_gate_verdict"] == {"version": 1, "verdict": "failed", "reason": "auc below 0.7"}


def _registered_pickle_model(client: MlflowClient, store: Store, name: str, seed: int) -> tuple[int, Path]:
    run_id = log_tiny_model(store.uri, store.experiment_id, seed=seed)
    info = register_candidate(client, name, run_id, tags={"training_fingerprint": f"s2-{seed}"})
    location = Path(client.get_model_version_download_uri(name, str(info.version)))
    assert (location / "model.pkl").exists()
    return info.version, location


def test_s2_tampered_artifact_is_refused_and_payload_never_runs(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str, tmp_path: Path
) -> None:
    version, location = _registered_pickle_model(client, mlflow_store, model_name, seed=11)
    approve(engine, client, model_name, version)
    marker = tmp_path / "pwned"
    # An attacker with write access to the artifact store swaps the pickle for a payload.
    (location / "model.pkl").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(TamperedModel, match="does not match"):
        load_approved(mlflow_store.uri, model_name, warehouse=engine)
    with pytest.raises(TamperedModel):
        load_approved(mlflow_store.uri, model_name, version=version, warehouse=engine)
    with pytest.raises(TamperedModel):
        pull(mlflow_store.uri, model_name, tmp_path / "served", warehouse=engine)
    assert not marker.exists()
    assert not (tmp_path / "served" / "model").exists()
    # Sanity check of the payload itself: unpickled, it does run.
    pickle.loads((location / "model.pkl").read_bytes())
    assert marker.exists()


def test_s2_payload_registered_as_is_is_never_approved(
    engine: Engine, client: MlflowClient, mlflow_store: Store, model_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    version, location = _registered_pickle_model(client, mlflow_store, model_name, seed=12)
    (location / "model.pkl").write_bytes(pickle.dumps(Payload(str(marker))))
    # Even with a matching checksum (recorded over the payload), an unapproved version is refused.
    client.set_model_version_tag(model_name, str(version), "model_sha256", artifact_sha256(location))
    with pytest.raises(UnapprovedModel):
        load_approved(mlflow_store.uri, model_name, version=version, warehouse=engine)
    with pytest.raises(UnapprovedModel):
        load_approved(mlflow_store.uri, model_name, warehouse=engine)
    # An extra file slipped into the artifact directory also breaks the checksum.
    approve(engine, client, model_name, version)
    (location / "extra.py").write_text("import os\n")
    with pytest.raises(TamperedModel):
        load_approved(mlflow_store.uri, model_name, warehouse=engine)
    assert not marker.exists()


def test_r5_concurrent_identical_registrations_converge(
    client: MlflowClient, mlflow_store: Store, model_name: str
) -> None:
    import threading

    barrier = threading.Barrier(3)
    results: list[object] = []

    def register() -> None:
        barrier.wait()
        try:
            results.append(
                register_candidate(client, model_name, mlflow_store.runs["b"], tags=LINEAGE).version
            )
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=register) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [1, 1, 1]
    assert [int(mv.version) for mv in client.search_model_versions(f"name = '{model_name}'")] == [1]
