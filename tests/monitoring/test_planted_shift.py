"""Monitoring finds the simulator's planted shift of users' interests (test plan O2).

Two small platforms per backend, simulated with `liveyield simulate` for 28 days and continued
with `simulate --continue` for 7: the same users, streamers and seed, the continued days of one
carrying `--shift interests` from their first day, of the other nothing. Up to that day the two
are the same platform. ad_ctr (fewer trees, a lenient gate, the spec's own drift policy) is
trained and promoted on each at the shift's first day, then monitored once the shifted days have
landed; the unshifted twin tells what a week alone does to the inputs of a platform whose 28-day
windows are full (users age: days_since_signup drifts on both).

The shifted run reports the target category's share drifting, the twin's does not; both runs'
verdict stays ``warn``, not a drift finding: an expected failure below gives the measured reason,
so that the day it reports drift the test says so.

The shift's day and target are read from oracle_shifts, the simulator's truth (only tests read it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from flows.cli import main
from tasks.featurestore import FEATURE_VIEWS, feature_table, materialize_views
from tasks.featurestore.views import CATEGORY_VOCABULARY
from tasks.ingest import ingest_table
from tasks.models import catalog
from tasks.monitoring.drift import DRIFT
from tasks.monitoring.reference import Reference, load_reference
from tasks.monitoring.run import model_views, worst
from tasks.schema import monitoring_checks, oracle_shifts
from tests.conftest import BACKENDS
from tests.models.warehouse import CREATED_TS, START, Backend, fresh_warehouse
from tests.monitoring.test_monitor_flows import LENIENT, SMALL, findings_of

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

DAY = dt.timedelta(days=1)
BEFORE, AFTER = 28, 7  # days simulated before the shift, days continued with it
SIZE = ["--users", "400", "--streamers", "30", "--seed", "5"]
# Every user moves half their interest to music (the kind's default size, 0.5, moves half the
# users): seven shifted days of a 28-day window put the music share's PSI near 0.28, drift.
SHIFT = ["--shift", "interests", "--shift-from", (START + BEFORE * DAY).isoformat(), "--shift-size", "1"]
CATEGORY_SHARES = {f"user_category_mix__{c}_share_28d" for c in CATEGORY_VOCABULARY}


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


@dataclasses.dataclass
class Monitored:
    """One platform: its warehouse, its recorded shifts, the champion's reference, the monitoring run."""

    engine: Engine
    shifts: list[tuple[str, dt.date, dict[str, Any]]]
    trained_at: dt.datetime
    reference: Reference
    summary: dict[str, Any]


def _recorded_shifts(engine: Engine) -> list[tuple[str, dt.date, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.execute(select(oracle_shifts).order_by(oracle_shifts.c.from_date)).all()
    return [
        (kind, day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)), json.loads(params))
        for kind, day, params in rows
    ]


def _platform(backend: Backend, env: pytest.MonkeyPatch, shift: list[str]) -> Monitored:
    """Simulate, continue (with ``shift``), ingest what ad_ctr reads, train at the day the continued
    days start, monitor at the end of the last one."""
    from flows.models import train_model
    from flows.monitor import monitor_model

    for key, value in backend.env.items():
        env.setenv(key, value)
    first = ["simulate", *SIZE, "--start", START.isoformat(), "--days", str(BEFORE), "--no-ingest"]
    assert main(first) == 0
    assert main(["simulate", "--continue", "--days", str(AFTER), *shift, "--no-ingest"]) == 0
    engine, settings = backend.engine, backend.settings
    spec = catalog.get_spec("ad_ctr")
    views = model_views(spec)
    end = _midnight(START + (BEFORE + AFTER) * DAY)
    for table in sorted({*spec.label_sources, *(s for v in views for s in v.sources)}):
        ingest_table(engine, Path(settings.landing_dir), table, max_ts=int(end.timestamp()) + 86_400)
    materialize_views(engine, views, created_ts=CREATED_TS, start=START - 2 * DAY, end=end.date() - DAY)
    # The champion is trained on the days before the continued ones: the shift's first day when
    # there is one (the truth says which), the same day on the unshifted twin.
    shifts = _recorded_shifts(engine)
    trained_at = _midnight(shifts[0][1]) if shifts else _midnight(START + BEFORE * DAY)
    trained = train_model("ad_ctr", as_of=trained_at, build=False)
    assert trained.promoted
    reference = load_reference(settings.mlflow_tracking_uri, trained.run_id)
    assert reference is not None
    summary = monitor_model("ad_ctr", as_of=end)
    return Monitored(engine, shifts, trained_at, reference, summary)


@pytest.fixture(scope="module", params=BACKENDS)
def twins(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Monitored]]:
    """The shifted platform and its unshifted twin on one backend, each monitored once."""
    with ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        spec = catalog.MODELS["ad_ctr"]  # the spec's drift policy: nothing here changes it
        env.setitem(catalog.MODELS, "ad_ctr", dataclasses.replace(spec, policy=LENIENT, params=SMALL))
        platforms = {}
        for name, shift in (("shifted", SHIFT), ("unshifted", [])):
            home = tmp_path_factory.mktemp(f"shift-{request.param}-{name}")
            backend = stack.enter_context(fresh_warehouse(request.param, home))
            platforms[name] = _platform(backend, env, shift)
        yield platforms


