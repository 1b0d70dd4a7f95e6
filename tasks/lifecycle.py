"""The model lifecycle, step by step, for any spec: train → register → gate → promote → score.

Each function is one step of the train-model / score-model flows. Steps hand each other
small identifiers (MLflow run id, model version) and reload what they need from MLflow or
the warehouse; the gate re-scores the champion on the exact holdout the candidate logged.
Nothing here reads the clock: the flows pass ``now``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine

from tasks.gates import (
    GateReport,
    current_champion,
    evaluate_gate,
    promote,
    record_gate_verdict,
    resolve_champion,
)
from tasks.models.catalog import get_spec
from tasks.models.evaluation import (
    Evaluation,
    baseline_intervals,
    baseline_roles,
    bootstrap_ci,
    bootstrap_delta,
    champion_rows,
    change_intervals,
    evaluate,
    evaluation_frame,
    oracle_report,
    predict_frame,
    stored_predictions,
    value_intervals,
)
from tasks.models.metrics import NO_BOOTSTRAP
from tasks.models.scoring_frame import StaleFeatures, build_scoring_frame
from tasks.models.spec import Baseline, ModelSpec
from tasks.models.tracking import load_holdout, log_training_run, ready_tracking_store
from tasks.models.training import TrainedModel, build_training_set, fit_candidate, frame_fingerprint
from tasks.monitoring.events import emit_promoted
from tasks.monitoring.reference import Reference, input_keys, profile_pair
from tasks.monitoring.run import MonitorResult, announced, check_inputs, compare, refusal, retention_days
from tasks.monitoring.store import record_checks
from tasks.registry import load_approved, register_candidate
from tasks.scoring import publish, validate_score_set, write_score_set
from tasks.scoring.partitions import finish_staged, in_partition, partition_count, write_partition
from tasks.settings import Settings

CI_BOOT = 200
SCORE_CHUNK = 200_000
LINEAGE_TAGS = ("training_fingerprint", "holdout_fingerprint", "data_fingerprint", "feature_versions",
                "validation_run_ids", "code_version", "flow_run_id", "as_of")  # fmt: skip


def mlflow_client(settings: Settings) -> MlflowClient:
    """An MLflow client bound to the configured tracking store and registry."""
    ready_tracking_store(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def _baselines(spec: ModelSpec, frame: pd.DataFrame) -> dict[Baseline, Evaluation]:
    """Every baseline's evaluation on the stored evaluation frame, by baseline."""
    y = frame["label"].to_numpy("float64")
    return {
        baseline: evaluate(spec, y, stored_predictions(frame, role), frame)
        for baseline, role in baseline_roles(spec).items()
    }


