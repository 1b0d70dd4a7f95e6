"""One small simulated, validated, materialised warehouse per backend, shared by the model tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tasks.models.catalog import get_spec
from tasks.models.training import TrainedModel, TrainingSet, build_training_set, fit_candidate
from tests.models.warehouse import START, build_warehouse, fresh_warehouse

DAYS = 14
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)


@dataclass
class Warehouse:
    """A built warehouse and the ad_ctr training artefacts on it."""

    engine: Engine
    training_set: TrainingSet
    trained: TrainedModel


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def warehouse(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Warehouse]:
    """400 users, 30 streamers, 14 days, seed 3, every view materialised; ad_ctr trained once."""
    with fresh_warehouse(request.param, tmp_path_factory.mktemp(f"models-{request.param}")) as backend:
        build_warehouse(backend.settings, backend.engine, users=400, streamers=30, days=DAYS, seed=3)
        spec = get_spec("ad_ctr")
        training_set = build_training_set(backend.engine, spec, AS_OF)
        yield Warehouse(backend.engine, training_set, fit_candidate(spec, training_set))


@pytest.fixture
def tracking(tmp_path: Path) -> tuple[str, Path]:
    """A temporary SQLite MLflow store and artifact root."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts"


@pytest.fixture(scope="session")
def warm_mlflow(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Log one tiny model first: MLflow scans installed packages once per process (0.8-2 s)."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from tasks.models.tracking import ensure_experiment, pip_requirements

    folder = tmp_path_factory.mktemp("mlflow-warm")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(ensure_experiment(uri, folder / "artifacts", "warm-up")).info.run_id
    mlflow.set_tracking_uri(uri)
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    with mlflow.start_run(run_id=run_id):  # files the logged model under this run's experiment
        mlflow.sklearn.log_model(model, name="model", run_id=run_id, pip_requirements=pip_requirements())
