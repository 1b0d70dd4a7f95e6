"""Every subcommand, given a bad argument or meeting a known failure, says so in one `error:` line.

Each case runs the installed ``liveyield`` script as a user would, against one small workspace
shared by the module (a migrated, empty warehouse; an empty registry) and the session's Prefect
API, so the flows a command runs log there. A new subcommand without a case fails
:func:`test_every_subcommand_has_a_case`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
import typer

from flows.cli import app
from tasks.db import make_engine
from tasks.warehouse import upgrade_schema

SCRIPT = Path(sys.executable).parent / "liveyield"
ROOT = Path(__file__).resolve().parents[2]
CLOSED_DB = "postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=2"
CLOSED_MLFLOW = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


@dataclass(frozen=True)
class Case:
    """A command line that must fail, the text its error line must hold, and extra environment."""

    args: list[str]
    needle: str
    env: dict[str, str] = field(default_factory=dict)


# {workspace} in an argument is replaced by the workspace folder.
CASES: dict[str, Case] = {
    "simulate": Case(["simulate", "--start", "notadate"], "YYYY-MM-DD"),
    "import": Case(["import", "raw_gifts", "{workspace}/corrupt.parquet"], "cannot read corrupt.parquet"),
    "validate": Case(["validate"], "LIVEYIELD_DB_URL", {"LIVEYIELD_DB_URL": CLOSED_DB}),
    "demo": Case(["demo", "--users", "0"], "at least 1"),
    "features list": Case(["features", "list"], "LIVEYIELD_DB_URL", {"LIVEYIELD_DB_URL": CLOSED_DB}),
    "features describe": Case(["features", "describe", "user_wach"], "unknown feature view 'user_wach'"),
    "features build": Case(["features", "build", "--full"], "--start and --end"),
    "features get": Case(
        [
            "features",
            "get",
            "--entities",
            "{workspace}/entities.csv",
            "--features",
            "user_watch:watch_minutes_8d",
            "--out",
            "{workspace}/out.parquet",
        ],
        "has no feature 'watch_minutes_8d'",
    ),
    "train": Case(["train", "ad_ctr", "--as-of", "1999-01-01"], "no labelled examples"),
    "score": Case(["score", "ad_ctr"], "no champion"),
    "run": Case(["run", "--model", "ad_ctrr"], "unknown model 'ad_ctrr'"),
    "monitor": Case(["monitor", "ad_ctrr"], "unknown model 'ad_ctrr'"),
    "status": Case(["status", "ad_ctrr"], "unknown model 'ad_ctrr'"),
    "retrain": Case(["retrain", "ad_ctrr"], "unknown model 'ad_ctrr'"),
    "serve": Case(["serve", "--prefect-port", "99999"], "not a port"),
    "stop": Case(["stop", "now"], "unexpected extra argument"),
    "doctor": Case(["doctor"], "unreachable", {"LIVEYIELD_DB_URL": CLOSED_DB}),
    "models list": Case(["models", "list"], "MLFLOW_TRACKING_URI", CLOSED_MLFLOW),
    "models show": Case(["models", "show", "ad_ctr"], "not found"),
    "models pull": Case(
        ["models", "pull", "ad_ctr", "--to", "{workspace}/pulled"], "no champion in the warehouse"
    ),
    "models rollback": Case(["models", "rollback", "ad_ctr"], "no champion to roll back"),
    "models attest": Case(["models", "attest", "ad_ctrr"], "unknown model 'ad_ctrr'"),
}


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    """Every leaf command of the app, as its words ("features list")."""
    names: list[str] = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        if isinstance(command, click.Group) or hasattr(command, "commands"):
            names += _commands(command, f"{prefix}{name} ")  # type: ignore[arg-type]
        else:
            names.append(f"{prefix}{name}")
    return names


def test_every_subcommand_has_a_case() -> None:
    commands = _commands(typer.main.get_command(app))  # type: ignore[arg-type]
    assert len(commands) >= 19
    assert sorted(CASES) == sorted(commands)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> tuple[Path, dict[str, str]]:
    """A folder with a migrated empty warehouse, an entity file and a corrupt file; the environment."""
    from prefect.settings import PREFECT_API_URL

    folder = tmp_path_factory.mktemp("cli-errors")
    db_url = f"sqlite:///{folder / 'warehouse.db'}"
    engine = make_engine(db_url)
    upgrade_schema(engine)
    engine.dispose()
    (folder / "entities.csv").write_text("user_key,event_ts\nu1,2026-01-05 12:00:00\n")
    (folder / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file")
    env = {
        **os.environ,
        "LIVEYIELD_HOME": str(folder / "home"),
        "LIVEYIELD_DB_URL": db_url,
        "LIVEYIELD_PSEUDONYM_KEY": "test-key",
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "COLUMNS": "200",
    }
    return folder, env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.parametrize("command", sorted(CASES))
def test_failure_is_one_error_line_without_traceback(
    command: str, workspace: tuple[Path, dict[str, str]]
) -> None:
    folder, env = workspace
    case = CASES[command]
    args = [arg.replace("{workspace}", str(folder)) for arg in case.args]
    result = _run(args, {**env, **case.env})
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(errors) == 1, result.stderr
    assert case.needle in errors[0], errors[0]
    assert not any(line.startswith("error:") for line in result.stdout.splitlines())
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def test_the_failed_runs_logs_keep_the_traceback(workspace: tuple[Path, dict[str, str]]) -> None:
    """The console shows no traceback; the run's logs in the Prefect API still hold it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId

    _, env = workspace
    result = _run(["train", "ad_ctr", "--as-of", "1998-06-01"], env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["train-ad_ctr-1998-06-02"]))
        )
        assert runs and all(run.state is not None and run.state.is_failed() for run in runs)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id])))
    assert any("Traceback" in log.message and "NoTrainingData" in log.message for log in logs)


def test_python_m_flows_cli_exits_with_the_scripts_code(workspace: tuple[Path, dict[str, str]]) -> None:
    """`python -m flows.cli` is the script by another name: a failure is a non-zero exit there too."""
    _, env = workspace
    module = [sys.executable, "-m", "flows.cli", "features", "describe", "user_wach"]
    result = subprocess.run(module, capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert result.returncode == _run(module[3:], env).returncode == 1, result.stderr


def test_debug_shows_the_traceback(workspace: tuple[Path, dict[str, str]]) -> None:
    _, env = workspace
    result = _run(["--debug", "features", "describe", "user_wach"], env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1
    assert "Traceback" in result.stderr and "UnknownView" in result.stderr


def test_an_unexpected_failure_is_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    """A bug (no known failure) still prints one line, naming --debug; with --debug, the traceback too."""
    from flows.cli.errors import report, set_debug

    def broken() -> None:
        raise ZeroDivisionError("division by zero")

    for debug in (False, True):
        set_debug(debug)
        try:
            broken()
        except ZeroDivisionError as exc:
            assert report(exc) == 1
        err = capsys.readouterr().err
        [line] = [line for line in err.splitlines() if line.startswith("error:")]
        assert line.startswith("error: unexpected ZeroDivisionError: division by zero") and "--debug" in line
        assert ("Traceback" in err) is debug
    set_debug(False)
