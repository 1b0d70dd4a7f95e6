"""One MLflow tracking store (SQLite, artifacts in a temp dir) per test session, with a few tiny
models logged once; every test registers them under a registered-model name of its own. A module
that needs the production store asks for ``pg_store``: a PostgreSQL database of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.conftest import PG_URL
from tests.lifecycle.helpers import log_tiny_model

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class Store:
    """A tracking store and the runs logged in it."""

    uri: str
    root: Path
    experiment_id: str
    runs: dict[str, str]  # label -> run id


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A SQLite tracking store with artifacts under tmp; runs a, b (different data), a_again (= a), and
    skops/skops_again (the same model saved twice in the skops format)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("lifecycle", artifact_location=str(root / "artifacts"))
    runs = {
        "a": log_tiny_model(uri, experiment_id, seed=1),
        "b": log_tiny_model(uri, experiment_id, seed=2),
        "a_again": log_tiny_model(uri, experiment_id, seed=1),
        "skops": log_tiny_model(uri, experiment_id, seed=1, fmt="skops"),  # MLflow 3's default format
        "skops_again": log_tiny_model(uri, experiment_id, seed=1, fmt="skops"),
    }
    return Store(uri, root, experiment_id, runs)


@pytest.fixture(scope="module")
def pg_store(tmp_path_factory: pytest.TempPathFactory, pg_available: bool) -> Iterator[Store]:
    """A tracking store and registry in a PostgreSQL database of its own, with runs a and b logged."""
    from mlflow import MlflowClient

    if not pg_available:
        pytest.skip("PostgreSQL cases skipped (LIVEYIELD_SKIP_PG=1)")
    database = f"mlflow_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        uri = make_url(PG_URL).set(database=database).render_as_string(hide_password=False)
        root = tmp_path_factory.mktemp("mlflow-pg")
        client = MlflowClient(tracking_uri=uri)  # MLflow creates its tables on first use
        experiment_id = client.create_experiment("lifecycle", artifact_location=str(root / "artifacts"))
        runs = {
            "a": log_tiny_model(uri, experiment_id, seed=1),
            "b": log_tiny_model(uri, experiment_id, seed=2),
        }
        yield Store(uri, root, experiment_id, runs)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def client(mlflow_store: Store) -> MlflowClient:
    """A client bound explicitly to the session's tracking store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_store.uri)


@pytest.fixture
def model_name() -> str:
    """A registered-model name no other test uses."""
    return f"m_{uuid.uuid4().hex[:10]}"
