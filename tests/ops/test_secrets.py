"""S3: a secret in the environment never reaches logs, Prefect parameters or artifacts, MLflow or Data Docs.

Two secrets are read from the environment: the database password inside LIVEYIELD_DB_URL
(PostgreSQL with trust authentication accepts any password, so a random one works) and the
pseudonymisation key LIVEYIELD_PSEUDONYM_KEY. The whole path runs with them: simulate and
ingest through the gate (Data Docs), build features, train, register, gate and promote.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from flows.build_features import build_features
from flows.cli import main
from flows.models import train_model
from tasks.models import catalog
from tasks.models.families.ad_impressions import CVR_FEATURES
from tasks.models.spec import PromotionPolicy, ValueThreshold
from tasks.settings import Settings, get_settings
from tests.models.warehouse import START

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))


def leaks(secret: str, texts: Iterable[tuple[str, str | bytes]]) -> list[str]:
    """The names of the texts (or files) that contain the secret."""
    needle = secret.encode()
    return [name for name, text in texts if needle in (text if isinstance(text, bytes) else text.encode())]


def files_under(*roots: Path) -> list[tuple[str, bytes]]:
    """Every file below the roots (or the root itself, when a file), as (path, bytes)."""
    paths = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    return [(str(p), p.read_bytes()) for p in paths]


def prefect_records(since: dt.datetime) -> list[tuple[str, str]]:
    """Parameters, logs and artifacts of every flow run that started after ``since``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )

    out: list[tuple[str, str]] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),  # type: ignore[arg-type]
            limit=200,
        )
        ids = [run.id for run in runs]
        assert ids, "no flow runs recorded"
        for run in runs:
            out.append((f"parameters of {run.name}", json.dumps(run.parameters, default=str)))
            out.append((f"state of {run.name}", str(run.state)))
        offset = 0
        while batch := client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset
        ):
            out += [(f"log {log.name}", log.message) for log in batch]
            offset += len(batch)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        out += [(f"artifact {a.key}", f"{a.description} {a.data}") for a in artifacts]
    return out


def mlflow_records(settings: Settings) -> list[tuple[str, str]]:
    """Params and tags of every run, and tags of every model version, in the tracking store."""
    from tasks.lifecycle import mlflow_client

    client = mlflow_client(settings)
    out: list[tuple[str, str]] = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            out.append((f"params of run {run.info.run_id}", json.dumps(run.data.params)))
            out.append((f"tags of run {run.info.run_id}", json.dumps(run.data.tags)))
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name = '{model.name}'"):
            out.append((f"tags of {model.name} v{version.version}", json.dumps(version.tags)))
    return out


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a password needs a server
def test_s3_secrets_from_the_environment_appear_nowhere(
    db_url: str,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    password, key = secrets.token_hex(16), secrets.token_hex(16)
    url = make_url(db_url).set(password=password).render_as_string(hide_password=False)
    monkeypatch.setenv("LIVEYIELD_DB_URL", url)
    monkeypatch.setenv("LIVEYIELD_PSEUDONYM_KEY", key)
    monkeypatch.setitem(
        catalog.MODELS, "ad_ctr", dataclasses.replace(catalog.MODELS["ad_ctr"], policy=LENIENT)
    )
    live = get_settings()
    assert password in live.db_url  # the platform really runs with the secret
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)

    args = ["simulate", "--users", "250", "--streamers", "20", "--days", str(DAYS), "--seed", "5"]
    assert main([*args, "--start", START.isoformat()]) == 0
    views = sorted({ref.split(":")[0] for ref in CVR_FEATURES})
    build_features(start=START - dt.timedelta(days=2), end=AS_OF.date(), views=views, validate_first=False)
    result = train_model("ad_ctr", as_of=AS_OF, build=False)
    assert result.promoted
    captured = capfd.readouterr()

    texts: list[tuple[str, Any]] = [("stdout", captured.out), ("stderr", captured.err)]
    texts += prefect_records(since)
    texts += mlflow_records(live)
    # The MLflow store itself, its artifacts (model, plots, holdout, gate report), Data Docs,
    # the landing zone: everything the run wrote to disk.
    texts += files_under(live.home, tmp_path / "mlflow.db")
    assert any("data_docs" in name for name, _ in texts), "Data Docs were not built"
    for kind in ("parameters of", "log ", "artifact gate-ad-ctr", "params of run", "mlartifacts"):
        assert any(kind in name for name, _ in texts), f"nothing searched: {kind}"
    for secret in (password, key):
        assert leaks(secret, texts) == []
