"""The ingest-validate flow under the shared Prefect harness, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from flows.build_features import build_features
from flows.cli import main
from flows.ingest_validate import ingest_validate
from flows.models import score_model, train_model
from tasks import ingest, landing
from tasks.db import make_engine, table_checksum
from tasks.featurestore.registry import fs_registry
from tasks.models import catalog
from tasks.models.families.ad_impressions import CVR_FEATURES
from tasks.models.spec import PromotionPolicy, ValueThreshold
from tasks.pseudonym import pseudonymise_one
from tasks.quality import QualityError
from tasks.quality.report import DataQualityError
from tasks.schema import RAW_TABLES, identity_users, partition_status, quarantine, validation_runs
from tasks.settings import Settings, pseudonym_key
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation
from tasks.warehouse import upgrade_schema
from tests.data.quality_frames import good_frame
from tests.models.warehouse import START
from tests.scan import files_under, finder, found, partner_gifts, prefect_records, warehouse_tables

pytestmark = pytest.mark.usefixtures("prefect_harness")

SMALL = SimConfig(users=150, streamers=12, days=3, seed=11)
AS_OF = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
# A whole pipeline run (S4): a platform big enough to train and score ad_ctr on, and a policy
# any sane classifier passes: what flows where is under test, not this tiny model's quality.
PIPELINE = SimConfig(users=250, streamers=20, days=10, seed=5, start=START)
PIPELINE_AS_OF = dt.datetime.combine(START + dt.timedelta(days=PIPELINE.days), dt.time(), dt.UTC)
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))


@pytest.fixture
def warehouse(settings: Settings) -> Iterator[Engine]:
    """A migrated warehouse for the configured settings."""
    engine = make_engine(settings.db_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def _simulate(settings: Settings, engine: Engine, config: SimConfig = SMALL) -> dict[str, int]:
    config = dataclasses.replace(config, pseudonym_key=pseudonym_key(settings))
    return run_simulation(settings, engine, config)


def _checksums(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {name: table_checksum(conn, table) for name, table in RAW_TABLES.items()}


def test_simulated_platform_validates_and_loads(settings: Settings, warehouse: Engine) -> None:
    rows = _simulate(settings, warehouse)
    summary = ingest_validate(as_of=AS_OF)
    assert summary.rejected == 0
    raw_rows = sum(n for t, n in rows.items() if t in RAW_TABLES)
    assert summary.rows_loaded == raw_rows
    with warehouse.connect() as conn:
        statuses = conn.execute(select(partition_status.c.status).distinct()).scalars().all()
        assert statuses == ["validated"]
    assert summary.data_docs is not None and Path(summary.data_docs).exists()


def test_same_seed_gives_the_same_tables_on_every_backend(
    settings: Settings, warehouse: Engine, tmp_path: Path
) -> None:
    _simulate(settings, warehouse)
    ingest_validate(as_of=AS_OF)
    # A second platform from the same seed, into a fresh SQLite warehouse.
    reference = dataclasses.replace(
        settings, home=tmp_path / "ref", db_url=f"sqlite:///{tmp_path / 'ref.db'}"
    )
    ref_engine = make_engine(reference.db_url)
    upgrade_schema(ref_engine)
    _simulate(reference, ref_engine)
    for table in RAW_TABLES:
        ingest.ingest_table(ref_engine, reference.landing_dir, table, max_ts=int(AS_OF.timestamp()))
    assert _checksums(warehouse) == _checksums(ref_engine)
    ref_engine.dispose()


def test_no_raw_identifier_reaches_any_table_but_identity(settings: Settings, warehouse: Engine) -> None:
    """S4 (quick): raw user ids and emails of simulated users reach no raw table; the whole
    run's outputs are searched by test_s4_no_raw_identifier_in_any_output_of_a_pipeline_run."""
    _simulate(settings, warehouse)
    ingest_validate(as_of=AS_OF)
    with warehouse.connect() as conn:
        raw_ids = set(conn.execute(select(identity_users.c.user_id)).scalars())
        emails = set(conn.execute(select(identity_users.c.email)).scalars())
        signups = conn.execute(select(func.count()).select_from(RAW_TABLES["raw_users"])).scalar_one()
        assert len(raw_ids) == signups > 0  # one identity per user who signed up
        for name, table in RAW_TABLES.items():
            frame = pd.read_sql(select(table), conn)
            values = set(frame.astype(str).to_numpy().ravel())
            assert not values & raw_ids, name
            assert not values & emails, name
            assert not any("@" in v for v in values), name


