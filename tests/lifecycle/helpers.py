"""Small fixtures for the lifecycle tests: evaluations, gate reports and tiny logged models."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.gates import GateReport

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sqlalchemy import Engine

    from tests.lifecycle.conftest import Store


@dataclass
class Evaluation:
    """Structural copy of tasks.models.evaluation.Evaluation (written concurrently)."""

    metrics: dict[str, float]
    by_slice: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    n: int = 1000


def ev(
    n: int = 1000, by_slice: dict[str, dict[str, dict[str, float]]] | None = None, **metrics: float
) -> Evaluation:
    """An evaluation with the given overall metrics."""
    return Evaluation(dict(metrics), by_slice or {}, n)


def passing_report(model: str, candidate: int, champion: int | None) -> GateReport:
    """A gate report that passed (what a real gate run would hand to promote)."""
    return GateReport(model, candidate, champion, [], passed=True, reason="test: all checks passed")


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """mlflow.sklearn.log_model only uses the fluent context; scope it to this call."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def training_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A tiny deterministic binary problem."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int)
    return x, y


def log_tiny_model(uri: str, experiment_id: str, *, seed: int, fmt: str = "pickle") -> str:
    """Fit a LogisticRegression and log it with log_model(name="model") in a new run; returns run id."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(experiment_id)
    x, y = training_data(seed)
    model = LogisticRegression().fit(x, y)
    with _tracking(uri), mlflow.start_run(run_id=run.info.run_id):
        mlflow.sklearn.log_model(
            model, name="model", pip_requirements=["scikit-learn"], serialization_format=fmt
        )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def log_runs_layout_model(uri: str, experiment_id: str, tmp: Path, *, seed: int) -> str:
    """The pre-MLflow-3 layout: the model directory as plain run artifacts under model/."""
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(experiment_id)
    x, y = training_data(seed)
    path = tmp / f"saved-{run.info.run_id}"
    mlflow.sklearn.save_model(
        LogisticRegression().fit(x, y),
        str(path),
        pip_requirements=["scikit-learn"],
        serialization_format="pickle",
    )
    client.log_artifacts(run.info.run_id, str(path), "model")
    return run.info.run_id


class Payload:
    """Unpickling this creates the marker file: the code a malicious artifact would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.marker).touch, ())


def finite(value: float | None) -> bool:
    """True for a finite float."""
    return value is not None and math.isfinite(value)


def versions(client: MlflowClient, store: Store, name: str, count: int) -> list[int]:
    """Register one real model, then further versions of the same artifact (cheap)."""
    from tasks.registry import register_candidate
    from tasks.registry.tags import SHA_TAG

    info = register_candidate(client, name, store.runs["a"], tags={"training_fingerprint": "tf"})
    out = [info.version]
    for _ in range(count - 1):
        mv = client.create_model_version(
            name, source=info.source, run_id=info.run_id, tags={SHA_TAG: info.sha256}
        )
        out.append(int(mv.version))
    return out


def promote_passing(
    engine: Engine, client: MlflowClient, name: str, version: int, expected: int | None, **extra: Any
) -> None:
    """Promote a version with a passing gate report (``extra``: further promote() arguments)."""
    from tasks.gates import promote

    result = promote(
        engine,
        client,
        name,
        candidate_version=version,
        expected_champion=expected,
        report=passing_report(name, version, expected),
        actor="test",
        flow_run_id=None,
        reason=f"promote v{version}",
        **extra,
    )
    assert result.promoted


def race_processes(
    target: Callable[..., None],
    jobs: Sequence[tuple[Any, ...]],
    folder: Path,
    *,
    preload: Sequence[str],
    timeout: float = 300,
) -> list[dict[str, Any]]:
    """Run ``target(*job, start, out)`` in one process per job; their JSON results, in job order.

    Separate processes (forkserver: the ``preload`` imports are paid once) wait at the ``start``
    barrier and each writes its result as JSON to the path ``out``. Every one must exit cleanly.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    start = ctx.Barrier(len(jobs))
    folder.mkdir(parents=True, exist_ok=True)
    outs = [folder / f"racer-{i}.json" for i in range(len(jobs))]
    procs = [
        ctx.Process(target=target, args=(*job, start, str(out))) for job, out in zip(jobs, outs, strict=True)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=timeout)
        if proc.is_alive():
            proc.kill()
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return [json.loads(out.read_text()) for out in outs]
