"""S3: a secret in the environment never reaches logs, Prefect parameters or artifacts, MLflow or Data Docs.

Two secrets are read from the environment: the database password inside LIVEYIELD_DB_URL
(PostgreSQL with trust authentication accepts any password, so a random one works) and the
pseudonymisation key LIVEYIELD_PSEUDONYM_KEY. The whole path runs with them: simulate and
ingest through the gate (Data Docs), build features, train, register, gate and promote. Failed
runs are part of the path too: the same URL, password included (in the user part, then as a
``password`` query parameter), naming a database that does not exist, fails a real connection;
their state messages, logs and tracebacks are searched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
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
from tasks.settings import Settings, get_settings, redact_url
from tests.models.warehouse import START
from tests.scan import files_under, leaks, prefect_records

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))


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


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a password needs a server
def test_s3_secrets_from_the_environment_appear_nowhere(
    db_url: str,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """S3: the password and the pseudonym key appear in no output of a successful or a failed run."""
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
    # Failed runs with the secret in their URL: a real connection to a database that does not
    # exist, the password once in the user part and once as a libpq ``password`` query
    # parameter. --debug puts the traceback on the console as well as in the run's logs.
    missing = f"missing_{secrets.token_hex(4)}"
    in_user_part = make_url(url).set(database=missing)
    in_query = in_user_part.set(password=None).update_query_dict({"password": password})
    for broken in (in_user_part, in_query):
        monkeypatch.setenv("LIVEYIELD_DB_URL", broken.render_as_string(hide_password=False))
        assert password in get_settings().db_url
        assert main(["--debug", "validate"]) == 1
    monkeypatch.setenv("LIVEYIELD_DB_URL", url)
    captured = capfd.readouterr()
    assert captured.err.count("Traceback") >= 2 and "does not exist" in captured.err  # the failures are real

    texts: list[tuple[str, Any]] = [("stdout", captured.out), ("stderr", captured.err)]
    texts += prefect_records(since)
    failed = [body for name, body in texts if name.startswith("state of") and "FAILED" in name]
    assert any(missing in body for body in failed), "no failed run state was searched"
    assert any(name.startswith("log ") and "Traceback" in body and missing in body for name, body in texts), (
        "no failed run's traceback was searched"
    )
    texts += mlflow_records(live)
    # The MLflow store itself, its artifacts (model, plots, holdout, gate report), Data Docs,
    # the landing zone: everything the run wrote to disk.
    texts += files_under(live.home, tmp_path / "mlflow.db")
    assert any("data_docs" in name for name, _ in texts), "Data Docs were not built"
    for kind in ("parameters of", "log ", "artifact gate-ad-ctr", "params of run", "mlartifacts"):
        assert any(kind in name for name, _ in texts), f"nothing searched: {kind}"
    for secret in (password, key):
        assert leaks(secret, texts) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://app:s3cret@db:5432/wh", "postgresql+psycopg://app:***@db:5432/wh"),
        (
            "postgresql+psycopg://app@db/wh?password=s3cret&sslmode=require",
            "postgresql+psycopg://app@db/wh?password=***&sslmode=require",
        ),
        ("postgresql://app@db/wh?sslpassword=s3cret", "postgresql://app@db/wh?sslpassword=***"),
        ("sqlite:///warehouse.db", "sqlite:///warehouse.db"),
    ],
)
def test_s3_redacted_urls_hide_the_password_wherever_it_is_written(url: str, shown: str) -> None:
    """S3: a URL shown in a message or a log hides a password given in its user part or its query."""
    assert redact_url(url) == shown and redact_url(make_url(url)) == shown
