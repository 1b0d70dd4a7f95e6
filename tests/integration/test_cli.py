"""The liveyield command: help, one-line errors, import through the gate, features export."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from flows.build_features import last_day_before
from flows.cli import main
from flows.cli.options import parse_as_of
from tasks.db import make_engine
from tasks.pseudonym import pseudonymise_one
from tasks.schema import RAW_TABLES, identity_users, partition_status, quarantine
from tasks.settings import NO_TELEMETRY, Settings, pseudonym_key
from tasks.warehouse import upgrade_schema
from tests.conftest import SHARED_DATA
from tests.data.quality_frames import good_frame
from tests.scan import files_under, finder, found, partner_gifts, prefect_records, warehouse_tables

SUBCOMMANDS = [
    [],
    ["simulate"],
    ["import"],
    ["validate"],
    ["demo"],
    ["doctor"],
    ["features"],
    ["features", "get"],
    ["features", "describe"],
    ["train"],
    ["retrain"],
    ["models", "rollback"],
]


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: " ".join(a) or "top")
def test_every_subcommand_has_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "--users", "0"], "at least 1"),
        (["simulate", "--users", "many"], "--users"),
        (["validate", "--date", "yesterday"], "YYYY-MM-DD"),
        (["import", "raw_orders; DROP TABLE raw_orders;--", "x.csv"], "unknown raw table"),
        (["import", "raw_orders", "/nonexistent/file.csv"], "no such file"),
        (["no-such-command"], "No such command"),
        (["features", "build", "--full"], "--start and --end"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(
    args: list[str], needle: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error:") and needle in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "liveyield"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "simulate" in result.stdout


def test_importing_the_flows_sets_no_environment_variables() -> None:
    code = (
        "import os; before = dict(os.environ)\n"
        "import flows, flows.models, flows.ingest_validate, flows.build_features, flows.approval\n"
        "keys = set(before) | set(os.environ)\n"
        "print(' '.join(sorted(k for k in keys if before.get(k) != os.environ.get(k))))"
    )
    env = {k: v for k, v in os.environ.items() if k not in NO_TELEMETRY}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    changed = set(result.stdout.split())
    assert not changed & set(NO_TELEMETRY)
    assert not {k for k in changed if k.startswith(("LIVEYIELD", "PREFECT", "MLFLOW", "GX_"))}


def test_as_of_follows_one_rule_in_the_command_line_and_the_flows() -> None:
    """A date means the end of that day (UTC); a date-time is taken as UTC; features end the day before."""
    end_of_day = dt.datetime(2026, 2, 2, tzinfo=dt.UTC)
    assert parse_as_of("2026-02-01") == end_of_day
    assert parse_as_of("2026-02-01T06:30") == dt.datetime(2026, 2, 1, 6, 30, tzinfo=dt.UTC)
    assert parse_as_of("2026-02-01T06:30+02:00") == dt.datetime(2026, 2, 1, 4, 30, tzinfo=dt.UTC)
    assert last_day_before(end_of_day) == dt.date(2026, 2, 1)
    assert last_day_before(dt.datetime(2026, 2, 1, 6, 30, tzinfo=dt.UTC)) == dt.date(2026, 2, 1)
    assert abs(parse_as_of(None) - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=60)


def test_doctor_reports_each_component(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "database" in out and "mlflow" in out and "prefect" in out
    assert "FAIL" not in out


def test_doctor_fails_when_the_database_is_down(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path))
    monkeypatch.setenv(
        "LIVEYIELD_DB_URL", "postgresql+psycopg://postgres:secret@127.0.0.1:1/x?connect_timeout=2"
    )
    assert main(["doctor"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "secret" not in captured.out + captured.err


def _engine(settings: Settings) -> Engine:
    engine = make_engine(settings.db_url)
    upgrade_schema(engine)
    return engine


@pytest.mark.usefixtures("prefect_harness")
def test_corrupted_csv_is_rejected_with_one_readable_message(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV whose one day is corrupted: that partition is rejected, the others load."""
    frame = good_frame("raw_gifts", n=60, days=3).drop(columns=["event_date"])
    frame["event_ts"] = pd.to_datetime(frame["event_ts"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
    first_day = frame.index[frame["event_ts"].str.startswith("2026-01-05")]
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[first_day[:12], "amount"] = "n/a"
    path = tmp_path / "gifts.csv"
    frame.to_csv(path, index=False)

    code = main(["import", "raw_gifts", str(path)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith("error: raw_gifts 2026-01-05: rejected")
    assert "amount" in errors[0] and "expect_column_values_to_be_of_type" in errors[0]
    engine = _engine(settings)
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(select(partition_status.c.partition_date, partition_status.c.status)).all()
        )
        in_quarantine = conn.execute(select(func.count(quarantine.c.event_id.distinct()))).scalar_one()
        loaded = conn.execute(select(func.count()).select_from(RAW_TABLES["raw_gifts"])).scalar_one()
    engine.dispose()
    assert sorted(statuses.values()) == ["rejected", "validated", "validated"]
    assert in_quarantine == 20 and loaded == 40  # nothing lost


@pytest.mark.usefixtures("prefect_harness")
def test_import_pseudonymises_user_ids_and_emails(settings: Settings, tmp_path: Path) -> None:
    """S4: a partner file with raw ids and emails lands with pseudonyms only.

    Nowhere but identity_users: no other table (quarantine payloads and validation reports
    included), no file under the home (landing zone, Data Docs), no Prefect record of the
    import. A quarantined row is kept as landed, after pseudonymisation: its payload holds
    the user_key, never the raw id or the email (a row without a user id loses its email).
    """
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    partner = partner_gifts(tmp_path / "gifts.parquet")
    assert main(["import", "raw_gifts", str(partner.path)]) == 0
    engine = _engine(settings)
    with engine.connect() as conn:
        gifts = pd.read_sql(select(RAW_TABLES["raw_gifts"]), conn)
        ids = pd.read_sql(select(identity_users), conn)
        held = pd.read_sql(select(quarantine.c.column_name, quarantine.c.payload), conn)
    tables = warehouse_tables(engine, exclude=[identity_users.name])
    engine.dispose()
    key = pseudonym_key(settings)
    assert set(ids["user_id"]) == set(partner.user_ids) and len(gifts) == 58  # two rows quarantined
    assert set(gifts["user_key"]) == set(ids["user_key"]) - {pseudonymise_one(partner.rejected_id, key)}
    assert set(ids["email"]) == set(partner.emails) - {partner.orphan_email}  # an email without a user
    payloads = {row.column_name: json.loads(str(row.payload)) for row in held.itertuples()}
    assert set(payloads) == {"amount", "user_key"}
    assert payloads["amount"]["user_key"] == pseudonymise_one(partner.rejected_id, key)
    assert payloads["user_key"]["user_key"] is None
    assert not {"user_id", "email"} & (set(payloads["amount"]) | set(payloads["user_key"]))

    raw = finder([*partner.user_ids, *partner.emails])
    assert found(raw, [("identity_users", ids.to_csv(index=False))])  # the search finds them
    texts = tables + files_under(settings.home) + prefect_records(since)
    names = {name for name, _ in texts}
    assert {"table quarantine", "table validation_runs", "table raw_gifts"} <= names
    assert any("data_docs" in name for name in names), "Data Docs were not searched"
    assert found(raw, texts) == {}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.skipif(not (SHARED_DATA / "nab").exists(), reason="shared NAB data folder is absent")
def test_nab_series_import_through_mapping(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    source = SHARED_DATA / "nab" / "realKnownCause" / "nyc_taxi.csv"
    assert main(["import", "raw_traffic", str(source), "--mapping", "infra/mappings/nab_traffic.yaml"]) == 0
    engine = _engine(settings)
    with engine.connect() as conn:
        traffic = pd.read_sql(select(RAW_TABLES["raw_traffic"]), conn)
    engine.dispose()
    expected = pd.read_csv(source)
    assert len(traffic) == len(expected) and set(traffic["region"]) == {"nyc_taxi"}
    assert traffic["concurrent_viewers"].sum() == pytest.approx(expected["value"].sum())


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.skipif(
    not (SHARED_DATA / "online_retail_ii").exists(), reason="shared retail data folder is absent"
)
def test_online_retail_sample_import_quarantines_cancellations_and_guests(
    settings: Settings, tmp_path: Path
) -> None:
    """The first 20,000 lines of Online Retail II through the shipped mapping."""
    source = SHARED_DATA / "online_retail_ii" / "online_retail_ii.csv.xz"
    sample = pd.read_csv(source, nrows=20_000, dtype=str)
    path = tmp_path / "online_retail_sample.csv"
    sample.to_csv(path, index=False)
    assert main(["import", "raw_orders", str(path), "--mapping", "infra/mappings/online_retail_ii.yaml"]) == 0
    engine = _engine(settings)
    with engine.connect() as conn:
        loaded = conn.execute(select(func.count()).select_from(RAW_TABLES["raw_orders"])).scalar_one()
        reasons: dict[str, int] = dict(
            conn.execute(
                select(quarantine.c.column_name, func.count()).group_by(quarantine.c.column_name)
            ).all()
        )
    engine.dispose()
    quantity = pd.to_numeric(sample["Quantity"])
    guests = sample["Customer ID"].isna()
    assert reasons.get("user_key", 0) == int(guests.sum())
    assert reasons.get("quantity", 0) == int((quantity < 1).sum())
    bad = guests | (quantity < 1) | (pd.to_numeric(sample["Price"]) < 0)
    assert loaded == int((~bad).sum())  # every other line loads; none is lost