@pytest.mark.slow
def test_s4_no_raw_identifier_in_any_output_of_a_pipeline_run(
    settings: Settings, warehouse: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S4: raw user ids and emails fed in (simulated users, a partner file) stay in identity_users.

    One whole run: simulate, import the partner file (two rows quarantined), validate (Data
    Docs), build ad_ctr's feature views, train and promote, score. Then every output is
    searched for every raw id and email: each warehouse table and view but identity_users
    (the feature tables the registry lists, scores, quarantine payloads, validation reports),
    every file under the home (Data Docs, MLflow artifacts, landing zone), the MLflow store,
    and the runs' Prefect parameters, states, logs and artifacts. A quarantined row is kept as
    landed, after pseudonymisation: its payload carries the user_key only.
    """
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    _simulate(settings, warehouse, PIPELINE)
    partner = partner_gifts(tmp_path / "partner_gifts.parquet")
    assert main(["import", "raw_gifts", str(partner.path)]) == 0
    ingest_validate(as_of=PIPELINE_AS_OF)
    views = sorted({ref.split(":")[0] for ref in CVR_FEATURES})
    build_features(
        start=START - dt.timedelta(days=2), end=PIPELINE_AS_OF.date(), views=views, validate_first=False
    )
    monkeypatch.setitem(
        catalog.MODELS, "ad_ctr", dataclasses.replace(catalog.MODELS["ad_ctr"], policy=LENIENT)
    )
    assert train_model("ad_ctr", as_of=PIPELINE_AS_OF, build=False).promoted
    assert score_model("ad_ctr", as_of=PIPELINE_AS_OF).rows > 0

    key = pseudonym_key(settings)
    with warehouse.connect() as conn:
        ids = pd.read_sql(select(identity_users), conn)
        signups = conn.execute(select(func.count()).select_from(RAW_TABLES["raw_users"])).scalar_one()
        feature_tables = set(conn.execute(select(fs_registry.c.feature_table)).scalars())
        payloads = [json.loads(p) for p in conn.execute(select(quarantine.c.payload)).scalars()]
    assert len(ids) == signups + len(partner.user_ids)  # every raw id fed in, and nothing else
    assert set(partner.user_ids) <= set(ids["user_id"])
    rejected_key = pseudonymise_one(partner.rejected_id, key)
    assert any(p.get("user_key") == rejected_key for p in payloads)  # the quarantine promise
    assert any("user_key" in p and p["user_key"] is None for p in payloads)  # the row without an id
    assert not any({"user_id", "email"} & set(p) for p in payloads)

    texts = warehouse_tables(warehouse, exclude=[identity_users.name])
    texts += files_under(settings.home, tmp_path / "mlflow.db") + prefect_records(since)
    names = {name for name, _ in texts}
    assert feature_tables and {f"table {t}" for t in feature_tables} <= names
    assert {"table scores", "table current_scores", "table quarantine", "table validation_runs"} <= names
    for folder in ("data_docs", "mlartifacts"):
        assert any(f"/{folder}/" in name for name in names), f"nothing searched under {folder}"
    raw = finder([*ids["user_id"], *ids["email"].dropna(), *partner.emails])
    assert found(raw, [("identity_users", ids.to_csv(index=False))])  # the search finds them
    # The partner's pseudonyms did travel downstream: the features carry them instead.
    partner_keys = finder(pseudonymise_one(u, key) for u in partner.user_ids if u != partner.rejected_id)
    assert any(name.startswith("table fs_") for name in found(partner_keys, texts))
    assert found(raw, texts) == {}


def test_rejected_batch_fails_the_flow_with_a_report(settings: Settings, warehouse: Engine) -> None:
    good = good_frame("raw_orders", n=40, days=2).drop(columns=["event_date"])
    bad = good.copy()
    bad.loc[bad.index[::2], "quantity"] = -1  # cancellations everywhere
    landing.write_batch(settings.landing_dir, "raw_orders", bad)
    with pytest.raises(DataQualityError) as caught:
        ingest_validate(as_of=AS_OF)
    report = str(caught.value)
    assert "raw_orders 2026-01-05" in report and "quantity" in report
    assert "expect_column_values_to_be_between" in report


def test_transient_db_errors_are_retried_without_duplicates(
    settings: Settings, warehouse: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R1: a feature/raw write that fails twice with an I/O error is retried and completes once."""
    landing.write_batch(
        settings.landing_dir, "raw_gifts", good_frame("raw_gifts", n=30).drop(columns=["event_date"])
    )
    calls = {"n": 0}
    real = ingest.ingest_table

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "ingest_table", flaky)
    monkeypatch.setattr("tasks.steps.ingest.ingest_table", flaky)
    summary = ingest_validate(as_of=AS_OF)
    assert calls["n"] == 3 and summary.rows_loaded == 30
    with warehouse.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RAW_TABLES["raw_gifts"])).scalar_one() == 30
        assert conn.execute(select(func.count()).select_from(validation_runs)).scalar_one() == 1


def test_data_errors_are_not_retried(settings: Settings, warehouse: Engine, tmp_path: Path) -> None:
    """D7: a broken suite fails the flow at once; the batch stays pending, never 'skipped'."""
    from tasks.quality import suites

    broken = tmp_path / "suites"
    broken.mkdir()
    (broken / "raw_gifts.json").write_text("{ not json")
    landing.write_batch(
        settings.landing_dir, "raw_gifts", good_frame("raw_gifts", n=5).drop(columns=["event_date"])
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(suites, "SUITE_DIR", broken)
        with pytest.raises(QualityError):
            ingest_validate(as_of=AS_OF)
    assert landing.pending(settings.landing_dir)  # nothing lost: still waiting
    with warehouse.connect() as conn:
        assert conn.execute(select(func.count()).select_from(validation_runs)).scalar_one() == 0


def test_database_down_fails_fast_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """R8: an unreachable database fails the flow quickly and names the database."""
    monkeypatch.setenv("LIVEYIELD_HOME", str(tmp_path))
    monkeypatch.setenv("LIVEYIELD_DB_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    from tasks.db import DatabaseUnavailable

    with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
        ingest_validate(as_of=AS_OF)


def test_sqlite_file_survives_concurrent_reader(settings: Settings, warehouse: Engine) -> None:
    if warehouse.dialect.name != "sqlite":
        pytest.skip("SQLite reader/writer concurrency")
    landing.write_batch(
        settings.landing_dir, "raw_gifts", good_frame("raw_gifts", n=50).drop(columns=["event_date"])
    )
    count = select(func.count()).select_from(RAW_TABLES["raw_gifts"])
    with warehouse.connect() as reader:
        assert reader.execute(count).scalar_one() == 0  # a read transaction stays open
        summary = ingest_validate(as_of=AS_OF)  # a WAL reader never blocks the writer
        assert reader.execute(count).scalar_one() == 0  # and keeps its snapshot
        reader.commit()
        assert reader.execute(count).scalar_one() == 50
    assert summary.rows_loaded == 50