def train_candidate(
    settings: Settings,
    engine: Engine,
    model: str,
    as_of: dt.datetime,
    *,
    code_version: str,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Build the training set, fit, evaluate on the holdout and log it all as one MLflow run."""
    spec = get_spec(model)
    training_set = build_training_set(engine, spec, as_of)
    trained = fit_candidate(spec, training_set)
    frame = evaluation_frame(spec, trained.pipeline, trained.train, trained.holdout, trained.mirror)
    if spec.evaluation_columns is not None:  # evaluation-only columns (may read oracle tables)
        frame = spec.evaluation_columns(engine, frame)
    y = frame["label"].to_numpy("float64")
    pred = stored_predictions(frame, "candidate")
    evaluation = evaluate(spec, y, pred, frame)
    baselines = _baselines(spec, frame)
    ci = {
        metric: bootstrap_ci(
            spec, metric, y, pred, rows=frame, n_boot=CI_BOOT, confidence=0.95, seed=spec.seed
        )
        for metric in spec.metrics
        if metric not in NO_BOOTSTRAP
    }
    lineage = {
        "training_fingerprint": trained.training_fingerprint,
        "holdout_fingerprint": frame_fingerprint(trained.holdout),
        "data_fingerprint": trained.data_fingerprint,
        "feature_versions": json.dumps(training_set.feature_versions, sort_keys=True),
        "validation_run_ids": _fit(json.dumps(sorted(set(training_set.validation_run_ids.values())))),
        "code_version": code_version,
        "flow_run_id": flow_run_id or "",
        "as_of": as_of.isoformat(),
    }
    run_id = log_training_run(
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_root=settings.home / "mlartifacts",
        spec=spec,
        trained=trained,
        evaluation=evaluation,
        baseline_evaluation=baselines[spec.baseline],
        extra_baselines={k: v for k, v in baselines.items() if k != spec.baseline},
        oracle=oracle_report(engine, spec, frame, pred=pred),
        ci=ci,
        tags=lineage,
        frame=frame,
        reference=monitoring_reference(engine, spec, as_of, training_set.frame, trained, frame),
    )
    return {
        "model": spec.name,
        "run_id": run_id,
        "examples": len(training_set.frame),
        "sampling": trained.sampling.summary if trained.sampling is not None else "",
        "fit_seconds": round(trained.fit_seconds, 2),
        "metrics": {k: round(v, 5) for k, v in evaluation.metrics.items()},
        "headline": _headline(spec, evaluation, baselines),
    }


def monitoring_reference(
    engine: Engine,
    spec: ModelSpec,
    as_of: dt.datetime,
    training_frame: pd.DataFrame,
    trained: TrainedModel,
    evaluation: pd.DataFrame,
) -> Reference:
    """What monitoring compares later scoring runs with (tasks/monitoring/reference.py): profiles of
    the inputs on the training frame and the holdout predictions, and of the scoring frame at as_of
    and the trained model's predictions on it; entity inputs over distinct entities (``input_keys``)."""
    columns, keys = spec.input_columns, input_keys(spec)
    training = profile_pair(training_frame, evaluation["prediction"], columns, spec.categorical, keys)
    serving, note = None, ""
    try:
        current = scoring_frame(engine, spec, as_of)
    except StaleFeatures as exc:
        note = f"no scoring frame at the training as_of: {exc}"
    else:
        if current.empty:
            note = "the scoring frame at the training as_of has no rows"
        else:
            predictions = predict_chunks(spec, trained.pipeline, current)["prediction"]
            serving = profile_pair(current, predictions, columns, spec.categorical, keys)
    return Reference(
        model=spec.name,
        as_of=as_of.isoformat(),
        columns=tuple(columns),
        categorical=tuple(c for c in spec.categorical if c in columns),
        training=training,
        serving=serving,
        serving_note=note,
    )


def scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
    """The rows a scoring run scores at as_of (the spec's builder, else the default one)."""
    build = spec.build_scoring_frame or build_scoring_frame
    return build(engine, spec, as_of)


def partition_frame(
    engine: Engine, spec: ModelSpec, as_of: dt.datetime, part: int, parts: int
) -> pd.DataFrame:
    """The rows of one entity-key partition of the scoring frame (tasks/scoring/partitions.py): the
    default builder fetches only those entities' features; a spec's own builder builds the whole
    frame, which is then cut."""
    if spec.build_scoring_frame is None:
        return build_scoring_frame(engine, spec, as_of, partition=(part, parts))
    return in_partition(spec.build_scoring_frame(engine, spec, as_of), spec.scoring.key, part, parts)


def predict_chunks(spec: ModelSpec, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's prediction frame for every row, predicted in chunks (bounded memory)."""
    chunks = [
        predict_frame(spec, model, frame.iloc[i : i + SCORE_CHUNK]) for i in range(0, len(frame), SCORE_CHUNK)
    ]
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame({"prediction": []})


def register(settings: Settings, model: str, run_id: str) -> dict[str, Any]:
    """Register the run's model as a candidate version (an identical earlier one is reused)."""
    client = mlflow_client(settings)
    run_tags = client.get_run(run_id).data.tags
    tags = {k: run_tags[k] for k in LINEAGE_TAGS if k in run_tags}
    info = register_candidate(client, get_spec(model).name, run_id, tags=tags)
    return {"model": model, "version": int(info.version), "created": bool(info.created)}


def gate(settings: Settings, engine: Engine, model: str, version: int, run_id: str) -> GateReport:
    """Judge a candidate against its policy, the baseline and the champion on the same holdout."""
    spec = get_spec(model)
    client = mlflow_client(settings)
    frame = load_holdout(settings.mlflow_tracking_uri, run_id)
    y = frame["label"].to_numpy("float64")
    pred = stored_predictions(frame, "candidate")
    champion_version = current_champion(engine, spec.name)
    # The champion is compared on the registered model's own holdout rows (champion_rows).
    own = champion_rows(frame)
    own_frame, own_y, own_pred = frame[own].reset_index(drop=True), y[own], pred[own].reset_index(drop=True)
    champion_eval: Evaluation | None = None
    champion_pred: pd.DataFrame | None = None
    # On an empty holdout there is nothing to re-score the champion on: the size check below
    # fails the gate, and the verdict is recorded as any other.
    if champion_version is not None and champion_version != version and not frame.empty:
        resolve_champion(engine, client, spec.name)  # re-point a drifted MLflow alias first
        champion = load_approved(
            settings.mlflow_tracking_uri, spec.name, version=champion_version, warehouse=engine
        )
        champion_pred = predict_frame(spec, champion.model, own_frame)
        champion_eval = evaluate(spec, own_y, champion_pred, own_frame)
    elif champion_version == version:
        champion_pred = own_pred
        champion_eval = evaluate(spec, own_y, own_pred, own_frame)
    deltas: dict[tuple[str, str], tuple[float, float, float]] = {}
    roles = {str(b): role for b, role in baseline_roles(spec).items()} | {"baseline": "baseline"}
    for rule in spec.policy.significance:
        if rule.against in roles:
            args = (y, pred, stored_predictions(frame, roles[rule.against]), frame)
        elif rule.against == "champion" and champion_pred is not None:
            args = (own_y, own_pred, champion_pred, own_frame)
        else:
            continue  # a first run (no champion); an unknown name is refused when the spec loads
        deltas[(rule.metric, rule.against)] = bootstrap_delta(
            spec,
            rule.metric,
            args[0],
            args[1],
            args[2],
            rows=args[3],
            n_boot=rule.n_boot,
            confidence=rule.confidence,
            seed=spec.seed,
        )
    baselines = _baselines(spec, frame)
    report = evaluate_gate(
        spec.policy,
        candidate=evaluate(spec, y, pred, frame),
        candidate_vs_champion=None if own.all() else evaluate(spec, own_y, own_pred, own_frame),
        champion=champion_eval,
        baseline=baselines[spec.baseline],
        extra_baselines={k: v for k, v in baselines.items() if k != spec.baseline},
        intervals=value_intervals(spec, y, pred, frame, n_boot=CI_BOOT, seed=spec.seed),
        baseline_intervals=baseline_intervals(spec, y, pred, frame, n_boot=CI_BOOT, seed=spec.seed),
        change_intervals=(
            {}
            if champion_pred is None
            else change_intervals(
                spec, own_y, own_pred, champion_pred, own_frame, n_boot=CI_BOOT, seed=spec.seed
            )
        ),
        deltas=deltas,
        data_validated=client.get_run(run_id).data.tags.get("data_validated") == "true",
        model=spec.name,
        candidate_version=version,
        champion_version=champion_version,
    )
    record_gate_verdict(client, report)
    client.log_text(run_id, report.to_json(), f"gate/report-v{version}.json")
    client.log_text(run_id, report.to_markdown(), f"gate/report-v{version}.md")
    return report


def promote_if_passed(
    settings: Settings,
    engine: Engine,
    report: GateReport,
    *,
    actor: str,
    flow_run_id: str | None,
    reason: str,
) -> dict[str, Any]:
    """Move @champion to a passing candidate by compare-and-set; say what happened and why."""
    version, champion = report.candidate_version, report.champion_version
    if version is None:
        raise ValueError("the gate report names no candidate version")
    if champion == version:
        return {"promoted": False, "champion": version, "detail": "candidate is already the champion"}
    if not report.passed:
        return {"promoted": False, "champion": champion, "detail": report.reason}
    result = promote(
        engine,
        mlflow_client(settings),
        report.model,
        candidate_version=version,
        expected_champion=champion,
        report=report,
        actor=actor,
        flow_run_id=flow_run_id,
        reason=reason,
    )
    if result.lost_race:
        if result.current_champion == version:  # a concurrent run of the same training won (R7)
            detail = "candidate is already the champion (promoted by a concurrent run)"
            return {"promoted": False, "champion": version, "detail": detail}
        return {"promoted": False, "champion": result.current_champion, "detail": result.detail}
    emit_promoted(report.model, version, champion, actor=actor, reason=reason, flow_run_id=flow_run_id)
    return {"promoted": True, "champion": version, "detail": f"v{champion} → v{version}"}


def roll_back(settings: Settings, model: str, *, actor: str, reason: str) -> int:
    """Move @champion back to the previous champion (one ledger entry); returns the restored version."""
    from tasks.db import make_engine
    from tasks.gates import rollback

    engine = make_engine(settings.db_url)
    try:
        return rollback(engine, mlflow_client(settings), get_spec(model).name, actor=actor, reason=reason)
    finally:
        engine.dispose()


def score(
    settings: Settings,
    engine: Engine,
    model: str,
    as_of: dt.datetime,
    *,
    run_id: str,
    now: int,
    plots: Path | None = None,
) -> dict[str, Any]:
    """Score every entity of the model's target with the champion and publish the set atomically.

    The frame is built and predicted once: monitoring (tasks/monitoring/run.py) checks freshness
    first (stale inputs are recorded, then refused with StaleFeatures) and compares that frame and
    those predictions with the champion's reference before the set is written. Drift never blocks;
    the monitoring summary comes back under ``monitor``.
    """
    spec = get_spec(model)
    started = time.perf_counter()
    version, frame, predictions, monitored = _checked_and_monitored(
        settings, engine, spec, as_of, run_id=run_id, now=now, plots=plots
    )
    scored = _score_rows(spec, frame.reset_index(drop=True), predictions)
    set_id = write_score_set(
        engine,
        model=spec.name,
        version=version,
        as_of=int(as_of.timestamp()),
        run_id=run_id,
        frame=scored,
        created_ts=now,
    )
    validate_score_set(engine, set_id, spec.scoring.score_range, frame=scored)
    published = publish(engine, spec.name, set_id, published_ts=now, keep_days=retention_days(spec))
    return {
        "model": spec.name,
        "version": version,
        "rows": len(scored),
        "score_set_id": set_id,
        "published": published.published,  # False: compare-and-set refused it (kept validated)
        "publish_detail": published.reason,
        "seconds": round(time.perf_counter() - started, 2),
        "monitor": monitored.as_dict(),
    }


def _checked_and_monitored(
    settings: Settings,
    engine: Engine,
    spec: ModelSpec,
    as_of: dt.datetime,
    *,
    run_id: str,
    now: int,
    plots: Path | None,
) -> tuple[int, pd.DataFrame, pd.DataFrame, MonitorResult]:
    """The champion (resolved once), the scoring frame, its predictions and the monitoring of
    both; stale inputs are recorded, then refused with StaleFeatures."""
    version = resolve_champion(engine, mlflow_client(settings), spec.name)  # once per run
    approved = load_approved(settings.mlflow_tracking_uri, spec.name, version=version, warehouse=engine)
    checked, frame = check_inputs(engine, spec, version, as_of, recorded_at=now, run_id=run_id)
    if frame is None:
        record_checks(engine, checked)
        stale = refusal(spec, checked)
        ts = int(as_of.timestamp())
        announced(MonitorResult(spec.name, version, ts, "error", str(stale), tuple(checked)))
        raise stale
    # Predict in chunks (bounded memory), format once: a format may rank across rows of one entity.
    predictions = predict_chunks(spec, approved.model, frame)
    monitored = compare(settings, engine, spec, version, as_of, (checked, frame, predictions["prediction"]),
                        now=now, run_id=run_id, plots=plots)  # fmt: skip
    return version, frame, predictions, monitored


def plan_scoring(
    settings: Settings,
    engine: Engine,
    model: str,
    as_of: dt.datetime,
    *,
    run_id: str,
    now: int,
    workers: int,
    plots: Path | None = None,
) -> dict[str, Any]:
    """The flow's first half of a scoring run fanned out over a cluster (tasks/scoring/partitions.py).

    Freshness and drift are checked here as score() checks them, on the whole frame and the
    champion's predictions on it (drift statistics over partitions would not add up), then the
    run's score set is staged empty and cut into entity-key partitions for the workers. Returns
    the champion version, the staged set, the partition count and the monitoring summary.
    """
    spec = get_spec(model)
    version, frame, _, monitored = _checked_and_monitored(
        settings, engine, spec, as_of, run_id=run_id, now=now, plots=plots
    )
    set_id = write_score_set(
        engine,
        model=spec.name,
        version=version,
        as_of=int(as_of.timestamp()),
        run_id=run_id,
        frame=pd.DataFrame({"entity_key": pd.Series([], dtype=object), "score": pd.Series([], dtype=float)}),
        created_ts=now,
    )
    return {
        "model": spec.name,
        "version": version,
        "score_set_id": set_id,
        "parts": partition_count(workers, frame[spec.scoring.key].nunique()),
        "monitor": monitored.as_dict(),
    }


def score_partition(
    settings: Settings,
    engine: Engine,
    model: str,
    version: int,
    as_of: dt.datetime,
    *,
    score_set_id: str,
    part: int,
    parts: int,
) -> int:
    """Score one entity-key partition with the given champion version, loaded here from the
    registry, into the staged set (replacing what an earlier attempt wrote); returns its rows."""
    spec = get_spec(model)
    approved = load_approved(settings.mlflow_tracking_uri, spec.name, version=version, warehouse=engine)
    frame = partition_frame(engine, spec, as_of, part, parts)
    predictions = predict_chunks(spec, approved.model, frame)
    return write_partition(engine, score_set_id, _score_rows(spec, frame, predictions))


def publish_staged(engine: Engine, model: str, score_set_id: str, *, rows: int, now: int) -> dict[str, Any]:
    """The flow's last half of a fanned-out scoring run: record the partitions' total, validate the
    stored set (read back: it must hold exactly those rows) and publish it with the single flip."""
    spec = get_spec(model)
    finish_staged(engine, score_set_id, rows)
    validate_score_set(engine, score_set_id, spec.scoring.score_range)
    published = publish(engine, spec.name, score_set_id, published_ts=now, keep_days=retention_days(spec))
    return {"published": published.published, "publish_detail": published.reason}


def _headline(spec: ModelSpec, evaluation: Evaluation, baselines: dict[Baseline, Evaluation]) -> str:
    """The primary metric against each baseline, e.g. "auc 0.658 (base_rate 0.500)"."""
    metric = spec.primary_metric
    against = ", ".join(f"{name} {b.metrics.get(metric, float('nan')):.3f}" for name, b in baselines.items())
    return f"{metric} {evaluation.metrics.get(metric, float('nan')):.3f} ({against})"


def _score_rows(spec: ModelSpec, frame: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The published rows of one chunk: the spec's own format, else one score per entity key."""
    if spec.format_scores is not None:
        return spec.format_scores(spec, frame.reset_index(drop=True), predictions)
    return pd.DataFrame(
        {
            "entity_key": frame[spec.scoring.key].astype(str).to_numpy(),
            "score": predictions["prediction"].to_numpy("float64"),
        }
    )


def _fit(value: str, limit: int = 5000) -> str:
    """MLflow tag values have a length limit; keep the start and say it was cut."""
    return value if len(value) <= limit else value[: limit - 20] + "…(truncated)"
