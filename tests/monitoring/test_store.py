"""The monitoring table on SQLite and PostgreSQL: record, read the latest, refuse bad rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from tasks.monitoring.drift import compare_frame
from tasks.monitoring.profile import profile_frame
from tasks.monitoring.store import BadCheckRow, CheckRow, check_rows, latest_checks, record_checks
from tasks.schema import monitoring_checks

DAY = 86_400
T0 = 1_767_571_200  # 2026-01-05T00:00:00Z


def _row(model: str, as_of: int, **changes: object) -> CheckRow:
    row = CheckRow(
        model=model,
        version=3,
        as_of=as_of,
        check="feature_drift",
        feature="watch_min",
        statistic="psi",
        value=0.05,
        threshold=0.25,
        status="ok",
        detail="12 bins",
        run_id="run-1",
        recorded_at=as_of + 60,
    )
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(monitoring_checks)).scalar_one())


def test_record_and_read_the_latest_check_per_statistic(engine: Engine) -> None:
    rows = [
        _row("churn", T0, value=0.05),
        _row("churn", T0 + DAY, value=0.31, status="drift", run_id="run-2"),
        _row("churn", T0 + DAY, statistic="wasserstein_norm", value=0.4, threshold=0.1, status="drift"),
        _row("churn", T0 + DAY, check="dataset_drift", feature=None, statistic="drift_share", value=0.5),
        _row(
            "churn",
            T0 + 2 * DAY,
            check="freshness",
            feature=None,
            statistic="age_hours",
            value=None,
            threshold=None,
            status="error",
            detail="no validated partition",
            version=None,
        ),
        _row("ad_ctr", T0, value=0.01),
    ]
    assert record_checks(engine, rows) == len(rows)
    # a later write for an earlier day does not replace the newest as_of
    assert record_checks(engine, [_row("churn", T0 - DAY, value=0.9, status="drift")]) == 1
    assert _count(engine) == 7
    latest = latest_checks(engine, "churn")
    assert {(r.check, r.feature, r.statistic) for r in latest} == {
        ("dataset_drift", None, "drift_share"),
        ("feature_drift", "watch_min", "psi"),
        ("feature_drift", "watch_min", "wasserstein_norm"),
        ("freshness", None, "age_hours"),
    }
    psi = next(r for r in latest if r.statistic == "psi")
    assert (psi.as_of, psi.value, psi.status, psi.run_id) == (T0 + DAY, 0.31, "drift", "run-2")
    assert psi.id is not None and dataclasses.replace(psi, id=None) == rows[1]
    fresh = next(r for r in latest if r.check == "freshness")
    assert fresh.value is None and fresh.threshold is None and fresh.version is None
    everyone = latest_checks(engine)
    assert {r.model for r in everyone} == {"churn", "ad_ctr"} and len(everyone) == 5
    assert latest_checks(engine, "nobody") == []


def test_same_as_of_twice_the_last_written_wins(engine: Engine) -> None:
    record_checks(engine, [_row("churn", T0, value=0.05, run_id="first")])
    record_checks(engine, [_row("churn", T0, value=0.07, run_id="second")])
    (latest,) = latest_checks(engine, "churn")
    assert latest.run_id == "second" and latest.value == 0.07


def test_drift_report_rows_round_trip(engine: Engine) -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=5_000), "c": rng.choice(["a", "b"], 5_000)})
    current = pd.DataFrame({"x": rng.normal(1.0, size=5_000)})  # x shifted, c missing
    report = compare_frame(profile_frame(reference), current)
    rows = check_rows(
        report, model="churn", version=4, as_of=T0, check="feature_drift", recorded_at=T0 + 5, run_id="r"
    )
    assert len(rows) == len(report.results) + 1
    assert record_checks(engine, rows) == len(rows)
    stored = {(r.check, r.feature, r.statistic): r for r in latest_checks(engine, "churn")}
    assert stored[("feature_drift", "x", "psi")].status == "drift"
    missing = stored[("feature_drift", "c", "missing")]
    assert missing.status == "error" and missing.value is None and missing.detail
    summary = stored[("dataset_drift", None, "drift_share")]
    assert summary.status == report.status and summary.value == report.summary.value


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"check": "vibes"}, "unknown check"),
        ({"status": "fine"}, "unknown status"),
        ({"value": float("nan")}, "value is nan"),
        ({"threshold": float("inf")}, "threshold is inf"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_stored(
    engine: Engine, change: dict[str, object], message: str
) -> None:
    with pytest.raises(BadCheckRow, match=message):
        record_checks(engine, [_row("churn", T0), _row("churn", T0 + DAY, **change)])
    assert _count(engine) == 0
    assert record_checks(engine, []) == 0