def _verdicts(summary: dict[str, Any]) -> dict[str, str]:
    """Each input's verdict: the worst status of its deciding statistics (PSI and the contract)."""
    by_feature: dict[str, list[str]] = {}
    for row in summary["rows"]:
        if row["check"] == "feature_drift" and row["statistic"] in summary["deciding"]:
            by_feature.setdefault(row["feature"], []).append(row["status"])
    return {feature: worst(statuses) for feature, statuses in by_feature.items()}


def _psi(summary: dict[str, Any], feature: str) -> float:
    key = ("feature_drift", feature, "psi")
    [row] = [r for r in summary["rows"] if (r["check"], r["feature"], r["statistic"]) == key]
    return float(row["value"])


def _mean_share(engine: Engine, column: str, day: dt.date) -> float:
    table = feature_table(FEATURE_VIEWS["user_category_mix"])
    with engine.connect() as conn:
        return float(
            conn.execute(select(func.avg(table.c[column])).where(table.c.partition_date == day)).scalar_one()
        )


def test_planted_interest_shift_drifts_the_interest_inputs_not_in_the_unshifted_twin(
    twins: dict[str, Monitored],
) -> None:
    """O2: a planted shift of users' interests from a given day is found by monitoring: the share of
    the target category drifts on the shifted platform, under ad_ctr's own drift policy, and not on
    the same platform without the shift, monitored at the same day. The retraining half of O2 (a
    drift event starts one retraining that goes through the gate) is tests/ops/test_triggers.py."""
    shifted, twin = twins["shifted"], twins["unshifted"]
    # The truth: one interests shift, from the day the continued days start, towards music.
    [(kind, first_day, params)] = shifted.shifts
    assert (kind, first_day, params) == ("interests", START + BEFORE * DAY, {"size": 1.0, "target": "music"})
    assert twin.shifts == []
    target = f"user_category_mix__{params['target']}_share_28d"

    # Up to the shift the two are one platform: both champions hold the same serving reference.
    assert shifted.trained_at == twin.trained_at == _midnight(first_day)
    assert shifted.reference.serving is not None and twin.reference.serving is not None
    assert shifted.reference.serving.inputs == twin.reference.serving.inputs
    assert target in shifted.reference.columns and "ad_category" in shifted.reference.columns

    # What the shift did to the data: the target's mean share of watch time rose.
    last = first_day + (AFTER - 1) * DAY
    assert (
        _mean_share(shifted.engine, target.split("__")[1], last)
        > _mean_share(twin.engine, target.split("__")[1], last) + 0.05
    )

    # What monitoring reports: the target's share drifts on the shifted platform only.
    moved, still = _verdicts(shifted.summary), _verdicts(twin.summary)
    assert set(moved) == set(still) == set(shifted.reference.columns)  # every input was checked
    assert moved[target] == DRIFT, shifted.summary["summary"]
    assert still[target] != DRIFT, twin.summary["summary"]
    assert not {f for f in CATEGORY_SHARES if still[f] == DRIFT}  # no category share drifts
    assert _psi(shifted.summary, target) > 4 * _psi(twin.summary, target)
    # Time alone moves other inputs on both; the shift adds the interest inputs, nothing else.
    added = {f for f, s in moved.items() if s == DRIFT} - {f for f, s in still.items() if s == DRIFT}
    assert target in added and added <= CATEGORY_SHARES | {"ad_category"}, added

    # The verdict is recorded in monitoring_checks and named in the dataset row's detail.
    as_of = shifted.summary["as_of"]
    with shifted.engine.connect() as conn:
        stored = conn.execute(
            select(monitoring_checks.c.status)
            .where(monitoring_checks.c.model == "ad_ctr", monitoring_checks.c.as_of == as_of)
            .where(monitoring_checks.c.feature == target, monitoring_checks.c.statistic == "psi")
        ).scalars()
        assert list(stored) == [DRIFT]
    assert target in next(r for r in shifted.summary["rows"] if r["check"] == "dataset_drift")["detail"]
    # The twin's run is no drift finding (the shifted one's status: the test below).
    assert twin.summary["status"] != DRIFT and not findings_of(twin.engine, twin.summary)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "ad_ctr's default drift policy does not call an interest shift a finding: it reaches 9 of "
        "its 29 inputs (8 category shares, ad_category), of which 1-2 drift a week in, and a "
        "dataset drifts at half its inputs; its predictions at the reference impression (the "
        "user's top category) do not move beyond the twin's (PSI 0.03 on both; normalised "
        "Wasserstein 0.067 against 0.054; 0.046 against 0.048 at 2,000 users with the spec's own "
        "trees). No drift finding, so no drift event and no retraining"
    ),
)
def test_planted_interest_shift_is_a_drift_finding_under_the_default_policy(
    twins: dict[str, Monitored],
) -> None:
    """O2: the monitoring run of the shifted platform reports drift: its status, and a drift finding
    (the event the retraining trigger acts on)."""
    shifted = twins["shifted"]
    assert shifted.summary["status"] == DRIFT, shifted.summary["summary"]
    assert "drift" in {f.kind for f in findings_of(shifted.engine, shifted.summary)}
