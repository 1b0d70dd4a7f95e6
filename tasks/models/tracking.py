"""MLflow tracking: one run per training, with params, metrics, the model, plots and the holdout."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import re
import tempfile
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from tasks.models.evaluation import (
    Evaluation,
    evaluation_frame,
    predict,
    stored_predictions,
)
from tasks.models.plots import write_plots
from tasks.models.sampling import fitted_model
from tasks.models.spec import Baseline, ModelSpec
from tasks.models.training import TrainedModel
from tasks.monitoring.reference import Reference, log_reference

HOLDOUT_ARTIFACT = "holdout/holdout.parquet"
MODEL_NAME = "model"
# Pinned from the installed versions: skips MLflow's slow requirement inference (~3 s a model).
REQUIREMENT_PACKAGES = ("mlflow", "scikit-learn", "xgboost", "pandas", "numpy", "scipy", "cloudpickle")
_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")
_READY: set[str] = set()  # tracking URIs whose store this process has seen created


def pip_requirements() -> list[str]:
    """The model's runtime requirements, pinned to what is installed here."""
    return [f"{name}=={version(name)}" for name in REQUIREMENT_PACKAGES]


def ready_tracking_store(tracking_uri: str) -> None:
    """Make sure a SQLite tracking store's tables exist, creating them in one process at a time.

    MLflow creates (migrates) a fresh store's tables when a client first opens it; two processes
    doing so at once (two training runs on a new home) collide and one fails part-way through the
    migrations. Under an exclusive lock on a file beside the database, the first creates the tables
    and the others find them. Other stores are created by their server (`liveyield stack`).
    """
    if tracking_uri in _READY:
        return
    database = make_url(tracking_uri).database if tracking_uri.startswith("sqlite:") else None
    if database and database != ":memory:":
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.with_name(f"{path.name}.init-lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                MlflowClient(tracking_uri=tracking_uri)  # opening the store creates its tables
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    _READY.add(tracking_uri)


def ensure_experiment(tracking_uri: str, artifact_root: Path, name: str) -> str:
    """The experiment's id, created with a file artifact location under artifact_root if missing."""
    ready_tracking_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = (Path(artifact_root).resolve() / name).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(name)  # a concurrent creator won the race
        if found is None:
            raise
        return str(found.experiment_id)


def _key(*parts: str) -> str:
    return _METRIC_KEY.sub("_", "__".join(parts))


def run_metrics(
    evaluation: Evaluation,
    baseline_evaluation: Evaluation,
    oracle: Mapping[str, float],
    ci: Mapping[str, tuple[float, float, float]],
    extra_baselines: Mapping[Baseline, Evaluation] | None = None,
) -> dict[str, float]:
    """The flat metric dict of a run: overall, per slice, baselines, CIs and oracle."""
    metrics = dict(evaluation.metrics)
    for column, values in evaluation.by_slice.items():
        for value, by_metric in values.items():
            metrics.update({_key(m, f"{column}_{value}"): v for m, v in by_metric.items()})
    metrics.update({_key("baseline", m): v for m, v in baseline_evaluation.metrics.items()})
    for i, (_, other) in enumerate((extra_baselines or {}).items(), start=1):
        metrics.update({_key(f"baseline_{i}", m): v for m, v in other.metrics.items()})
    baselines = [("baseline", baseline_evaluation)]
    baselines += [(f"baseline_{i}", e) for i, (_, e) in enumerate((extra_baselines or {}).items(), 1)]
    for prefix, other in baselines:  # per slice too, so a slice's model value has its baseline beside it
        for column, values in other.by_slice.items():
            for value, by_metric in values.items():
                metrics.update({_key(prefix, m, f"{column}_{value}"): v for m, v in by_metric.items()})
    for name, (low, _, high) in ci.items():
        metrics[_key(name, "ci_low")] = low
        metrics[_key(name, "ci_high")] = high
    metrics.update({_key("oracle", k): v for k, v in oracle.items()})
    metrics["n_holdout"] = float(evaluation.n)
    return {k: float(v) for k, v in metrics.items()}


def _as_of_ms(trained: TrainedModel) -> int:
    as_of = trained.lineage.get("as_of")
    return int(dt.datetime.fromisoformat(as_of).timestamp() * 1000) if as_of else 0


def _params(trained: TrainedModel) -> list[Param]:
    return [
        Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in sorted(trained.params.items())
    ]


def log_training_run(
    *,
    tracking_uri: str,
    artifact_root: Path,
    spec: ModelSpec,
    trained: TrainedModel,
    evaluation: Evaluation,
    baseline_evaluation: Evaluation,
    oracle: Mapping[str, float],
    ci: Mapping[str, tuple[float, float, float]],
    tags: Mapping[str, str] | None = None,
    extra_baselines: Mapping[Baseline, Evaluation] | None = None,
    frame: pd.DataFrame | None = None,
    reference: Reference | None = None,
) -> str:
    """Log one training as one MLflow run (run id passed explicitly, never the thread's active run).

    ``frame`` is the stored evaluation frame (tasks.models.evaluation.evaluation_frame); it is
    built here when not given. ``reference`` is the monitoring reference (monitoring/reference.json).
    """
    ready_tracking_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, artifact_root, spec.name)
    run_tags = {
        "model_name": spec.name,
        "training_fingerprint": trained.training_fingerprint,
        "data_fingerprint": trained.data_fingerprint,
        "as_of": str(trained.lineage.get("as_of", "")),
        "data_validated": str(bool(trained.lineage.get("data_validated", False))).lower(),
        "feature_versions": json.dumps(trained.lineage.get("feature_versions", {}), sort_keys=True),
        **({"sampling": trained.sampling.summary} if trained.sampling is not None else {}),
        **dict(tags or {}),
    }
    run = client.create_run(experiment_id, tags=run_tags, run_name=f"{spec.name}-train")
    run_id = run.info.run_id
    try:
        metrics = run_metrics(evaluation, baseline_evaluation, oracle, ci, extra_baselines)
        if frame is None:
            frame = evaluation_frame(spec, trained.pipeline, trained.train, trained.holdout, trained.mirror)
        _log_everything(client, tracking_uri, run_id, spec, trained, metrics, frame)
        if reference is not None:
            log_reference(client, run_id, reference)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _log_everything(
    client: MlflowClient,
    tracking_uri: str,
    run_id: str,
    spec: ModelSpec,
    trained: TrainedModel,
    metrics: Mapping[str, float],
    frame: pd.DataFrame,
) -> None:
    # Metric timestamps are the training's as_of (the clock is never read below flows/).
    now = _as_of_ms(trained)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in sorted(metrics.items())],
        params=_params(trained),
        tags=[RunTag("n_metrics", str(len(metrics)))],
    )
    holdout = trained.holdout
    x = holdout[spec.input_columns]
    # Integer features can be missing at scoring time: the signature declares them as doubles.
    x_sig = x.astype({c: "float64" for c in x.columns if pd.api.types.is_integer_dtype(x[c].dtype)})
    pred = frame["prediction"].to_numpy("float64")
    with tempfile.TemporaryDirectory(prefix="ly-run-") as tmp:
        folder = Path(tmp)
        for path in _plots(spec, trained, frame, folder / "plots"):
            client.log_artifact(run_id, str(path), "plots")
        parquet = folder / "holdout.parquet"
        frame.to_parquet(parquet, index=False)
        client.log_artifact(run_id, str(parquet), "holdout")
        lineage = folder / "lineage.json"
        lineage.write_text(json.dumps(trained.lineage, sort_keys=True, indent=1, default=str))
        client.log_artifact(run_id, str(lineage))
    # Model.log resolves the tracking store globally, and it files the logged model under the
    # *active* run's experiment (else the Default one, whose artifacts land in ./mlruns), so
    # the run is made active for this one call; its id is still named explicitly.
    mlflow.set_tracking_uri(tracking_uri)
    started = time.perf_counter()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            trained.pipeline,
            name=MODEL_NAME,
            run_id=run_id,
            serialization_format="cloudpickle",
            signature=infer_signature(x_sig, pred),
            input_example=x_sig.head(5),
            pip_requirements=pip_requirements(),
        )
    client.log_metric(run_id, "log_model_seconds", time.perf_counter() - started, now)
    client.set_tag(run_id, "model_uri", info.model_uri)


def _plots(spec: ModelSpec, trained: TrainedModel, frame: pd.DataFrame, folder: Path) -> list[Path]:
    """The spec's own plots, else the binary default (ROC, PR, calibration, importance)."""
    folder.mkdir(parents=True, exist_ok=True)
    if spec.plots is not None:
        return list(spec.plots(frame, folder))
    if spec.kind != "binary":
        return []
    y = frame["label"].to_numpy("float64")
    base = stored_predictions(frame, "baseline")["prediction"].to_numpy()
    pred = frame["prediction"].to_numpy("float64")
    return write_plots(fitted_model(trained.pipeline), y, pred, base, folder)  # importance: the booster's


def load_holdout(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """The stored evaluation frame of a run (inputs, label, slices, candidate and baseline predictions)."""
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="ly-holdout-") as tmp:
        path = client.download_artifacts(run_id, HOLDOUT_ARTIFACT, tmp)
        return pd.read_parquet(path)


def holdout_predictions(spec: ModelSpec, model: Any, holdout: pd.DataFrame) -> np.ndarray:
    """Re-score a model (e.g. the champion) on a stored holdout."""
    return predict(spec, model, holdout)
