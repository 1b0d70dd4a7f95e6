"""End to end on real servers: `liveyield serve`, a retrain deployment run, both UIs, credentials,
S3, `liveyield stop`.

One stack for the module, started the way an operator does (`liveyield serve` on free loopback
ports; PostgreSQL behind the warehouse, Prefect and MLflow when available, else SQLite), on a
simulated platform large enough for ad_ctr's real promotion gate to pass (2,000 users over 14
days, seed 5: AUC about 0.68 against a floor of 0.62). The tests run in file order and share
it; the last one stops it and checks that nothing is left behind. Both servers want the
credentials `liveyield serve` made: the command line finds them on its own, this process reads
them from the credentials file into the variables a shell would set.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tasks.db import make_engine
from tasks.models.catalog import MODELS
from tasks.ops import remote
from tasks.ops.deployments import PREFECT_FILE, retrain_deployment, score_deployment
from tasks.ops.servers import (
    StackCredentials,
    alive,
    credentials_path,
    descendants,
    prefect_client_settings,
    read_credentials,
    read_state,
    stack_pids,
)
from tasks.scoring import read_current_scores
from tasks.settings import get_settings
from tasks.warehouse import upgrade_schema
from tests.conftest import PG_URL
from tests.models.warehouse import START, build_warehouse
from tests.ops.test_secrets import files_under, leaks

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "servers"
LIVEYIELD = str(Path(sys.executable).parent / "liveyield")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
USERS, DAYS, SEED = 2000, 14, 5
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
AS_OF_ARG = (START + dt.timedelta(days=DAYS - 1)).isoformat()  # --as-of D means the end of day D


@dataclass
class Stack:
    """The running stack and what the tests learnt about it."""

    env: dict[str, str]
    home: Path
    state: dict[str, Any]
    warehouse_url: str
    secrets: tuple[str, ...]
    credentials: StackCredentials
    outputs: list[tuple[str, str]] = field(default_factory=list)  # command outputs, for S3
    runs: dict[str, str] = field(default_factory=dict)  # flow run ids by purpose

    @property
    def api(self) -> str:
        """The Prefect API."""
        return str(self.state["prefect_api_url"])

    @property
    def prefect_auth(self) -> tuple[str, str]:
        """Basic auth for the Prefect API, as httpx takes it."""
        user, _, password = self.credentials.prefect_auth_string.partition(":")
        return user, password

    @property
    def mlflow_auth(self) -> tuple[str, str]:
        """Basic auth for the MLflow server."""
        return self.credentials.mlflow_username, self.credentials.mlflow_password


def _cli(stack_env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIVEYIELD, *args], env=stack_env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _pg_usable() -> bool:
    if os.environ.get("LIVEYIELD_SKIP_PG") == "1":
        return False
    admin = create_engine(PG_URL)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        admin.dispose()


def _drop_databases(names: list[str]) -> None:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def served_stack(
    home: Path,
    prefix: str,
    extra_env: Mapping[str, str] | None = None,
    simulate: Sequence[str] | None = None,
    serve_args: Sequence[str] = (),
    paused: bool = False,
) -> Iterator[Stack]:
    """`liveyield serve` on a simulated platform in ``home`` (warehouse on PostgreSQL when it is
    usable, in a database named after ``prefix``; else SQLite), with this process's clients given
    the stack's credentials as a shell sets them; stopped and its databases dropped afterwards.

    With ``simulate`` (`liveyield simulate` arguments) the platform is made by that command, which
    records it for continuing, and served with `--simulate` (simulate-daily deployed too).
    ``serve_args`` go to `liveyield serve` as well. ``paused`` pauses every deployment's schedule
    once served (its auto-scheduled runs deleted): for tests that run deployments for simulated
    days themselves, which a run of the real clock's schedule (simulate-daily at 00:15 UTC, say)
    would otherwise supersede or overlap."""
    password, key = secrets.token_hex(16), secrets.token_hex(16)
    databases: list[str] = []
    if _pg_usable():
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        databases = [name, f"{name}_prefect", f"{name}_mlflow"]
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        # Trust authentication ignores the password: a random one is a secret to look for (S3).
        url = make_url(PG_URL).set(database=name, password=password).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{home / 'warehouse.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "LIVEYIELD_"))}
    env |= {"LIVEYIELD_HOME": str(home), "LIVEYIELD_DB_URL": url, "LIVEYIELD_PSEUDONYM_KEY": key}
    env |= dict(extra_env or {})
    try:
        engine = make_engine(url)
        upgrade_schema(engine)
        if simulate is None:
            build_warehouse(
                get_settings(env), engine, users=USERS, streamers=USERS // 16, days=DAYS, seed=SEED
            )
        else:
            simulated = _cli(env, "simulate", *simulate)
            assert simulated.returncode == 0, simulated.stdout + simulated.stderr
        engine.dispose()
        served = _cli(
            env,
            "serve",
            "--prefect-port",
            "0",
            "--mlflow-port",
            "0",
            *(["--simulate"] if simulate else []),
            *serve_args,
        )
        assert served.returncode == 0, served.stdout + served.stderr
        state = read_state(home)
        credentials = read_credentials(home)
        assert state is not None and credentials is not None
        # The new secrets: Prefect's password (its user name is no secret) and MLflow's.
        made = (credentials.prefect_auth_string.partition(":")[2], credentials.mlflow_password)
        stack = Stack(env, home, state, url, (password, key, *made), credentials)
        stack.outputs.append(("serve", served.stdout + served.stderr))
        if paused:
            _pause_schedules(stack.api, credentials)
        with pytest.MonkeyPatch.context() as patch:  # this process's clients, as a shell sets them
            for name, value in credentials.env().items():
                patch.setenv(name, value)
            yield stack
    finally:
        _cli(env, "stop", timeout=180)
        if databases:
            _drop_databases(databases)


def _pause_schedules(api: str, credentials: Any) -> None:
    """Pause every deployment of the served Prefect API (manual and triggered runs still run)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    with pytest.MonkeyPatch.context() as patch:
        for name, value in credentials.env().items():
            patch.setenv(name, value)
        with temporary_settings(prefect_client_settings(api)), get_client(sync_client=True) as client:
            for deployment in client.read_deployments():
                client.pause_deployment(deployment.id)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`liveyield serve` on a simulated platform; stopped (and its databases dropped) afterwards."""
    with served_stack(tmp_path_factory.mktemp("stack") / "home", "ly_e2e") as served:
        yield served


def test_serve_prints_both_uis(stack: Stack) -> None:
    out = stack.outputs[0][1]
    assert stack.state["prefect_ui_url"] in out and stack.state["mlflow_url"] in out
    assert str(credentials_path(stack.home)) in out.replace("\n", "")  # where, never what
    expected = "postgresql" if stack.warehouse_url.startswith("postgresql") else "sqlite"
    assert stack.state["prefect_database"].startswith(expected)
    assert stack.state["mlflow_backend_store"].startswith(expected)


def test_retrain_deployment_run_promotes_and_scores(stack: Stack) -> None:
    from mlflow.tracking import MlflowClient

    done = _cli(stack.env, "retrain", "ad_ctr", "--as-of", AS_OF_ARG, "--no-build")
    stack.outputs.append(("retrain", done.stdout + done.stderr))
    assert done.returncode == 0, done.stdout + done.stderr
    assert retrain_deployment("ad_ctr") in done.stdout and "Completed" in done.stdout
    assert "gate passed" in done.stdout
    match = re.search(r"/runs/flow-run/([0-9a-f-]{36})", done.stdout)
    assert match is not None
    stack.runs["retrain"] = match.group(1)

    client = MlflowClient(tracking_uri=stack.state["mlflow_url"], registry_uri=stack.state["mlflow_url"])
    [version] = client.search_model_versions("name = 'ad_ctr'")
    assert version.tags["gate_verdict"] == "passed"
    assert version.tags["flow_run_id"] == stack.runs["retrain"]
    assert client.get_model_version_by_alias("ad_ctr", "champion").version == version.version

    # The scoring deployment, through the API, publishes with the new champion.
    run_id, _ = remote.trigger(
        stack.api, score_deployment("ad_ctr"), {"model": "ad_ctr", "as_of": AS_OF.isoformat()}
    )
    assert remote.follow(stack.api, run_id, timeout_s=600) == "Completed"
    stack.runs["score"] = str(run_id)
    engine = make_engine(stack.warehouse_url)
    try:
        scores = read_current_scores(engine, "ad_ctr")
    finally:
        engine.dispose()
    assert len(scores) > 0 and set(scores["model_version"]) == {int(version.version)}

    # What the UI shows of each run: the gate report, the training summary, the scoring summary.
    summary = remote.table_artifact(stack.api, uuid.UUID(stack.runs["retrain"]), "train-ad-ctr")
    assert summary and summary[0]["promoted"] and summary[0]["version"] == int(version.version)
    assert {"gate-ad-ctr", "train-ad-ctr"} <= _artifact_keys(stack.api, stack.runs["retrain"])
    assert "scores-ad-ctr" in _artifact_keys(stack.api, stack.runs["score"])


def _artifact_keys(api: str, flow_run_id: str) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import temporary_settings

    with temporary_settings(prefect_client_settings(api)), get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]))
        )
    return {a.key for a in found if a.key}


def _cron_text(cron: str) -> str | None:
    """How the Prefect UI words a daily or weekly cron (None for anything else)."""
    minute, hour, dom, month, dow = cron.split()
    if not (minute.isdigit() and hour.isdigit() and dom == month == "*"):
        return None
    h, m = int(hour), int(minute)
    clock = f"At {(h % 12) or 12:02d}:{m:02d} {'AM' if h < 12 else 'PM'}"
    days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    if dow == "*":
        return f"{clock} every day"
    return f"{clock}, only on {days[int(dow) % 7]}" if dow.isdigit() else None


class _DevTools:
    """One headless Chromium page driven over the DevTools protocol: the page can be given
    credentials first (a header on every request, or the Prefect UI's stored login)."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            message = json.loads(self.socket.recv(timeout=120))
            if message.get("id") == ident:
                assert "error" not in message, message["error"]
                result: dict[str, Any] = message.get("result", {})
                return result

    def dom(self) -> str:
        found = self.call(
            "Runtime.evaluate", expression="document.documentElement.outerHTML", returnByValue=True
        )
        return str(found["result"].get("value", ""))


def _browse(
    url: str,
    shot: str,
    expect: list[str],
    *,
    headers: dict[str, str] | None = None,
    local_storage: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> str:
    """Render a page in headless Chromium; returns its DOM once every expected text is in it.

    ``headers`` go with every request of the page (MLflow's basic auth); ``local_storage`` is
    set on the page's origin before it loads (the Prefect UI keeps its login there).
    """
    from websockets.sync.client import connect

    assert CHROMIUM is not None
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Chromium's helpers may still write to the profile as it is removed: that is no failure.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        flags = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1600,1000",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
        ]  # fmt: skip
        browser = subprocess.Popen(
            flags, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                assert time.monotonic() < deadline and browser.poll() is None, "Chromium did not start"
                time.sleep(0.2)
            port = int(port_file.read_text().split()[0])
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
            page = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            with connect(page, max_size=None) as socket:
                tools = _DevTools(socket)
                if headers:
                    tools.call("Network.enable")
                    tools.call("Network.setExtraHTTPHeaders", headers=headers)
                if local_storage:
                    origin = "/".join(url.split("/")[:3])
                    tools.call("Page.navigate", url=f"{origin}/robots.txt")  # any page of the origin
                    time.sleep(1)
                    for key, value in local_storage.items():
                        tools.call("Runtime.evaluate", expression=f"localStorage.setItem({key!r}, {value!r})")
                tools.call("Page.navigate", url=url)
                dom = ""
                deadline = time.monotonic() + timeout_s  # single-page apps: give the API calls time
                while time.monotonic() < deadline:
                    dom = tools.dom()
                    if all(text in dom for text in expect):
                        time.sleep(1)  # let the last rows render before the picture
                        picture = tools.call("Page.captureScreenshot", format="png")["data"]
                        (ARTIFACTS / shot).write_bytes(base64.b64decode(picture))
                        return dom
                    time.sleep(1)
        finally:  # the browser and its helper processes (its own process group)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGTERM)
            browser.wait(timeout=60)
    missing = [text for text in expect if text not in dom]
    raise AssertionError(f"{url} never showed {missing}")


def test_uis_list_deployments_schedules_and_the_champion(stack: Stack) -> None:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)")
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    ui, mlflow = stack.state["prefect_ui_url"], stack.state["mlflow_url"]
    # The Prefect UI's login stores the auth string, base64-encoded, in the browser; MLflow's
    # basic auth is a header on every request (what a browser sends once the user signed in).
    login = {"prefect-password": base64.b64encode(stack.credentials.prefect_auth_string.encode()).decode()}
    basic = base64.b64encode(":".join(stack.mlflow_auth).encode()).decode()
    signed_in = {"Authorization": f"Basic {basic}"}
    # Not signed in, the Prefect UI shows its login form and nothing of the platform.
    login_form = _browse(f"{ui}/deployments", "prefect-login.png", ['placeholder="admin:pass"'])
    assert "ad_ctr-retrain" not in login_form
    deployed = yaml.safe_load(PREFECT_FILE.read_text())["deployments"]
    spec = MODELS["ad_ctr"]
    expect = [f"{len(deployed)} Deployments", "ad_ctr-retrain", "ad_ctr-score"]
    expect += [t for t in (_cron_text(spec.retrain_cron), _cron_text(spec.score_cron)) if t]
    _browse(f"{ui}/deployments", "prefect-deployments.png", expect, local_storage=login)
    with temporary_settings(prefect_client_settings(stack.api)), get_client(sync_client=True) as client:
        ingest = client.read_deployment_by_name("ingest-validate/ingest-validate-daily")
    _browse(f"{ui}/deployments/deployment/{ingest.id}", "prefect-ingest-deployment.png",
            ["ingest-validate-daily", "At 01:00 AM every day"], local_storage=login)  # fmt: skip
    if "retrain" in stack.runs:  # the run (its logs end with the verdict) and the artifacts it left
        _browse(f"{ui}/runs/flow-run/{stack.runs['retrain']}", "prefect-retrain-run.png",
                ["train-ad_ctr", "gate passed"], local_storage=login)  # fmt: skip
        # The monitoring the score run did (drift, freshness) and the status table, among them.
        _browse(f"{ui}/artifacts", "prefect-artifacts.png",
                ["gate-ad-ctr", "train-ad-ctr", "scores-ad-ctr", "monitor-ad-ctr", "liveyield-status"],
                local_storage=login)  # fmt: skip
    _browse(f"{mlflow}/#/models", "mlflow-models.png", ["ad_ctr", "champion"], headers=signed_in)
    _browse(
        f"{mlflow}/#/models/ad_ctr/versions/1", "mlflow-ad-ctr-v1.png", ["gate_verdict"], headers=signed_in
    )


def test_apis_refuse_requests_without_credentials(stack: Stack) -> None:
    """S5: both APIs answer 401 to no credentials and to wrong ones, and serve the right ones."""
    deployments = f"{stack.api}/deployments/filter"
    assert httpx.post(deployments, json={}).status_code == 401
    assert httpx.post(deployments, json={}, auth=(stack.prefect_auth[0], "wrong")).status_code == 401
    answer = httpx.post(deployments, json={}, auth=stack.prefect_auth)
    assert answer.status_code == 200 and any(d["name"] == "ad_ctr-retrain" for d in answer.json())
    assert httpx.get(f"{stack.api}/health").status_code == 200  # probes stay open, and tell nothing

    experiments = f"{stack.state['mlflow_url']}/api/2.0/mlflow/experiments/search"
    query = {"max_results": 10}
    assert httpx.get(experiments, params=query).status_code == 401
    assert httpx.get(experiments, params=query, auth=(stack.mlflow_auth[0], "wrong")).status_code == 401
    answer = httpx.get(experiments, params=query, auth=stack.mlflow_auth)
    assert answer.status_code == 200 and answer.json()["experiments"]
    assert httpx.get(stack.state["mlflow_url"]).status_code == 401  # the UI too


def test_an_approval_needs_credentials(stack: Stack) -> None:
    """S5: a paused run (what an approval answers) cannot be resumed without the API's credentials."""
    auth = stack.prefect_auth
    flow = httpx.post(f"{stack.api}/flows/", json={"name": "approval-probe"}, auth=auth)
    paused = {"type": "PAUSED", "name": "Paused", "state_details": {"pause_timeout": "2099-01-01T00:00:00Z"}}
    run = httpx.post(
        f"{stack.api}/flow_runs/", json={"flow_id": flow.json()["id"], "state": paused}, auth=auth
    ).json()
    resume = f"{stack.api}/flow_runs/{run['id']}/resume"
    approval = {"run_input": {"approve": True, "reason": "no credentials"}}

    def state() -> str:
        return str(httpx.get(f"{stack.api}/flow_runs/{run['id']}", auth=auth).json()["state"]["type"])

    try:
        assert state() == "PAUSED"
        assert httpx.post(resume, json=approval).status_code == 401
        assert httpx.post(resume, json=approval, auth=(auth[0], "wrong")).status_code == 401
        assert state() == "PAUSED"
        assert httpx.post(resume, json={}, auth=auth).status_code == 201  # the same call, signed in
        assert state() == "RUNNING"
    finally:  # the probe ran nothing: end it
        cancel = {"state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True}
        httpx.post(f"{stack.api}/flow_runs/{run['id']}/set_state", json=cancel, auth=auth)


def test_credentials_are_owner_only_and_servers_see_only_what_they_need(stack: Stack) -> None:
    path = credentials_path(stack.home)
    assert path.stat().st_mode & 0o777 == 0o600
    key = stack.env["LIVEYIELD_PSEUDONYM_KEY"]
    for name in ("prefect-server", "mlflow-server"):
        pid = int(stack.state["processes"][name]["pid"])
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
        assert not names & {"LIVEYIELD_DB_URL", "LIVEYIELD_PSEUDONYM_KEY", "LIVEYIELD_HOME"}, name
        values = [entry.partition(b"=")[2] for entry in environ]
        assert not any(key.encode() in value for value in values), name
        # (the MLflow store on PostgreSQL is the warehouse's server: its URL starts the same)
        assert stack.warehouse_url.encode() not in values, name
        # Each server holds its own secret only: the worker's client credentials stay out.
        assert not names & {"PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_PASSWORD"}, name


def _prefect_texts(api: str) -> list[tuple[str, str]]:
    """Deployments, work pools, flow-run parameters, logs and artifacts, as the Prefect API gives them."""
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    out: list[tuple[str, str]] = []
    with temporary_settings(prefect_client_settings(api)), get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            out.append((f"deployment {deployment.name}", deployment.model_dump_json()))
        for pool in client.read_work_pools():
            out.append((f"work pool {pool.name}", pool.model_dump_json()))
        for run in client.read_flow_runs(limit=200):
            out.append((f"flow run {run.name}", run.model_dump_json()))
        offset = 0
        while batch := client.read_logs(limit=200, offset=offset):
            out += [(f"log {log.name}", log.message) for log in batch]
            offset += len(batch)
        out += [(f"artifact {a.key}", a.model_dump_json()) for a in client.read_artifacts()]
    return out


def _mlflow_texts(uri: str) -> list[tuple[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out: list[tuple[str, str]] = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            out.append((f"run {run.info.run_id}", json.dumps([run.data.params, run.data.tags])))
    for version in client.search_model_versions("name = 'ad_ctr'"):
        out.append((f"ad_ctr v{version.version}", json.dumps(version.tags)))
    return out


def test_s3_secrets_in_the_environment_appear_nowhere(stack: Stack) -> None:
    assert "retrain" in stack.runs, "needs the retraining run"
    texts: list[tuple[str, Any]] = list(stack.outputs)
    texts += _prefect_texts(stack.api)
    texts += _mlflow_texts(stack.state["mlflow_url"])
    # Server and worker logs, the state file, the SQLite stores if any, MLflow artifacts.
    texts += files_under(stack.home / "logs", stack.home / "run", stack.home / "mlartifacts")
    texts += files_under(*(p for p in stack.home.glob("*.db")), stack.home / "prefect")
    # No credential on a command line either (`ps` shows those to every user).
    for pid in stack_pids(stack.state):
        for proc in [pid, *descendants(pid)]:
            cmdline = Path(f"/proc/{proc}/cmdline")
            if cmdline.exists():
                texts.append((f"command line of {proc}", cmdline.read_bytes()))
    assert any(name.startswith("log ") for name, _ in texts) and any("mlartifacts" in n for n, _ in texts)
    for secret in stack.secrets:
        assert leaks(secret, texts) == []


def test_stop_leaves_no_process_behind(stack: Stack) -> None:
    pids = stack_pids(stack.state)
    tree = [p for pid in pids for p in (pid, *descendants(pid))]
    assert tree and all(alive(pid) for pid in pids)
    stopped = _cli(stack.env, "stop", timeout=180)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert [pid for pid in tree if alive(pid)] == []
    assert read_state(stack.home) is None
    assert read_credentials(stack.home) == stack.credentials  # kept for the next `liveyield serve`
    again = _cli(stack.env, "stop", timeout=180)
    assert again.returncode == 0 and "nothing to stop" in again.stdout
