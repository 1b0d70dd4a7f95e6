"""Same seed, same models: the whole pipeline run twice, each in a fresh home, gives identical results.

Each home has its own SQLite warehouse, MLflow store and landing zone, and no pseudonym key
configured: the simulated platform derives its key from the seed (tasks.settings.pseudonym_key),
so every user-level split, sample and ordering, and so every metric and gate verdict, must match
digit for digit. Models are judged by their own catalog policies, which decide on this small
platform too (they reject every model here, each for reasons quoting the measured numbers):
both homes must reach the same verdicts for the same reasons.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main
from flows.models import pipeline
from tasks.dates import resolve_as_of
from tasks.models import catalog
from tasks.settings import (
    KEY_FILE,
    Settings,
    derived_key,
    get_settings,
    pseudonym_key,
    pseudonym_key_origin,
)
from tasks.simulate import SimConfig
from tasks.simulate.run import simulate_configured_platform
from tests.data.quality_frames import good_frame
from tests.models.warehouse import START

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAYS = 24  # the user-outcome models need 14 horizon days after their history and snapshot days
CONFIG = SimConfig(users=400, streamers=30, days=DAYS, seed=13, start=START)
AS_OF = resolve_as_of(START + dt.timedelta(days=DAYS - 1))


def _results(metrics: dict[str, float]) -> dict[str, float | str]:
    """A run's logged metrics less the wall-clock timings (``*_seconds``); NaN as text, to compare equal."""
    return {k: "nan" if math.isnan(v) else v for k, v in metrics.items() if not k.endswith("_seconds")}


def _pipeline_in_fresh_home(folder: Path) -> dict[str, dict[str, Any]]:
    """Simulate and run the pipeline in a home of its own; each model's gate verdict and logged metrics."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("LIVEYIELD_PSEUDONYM_KEY", raising=False)
        patch.setenv("LIVEYIELD_HOME", str(folder / "home"))
        patch.setenv("LIVEYIELD_DB_URL", f"sqlite:///{folder / 'warehouse.db'}")
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        settings = get_settings()
        simulate_configured_platform(CONFIG)
        assert pseudonym_key_origin(settings) == f"derived from simulation seed {CONFIG.seed}"
        result = pipeline(as_of=AS_OF)
        client = MlflowClient(settings.mlflow_tracking_uri)
        outcomes = {}
        for name, outcome in result.models.items():
            trained = outcome.train
            assert trained is not None, (name, outcome.error)
            outcomes[name] = {
                "gate": (trained.gate_passed, trained.gate_reason, trained.promoted, trained.champion),
                "examples": trained.examples,
                "metrics": _results(client.get_run(trained.run_id).data.metrics),
                "scored": None if outcome.score is None else outcome.score.rows,
            }
        return outcomes


def test_the_same_seed_gives_the_same_models_in_two_fresh_homes(tmp_path: Path) -> None:
    first = _pipeline_in_fresh_home(tmp_path / "one")
    second = _pipeline_in_fresh_home(tmp_path / "two")
    assert sorted(first) == sorted(catalog.MODELS)
    assert (tmp_path / "one" / "home" / KEY_FILE).read_text() == (
        tmp_path / "two" / "home" / KEY_FILE
    ).read_text()
    for name in sorted(catalog.MODELS):
        assert first[name]["metrics"], name
        assert first[name] == second[name], name


def test_a_configured_key_or_an_existing_key_file_wins_over_the_seed(tmp_path: Path) -> None:
    settings = get_settings({"LIVEYIELD_HOME": str(tmp_path / "home")})
    assert pseudonym_key(settings, {"LIVEYIELD_PSEUDONYM_KEY": "secret"}, seed=7) == b"secret"
    assert pseudonym_key_origin(settings, {}) == "none yet"
    assert pseudonym_key(settings, {}, seed=7) == derived_key(7)
    assert pseudonym_key_origin(settings, {}) == "derived from simulation seed 7"
    # Made once: a later seed does not change it, and a seedless caller reads the same key.
    assert pseudonym_key(settings, {}, seed=8) == pseudonym_key(settings, {}) == derived_key(7)
    assert derived_key(7) != derived_key(8)
    other = get_settings({"LIVEYIELD_HOME": str(tmp_path / "other")})
    random_key = pseudonym_key(other, {})
    assert random_key not in (derived_key(7), derived_key(8))
    assert pseudonym_key(other, {}, seed=7) == random_key
    assert pseudonym_key_origin(other, {}) == f"the key file {KEY_FILE}"


def _partner_gifts(path: Path, day: dt.date) -> Path:
    """A partner file of gifts keyed by raw user ids, one day of them."""
    frame = good_frame("raw_gifts", n=10, day=day).drop(columns=["event_date", "user_key"])
    frame["user_id"] = [f"partner-{i % 3}" for i in range(10)]
    frame.to_parquet(path)
    return path


def test_import_warns_when_the_key_was_derived_from_a_seed(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LIVEYIELD_PSEUDONYM_KEY")
    pseudonym_key(settings, seed=7)  # a simulated platform made this home's key
    assert main(["import", "raw_gifts", str(_partner_gifts(tmp_path / "a.parquet", START))]) == 0
    assert "pseudonym key is derived from simulation seed 7" in capsys.readouterr().err
    monkeypatch.setenv("LIVEYIELD_PSEUDONYM_KEY", "a-secret")
    later = START + dt.timedelta(days=1)
    assert main(["import", "raw_gifts", str(_partner_gifts(tmp_path / "b.parquet", later))]) == 0
    assert "pseudonym key" not in capsys.readouterr().err
