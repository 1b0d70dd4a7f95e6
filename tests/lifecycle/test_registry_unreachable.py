"""The registry unreachable while a candidate is registered (testplan R8).

The model is logged in a real tracking store; only the registration step meets a registry at
a closed port (no retries inside the HTTP client, a short timeout). Registration must fail fast
with one clear line and leave no model version behind, least of all one without artifacts.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tasks.errors import user_facing
from tasks.registry import register_candidate
from tasks.registry.register import check_complete
from tests.lifecycle.conftest import Store

if TYPE_CHECKING:
    from mlflow import MlflowClient

LINEAGE = {"training_fingerprint": "fp-unreachable", "code_version": "test"}


@pytest.fixture
def closed_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of a port nothing listens on, with MLflow's HTTP client set not to retry."""
    with socket.socket() as probe:  # a port just freed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    yield f"http://127.0.0.1:{port}"


def _versions(client: MlflowClient, name: str) -> list[object]:
    return list(client.search_model_versions(f"name='{name}'"))


def _all_versions_have_artifacts(client: MlflowClient, tmp_path: Path) -> None:
    import mlflow

    for mv in client.search_model_versions():
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=str(mv.source),
            dst_path=str(tmp_path / f"{mv.name}-{mv.version}"),
            tracking_uri=client.tracking_uri,
        )
        check_complete(Path(local), f"{mv.name} v{mv.version}")


def test_registry_unreachable_at_registration_fails_fast_and_registers_nothing(
    client: MlflowClient, mlflow_store: Store, model_name: str, closed_registry: str, tmp_path: Path
) -> None:
    """R8: tracking store up, registry down: one clear MLflow line within seconds, no version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    unreachable = MlflowClient(tracking_uri=mlflow_store.uri, registry_uri=closed_registry)
    started = time.monotonic()
    with pytest.raises(MlflowException) as caught:
        register_candidate(unreachable, model_name, mlflow_store.runs["a"], tags=LINEAGE)
    elapsed = time.monotonic() - started
    message = user_facing(caught.value)
    print(f"registration against an unreachable registry failed in {elapsed:.2f} s: {message}")
    assert elapsed < 30, elapsed
    assert message is not None and "\n" not in message, message
    assert message.startswith("MLflow error:") and "MLFLOW_TRACKING_URI" in message, message
    assert _versions(client, model_name) == []
    assert client.search_registered_models(f"name='{model_name}'") == []
    _all_versions_have_artifacts(client, tmp_path)

    # The registry back: the same run registers normally, as version 1.
    info = register_candidate(client, model_name, mlflow_store.runs["a"], tags=LINEAGE)
    assert (info.version, info.created) == (1, True)
    assert len(_versions(client, model_name)) == 1


@pytest.mark.usefixtures("prefect_harness")
def test_the_register_task_fails_fast_when_the_store_is_unreachable(
    client: MlflowClient,
    mlflow_store: Store,
    closed_registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R8: the pipeline's register task (with its Prefect retries) fails within seconds, registers nothing."""
    from mlflow.exceptions import MlflowException
    from prefect import flow

    from tasks import steps
    from tasks.models.catalog import get_spec

    name = get_spec("ad_ctr").name
    before = len(_versions(client, name))
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_registry)

    @flow(name="register-unreachable")
    def register_only(run_id: str) -> dict[str, object]:
        return steps.register_candidate("ad_ctr", run_id)

    started = time.monotonic()
    with pytest.raises(MlflowException) as caught:
        register_only(mlflow_store.runs["b"])
    elapsed = time.monotonic() - started
    message = user_facing(caught.value)
    print(f"the register task against an unreachable store failed in {elapsed:.2f} s")
    assert elapsed < 30, elapsed
    assert message is not None and message.startswith("MLflow error:") and "Connection refused" in message
    assert len(_versions(client, name)) == before
    _all_versions_have_artifacts(client, tmp_path)
